"""The search dock: Enter scores every tile from stored embeddings, writes the field through
the edit buffer, selects the best and reports unknown words."""
import shutil

import pytest
from qgis.core import NULL, QgsProject, QgsVectorLayer


@pytest.fixture
def result_copy(captioned, tmp_path):
    out, _ = captioned
    copy = tmp_path / "copy.gpkg"
    shutil.copy(out, copy)
    layer = QgsVectorLayer(f"{copy}|layername=changes", "changes copy", "ogr")
    QgsProject.instance().addMapLayer(layer)
    yield layer
    QgsProject.instance().removeMapLayer(layer.id())


def _search(plugin, layer, text, wait_signal, top=1):
    dock = plugin.dock
    dock.set_layer(layer)
    dock.top_spin.setValue(top)
    dock.query_edit.setText(text)
    return wait_signal(dock.searchFinished, 300, trigger=dock.query_edit.returnPressed.emit)


def test_dock_scores_selects_and_reports_unknown_words(plugin, worker_env, result_copy,
                                                       wait_signal):
    layer = result_copy
    ok, message = _search(plugin, layer, "a new building zzyzxq", wait_signal, top=1)
    assert ok, message
    assert "zzyzxq" in plugin.dock.status_label.text()  # reported under the box
    field = "search_score"
    assert layer.fields().indexOf(field) >= 0
    assert not layer.isEditable()  # committed: the file has the field too
    reopened = QgsVectorLayer(layer.source(), "again", "ogr")
    scores = {f["tile_id"]: f[field] for f in reopened.getFeatures()}
    assert len(scores) == 2 and all(isinstance(v, float) for v in scores.values())
    best = max(scores, key=scores.get)
    assert [f["tile_id"] for f in layer.selectedFeatures()] == [best]
    assert plugin.dock.results.count() == 1
    assert layer.attributeTableConfig().sortExpression() == f'"{field}"'


def test_dock_scores_match_cli_query_scores(plugin, worker_env, result_copy, wait_signal):
    layer = result_copy
    ok, message = _search(plugin, layer, "road", wait_signal, top=2)
    assert ok, message
    for f in layer.getFeatures():
        assert f["search_score"] == pytest.approx(f["q_road"], abs=1e-5)
    assert len(layer.selectedFeatureIds()) == 2


def test_dock_keeps_edits_pending_when_user_is_editing(plugin, worker_env, result_copy,
                                                       wait_signal):
    layer = result_copy
    assert layer.startEditing()
    steps = layer.undoStack().count()
    ok, message = _search(plugin, layer, "road", wait_signal)
    assert ok, message
    assert layer.isEditable() and layer.isModified()  # left in the edit buffer, undoable
    assert layer.undoStack().count() == steps + 1  # the new field and every score: one step
    assert all(isinstance(f["search_score"], float) for f in layer.getFeatures())
    layer.undoStack().undo()
    assert layer.fields().indexOf("search_score") < 0 and not layer.isModified()
    layer.rollBack()
    assert layer.fields().indexOf("search_score") < 0


def test_dock_rejects_plain_layer(plugin, tmp_path):
    plain = QgsVectorLayer("Polygon?crs=EPSG:4326&field=name:string", "plain", "memory")
    QgsProject.instance().addMapLayer(plain)
    try:
        plugin.dock.set_layer(plain)
        assert not plugin.dock.query_edit.isEnabled()
        assert "not a GeoPackage written by rsicrc" in plugin.dock.status_label.text()
    finally:
        QgsProject.instance().removeMapLayer(plain.id())


def test_dock_skips_missing_embeddings_and_refuses_damaged_ones(plugin, worker_env, captioned, tmp_path,
                                                                wait_signal):
    """As `rsicrc search`: a NULL embedding gets no score; a BLOB of the wrong length is named."""
    from osgeo import ogr

    out, _ = captioned
    for damage, expect_ok in (("null", True), ("short", False)):
        copy = tmp_path / f"{damage}.gpkg"
        shutil.copy(out, copy)
        ds = ogr.Open(str(copy), 1)
        lyr = ds.GetLayerByName("changes")
        feature = lyr.GetNextFeature()
        if damage == "null":
            feature.SetFieldNull("embedding")
        else:
            feature.SetFieldBinaryFromHexString("embedding", "010203")
        assert lyr.SetFeature(feature) == 0
        damaged_fid = feature.GetFID()
        ds = None
        layer = QgsVectorLayer(f"{copy}|layername=changes", damage, "ogr")
        QgsProject.instance().addMapLayer(layer)
        try:
            ok, message = _search(plugin, layer, "road", wait_signal)
            assert ok == expect_ok, message
            if expect_ok:
                assert "1 tiles have no embedding" in message
                scores = {f.id(): f["search_score"] for f in QgsVectorLayer(layer.source(), "r", "ogr").getFeatures()}
                assert scores[damaged_fid] is None or scores[damaged_fid] == NULL
                assert all(isinstance(v, float) for k, v in scores.items() if k != damaged_fid)
            else:
                assert f"feature {damaged_fid} has 3 bytes" in message and "another model" in message
        finally:
            QgsProject.instance().removeMapLayer(layer.id())
