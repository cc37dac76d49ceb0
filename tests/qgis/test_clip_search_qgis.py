"""RS-M-CLIP search through QGIS: a layer captioned with `--clip` (a generated tiny RS-M-CLIP
folder) scored by rsicrc:searchchanges and by the dock's multilingual mode must give the very
scores the pipeline's own formula gives from the stored BLOBs; layers without RS-M-CLIP
fields give a clear message, not a crash."""
import os
import shutil
import sqlite3
import subprocess

import numpy as np
import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsProject, QgsVectorLayer

RU = "новые здания возле дороги"
ZH = "道路附近出现了新建筑"


@pytest.fixture(scope="module")
def clip_gpkg(worker_env, raster_pair, tiny_clip_folder, small_checkpoint, tmp_path_factory):
    """`rsicrc caption --clip --clip-model <generated folder>` on the 2-tile pair, made with the
    CLI (how the plugin passes --clip-model is checked in test_plugin_units.py)."""
    before, after = raster_pair
    out = tmp_path_factory.mktemp("clip-caption") / "clip.gpkg"
    proc = subprocess.run(
        [worker_env["RSICRC_PYTHON"], "-m", "rsicrc", "caption", str(before), str(after),
         "--output", str(out), "--tile-size", "256", "--model", str(small_checkpoint), "--device", "cpu",
         "--clip", "--clip-model", str(tiny_clip_folder)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _stored(gpkg):
    """(tile ids, clip_before matrix, clip_after matrix) straight from the file's BLOBs."""
    from rsicrc.pipeline.layer.blobs import blobs_to_matrix
    from rsicrc.pipeline.layer.gpkg import read_metadata

    con = sqlite3.connect(gpkg)
    try:
        rows = con.execute("SELECT tile_id, clip_before, clip_after FROM changes "
                           "ORDER BY tile_id").fetchall()
    finally:
        con.close()
    dim = read_metadata(gpkg)["clip_embedding_dim"]
    tiles = [r[0] for r in rows]
    return (tiles, blobs_to_matrix([r[1] for r in rows], dim),
            blobs_to_matrix([r[2] for r in rows], dim))


def _expected(encoder, gpkg, text, when, appeared):
    """tile_id -> the score `rsicrc search --clip` computes (clip_scores with the text tower)."""
    from rsicrc.pipeline.scores import clip_scores

    tiles, before, after = _stored(gpkg)
    direct = clip_scores(encoder, text, before, after, when=when, change=appeared)
    assert np.all(np.isfinite(direct))
    return dict(zip(tiles, map(float, direct)))


def _add_copy(gpkg, folder, name):
    copy = folder / f"{name}.gpkg"
    shutil.copy(gpkg, copy)
    layer = QgsVectorLayer(f"{copy}|layername=changes", name, "ogr")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture
def clip_layer(clip_gpkg, tmp_path):
    layer = _add_copy(clip_gpkg, tmp_path, "clip copy")
    yield layer
    QgsProject.instance().removeMapLayer(layer.id())


@pytest.fixture
def stripped_layer(clip_gpkg, tmp_path):
    """Metadata still says RS-M-CLIP, but the clip_before/clip_after fields are gone."""
    layer = _add_copy(clip_gpkg, tmp_path, "stripped")
    idx = [layer.fields().indexOf(n) for n in ("clip_before", "clip_after")]
    assert min(idx) >= 0 and layer.dataProvider().deleteAttributes(idx)
    layer.updateFields()
    assert layer.fields().indexOf("clip_before") < 0
    yield layer
    QgsProject.instance().removeMapLayer(layer.id())


def _clip_method():
    from rsicrc.rsicrc_qgis.processing.search_algorithm import METHODS

    return next(i for i, m in enumerate(METHODS) if "RS-M-CLIP" in m)


@pytest.mark.parametrize("text,when,appeared", [(RU, "after", False), (ZH, "before", False),
                                                (RU, "after", True)],
                         ids=["ru-after", "zh-before", "ru-appeared"])
def test_algorithm_clip_scores_match_pipeline(plugin, clip_layer, clip_gpkg, tiny_clip,
                                              text, when, appeared, tmp_path):
    import processing

    expected = _expected(tiny_clip, clip_gpkg, text, when, appeared)
    res = processing.run("rsicrc:searchchanges", {
        "INPUT": clip_layer, "QUERY": text, "FIELD": "cq", "TOP": 1, "METHOD": _clip_method(),
        "WHEN": ["after", "before"].index(when), "APPEARED": appeared,
        "OUTPUT": str(tmp_path / "scored.gpkg")}, feedback=QgsProcessingFeedback())
    scored = QgsVectorLayer(res["OUTPUT"], "scored", "ogr")
    got = {f["tile_id"]: f["cq"] for f in scored.getFeatures()}
    assert set(got) == set(expected) and len(got) == 2
    for tile, score in expected.items():
        assert got[tile] == pytest.approx(score, abs=1e-5)
    assert [f["tile_id"] for f in clip_layer.selectedFeatures()] == [max(expected, key=expected.get)]


def test_dock_multilingual_scores_and_selects_best(plugin, clip_layer, clip_gpkg, tiny_clip,
                                                   wait_signal):
    from rsicrc.rsicrc_qgis.search import core as search_core

    dock = plugin.dock
    dock.set_layer(clip_layer)
    clip_index = dock.method_combo.findData(search_core.MODE_CLIP)
    assert clip_index >= 0  # offered because the layer has RS-M-CLIP embeddings
    dock.method_combo.setCurrentIndex(clip_index)
    assert dock.when_combo.isEnabled() and dock.appeared_check.isEnabled()
    dock.when_combo.setCurrentText("after")
    dock.appeared_check.setChecked(True)
    dock.top_spin.setValue(1)
    dock.query_edit.setText(ZH)
    try:
        ok, message = wait_signal(dock.searchFinished, 300, trigger=dock.query_edit.returnPressed.emit)
    finally:
        dock.appeared_check.setChecked(False)
    assert ok, message
    expected = _expected(tiny_clip, clip_gpkg, ZH, "after", True)
    reopened = QgsVectorLayer(clip_layer.source(), "again", "ogr")  # committed to the file
    got = {f["tile_id"]: f["search_score"] for f in reopened.getFeatures()}
    assert set(got) == set(expected)
    for tile, score in expected.items():
        assert got[tile] == pytest.approx(score, abs=1e-5)
    best = max(expected, key=expected.get)
    assert [f["tile_id"] for f in clip_layer.selectedFeatures()] == [best]
    assert dock.results.count() == 1


def test_algorithm_layer_without_clip_is_a_clear_error(plugin, captioned, tmp_path):
    import processing

    _, result = captioned
    plain = QgsVectorLayer(result["OUTPUT"], "no clip", "ogr")
    # In the project so that it is deleted with it: an OGR layer that outlives QgsApplication
    # (the failed run keeps a reference) crashes the test process on exit.
    QgsProject.instance().addMapLayer(plain)
    try:
        with pytest.raises(QgsProcessingException, match="no RS-M-CLIP embeddings.*--clip"):
            processing.run("rsicrc:searchchanges", {
                "INPUT": plain, "QUERY": RU, "FIELD": "cq", "TOP": 1, "METHOD": _clip_method(),
                "OUTPUT": str(tmp_path / "s.gpkg")}, feedback=QgsProcessingFeedback())
    finally:
        QgsProject.instance().removeMapLayer(plain.id())
    assert not (tmp_path / "s.gpkg").exists()


def test_algorithm_layer_missing_clip_fields_is_a_clear_error(plugin, stripped_layer, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException, match='no "clip_before" field'):
        processing.run("rsicrc:searchchanges", {
            "INPUT": stripped_layer, "QUERY": ZH, "FIELD": "cq", "TOP": 1,
            "METHOD": _clip_method(), "OUTPUT": str(tmp_path / "s.gpkg")},
            feedback=QgsProcessingFeedback())


def test_dock_layer_without_clip_offers_no_multilingual_search(plugin, captioned):
    from rsicrc.rsicrc_qgis.search import core as search_core

    _, result = captioned
    plain = QgsVectorLayer(result["OUTPUT"], "no clip", "ogr")
    QgsProject.instance().addMapLayer(plain)
    try:
        plugin.dock.set_layer(plain)
        assert plugin.dock.method_combo.findData(search_core.MODE_CLIP) < 0
        assert plugin.dock.method_combo.currentData() == search_core.MODE_CAPTION
        assert not plugin.dock.when_combo.isEnabled()
        assert plugin.dock.query_edit.isEnabled()  # the caption-model search still works
    finally:
        QgsProject.instance().removeMapLayer(plain.id())


def test_dock_layer_missing_clip_fields_says_so(plugin, stripped_layer):
    from rsicrc.rsicrc_qgis.search import core as search_core

    dock = plugin.dock
    dock.set_layer(stripped_layer)
    dock.method_combo.setCurrentIndex(dock.method_combo.findData(search_core.MODE_CLIP))
    dock.query_edit.setText(RU)
    got = []

    def on_finished(*args):
        got.append(args)

    dock.searchFinished.connect(on_finished)
    try:
        dock.query_edit.returnPressed.emit()  # fails while reading the layer, before any task
    finally:
        dock.searchFinished.disconnect(on_finished)
    assert dock._task is None
    assert len(got) == 1
    ok, message = got[0]
    assert not ok
    assert "no &quot;clip_before&quot; field" in message  # html-escaped for the status label
    assert "clip_before" in dock.status_label.text()
    assert stripped_layer.fields().indexOf("search_score") < 0
