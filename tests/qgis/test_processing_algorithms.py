"""Both algorithms end to end through processing.run, with the generated checkpoint."""
import pytest
from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback, QgsProject, QgsVectorLayer


def test_caption_writes_styled_ready_geopackage(captioned, raster_pair):
    out, result = captioned
    assert result["OUTPUT"] == f"{out}|layername=changes"
    assert result["FEATURES"] == 2 and result["SKIPPED"] == 0
    layer = QgsVectorLayer(result["OUTPUT"], "changes", "ogr")
    assert layer.isValid() and layer.featureCount() == 2
    names = set(layer.fields().names())
    assert {"tile_id", "caption", "changed", "change_score", "embedding", "q_a_new_building",
            "q_road"} <= names
    for f in layer.getFeatures():
        assert isinstance(f["caption"], str) and f["caption"]
        assert 0.0 <= f["change_score"] <= 1.0
    from rsicrc.pipeline.layer.gpkg import list_layers, read_metadata

    assert read_metadata(out)["complete"] is True
    assert list_layers(out) == ["changes"]  # QGIS asks nothing: the metadata is not a layer


def test_caption_loads_and_styles_output_in_project(plugin, worker_env, raster_pair, tmp_path):
    """What the toolbox does: the output is loaded on completion with the result style."""
    import processing

    before, after = raster_pair
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    out = tmp_path / "loaded.gpkg"
    processing.runAndLoadResults("rsicrc:captionchanges", {
        "BEFORE": str(before), "AFTER": str(after), "TILE_SIZE": 256, "DEVICE": 0,
        "OUTPUT": str(out)}, context=context, feedback=QgsProcessingFeedback())
    loaded = [lyr for lyr in QgsProject.instance().mapLayers().values()
              if lyr.source().startswith(str(out))]
    try:
        assert len(loaded) == 1
        layer = loaded[0]
        assert layer.source().endswith("layername=changes")
        assert layer.renderer().type() == "graduatedSymbol"
        assert layer.renderer().classAttribute() == "change_score"
        assert "caption" in layer.mapTipTemplate() and layer.labelsEnabled()
    finally:
        QgsProject.instance().removeMapLayers([lyr.id() for lyr in loaded])


def test_caption_bad_band_choice_is_a_clear_error(plugin, worker_env, raster_pair, tmp_path):
    import processing

    before, after = raster_pair
    with pytest.raises(QgsProcessingException, match="Bands"):
        processing.run("rsicrc:captionchanges", {
            "BEFORE": str(before), "AFTER": str(after), "BANDS": "1,2", "DEVICE": 0,
            "OUTPUT": str(tmp_path / "x.gpkg")}, feedback=QgsProcessingFeedback())


def test_caption_child_error_reaches_feedback(plugin, worker_env, raster_pair, tmp_path):
    """The CLI's own check (band 9 of 3) comes back as the algorithm's error message."""
    import processing

    before, after = raster_pair
    with pytest.raises(QgsProcessingException, match="band"):
        processing.run("rsicrc:captionchanges", {
            "BEFORE": str(before), "AFTER": str(after), "BANDS": "9,2,1", "DEVICE": 0,
            "OUTPUT": str(tmp_path / "x.gpkg")}, feedback=QgsProcessingFeedback())
    assert not (tmp_path / "x.gpkg").exists()


def test_search_scores_selects_and_outputs(captioned, tmp_path):
    import processing

    out, result = captioned
    layer = QgsVectorLayer(result["OUTPUT"], "changes", "ogr")
    QgsProject.instance().addMapLayer(layer)
    try:
        feedback = QgsProcessingFeedback()
        res = processing.run("rsicrc:searchchanges", {
            "INPUT": layer, "QUERY": "a new building", "FIELD": "bld", "TOP": 1,
            "OUTPUT": str(tmp_path / "scored.gpkg")}, feedback=feedback)
        scored = QgsVectorLayer(res["OUTPUT"], "scored", "ogr")
        assert scored.isValid() and scored.featureCount() == 2
        by_tile = {f["tile_id"]: f["bld"] for f in scored.getFeatures()}
        # The same scores `rsicrc caption --query` stored for the same text and model.
        stored = {f["tile_id"]: f["q_a_new_building"] for f in layer.getFeatures()}
        for tile, score in by_tile.items():
            assert score == pytest.approx(stored[tile], abs=1e-5)
        best_tile = max(by_tile, key=by_tile.get)
        assert [f["tile_id"] for f in layer.selectedFeatures()] == [best_tile]
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_search_non_result_layer_is_a_clear_error(plugin, worker_env, tmp_path):
    import processing

    plain = QgsVectorLayer("Polygon?crs=EPSG:4326&field=name:string", "plain", "memory")
    with pytest.raises(QgsProcessingException, match="not a GeoPackage written by rsicrc"):
        processing.run("rsicrc:searchchanges", {"INPUT": plain, "QUERY": "road", "FIELD": "s",
                                                "TOP": 3, "OUTPUT": str(tmp_path / "s.gpkg")},
                       feedback=QgsProcessingFeedback())


def test_train_model_runs_in_the_worker_and_writes_a_model_folder(plugin, worker_env, tmp_path):
    """rsicrc:trainmodel: `rsicrc train` in the worker, its output a model folder the caption run loads."""
    import json
    import sys
    from pathlib import Path

    import processing

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
    from levir_cc_dataset import write_training_set

    annotations, images = write_training_set(str(tmp_path))
    out = tmp_path / "my-model"
    feedback = QgsProcessingFeedback()
    result = processing.run("rsicrc:trainmodel", {
        "ANNOTATIONS": annotations, "IMAGES": images, "DEVICE": 0, "EPOCHS": 2, "BATCH_SIZE": 8,
        "FREEZE_BACKBONE": True, "FREEZE_ENCODER": False, "OUTPUT": str(out)}, feedback=feedback)
    assert result["OUTPUT"] == str(out)
    record = json.loads((out / "training.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert record["settings"]["batch_size"] == 8 and record["started_from"] == worker_env["RSICRC_MODEL"]
    assert feedback.progress() == 100


def test_train_model_bad_data_is_the_clis_one_line(plugin, worker_env, tmp_path):
    import processing

    (tmp_path / "images").mkdir()
    (tmp_path / "a.json").write_text('{"images": []}')
    with pytest.raises(QgsProcessingException, match="holds no pairs of split 'train'"):
        processing.run("rsicrc:trainmodel", {"ANNOTATIONS": str(tmp_path / "a.json"), "IMAGES": str(tmp_path / "images"),
                                             "DEVICE": 0, "OUTPUT": str(tmp_path / "m")},
                       feedback=QgsProcessingFeedback())
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()
