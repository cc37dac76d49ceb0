"""The where-changed heat map in QGIS: the Processing output and the dialog's task both add it
styled with the transparent-to-hot ramp, right below the result layer."""
import rasterio
from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

from rsicrc.rsicrc_qgis.layers.heatmap_layer import RESULT_PROPERTY


def _remove_layers_of(*paths):
    project = QgsProject.instance()
    project.removeMapLayers([lyr.id() for lyr in project.mapLayers().values()
                             if any(lyr.source().startswith(str(p)) for p in paths)])


def _tree_position(layer):
    root = QgsProject.instance().layerTreeRoot()
    return [n.layerId() for n in root.findLayers()].index(layer.id())


def _check_pair_in_project(out, heat_path):
    layers = list(QgsProject.instance().mapLayers().values())
    results = [lyr for lyr in layers if lyr.source().startswith(str(out))]
    heats = [lyr for lyr in layers if lyr.source() == str(heat_path)]
    assert len(results) == 1 and len(heats) == 1, [lyr.source() for lyr in layers]
    result, heat = results[0], heats[0]
    assert heat.renderer().type() == "singlebandpseudocolor"
    items = heat.renderer().shader().rasterShaderFunction().colorRampItemList()
    assert items[0].color.alpha() == 0 and items[-1].color.alpha() > 200  # transparent to hot
    assert items[0].value == 0 and items[-1].value > 0
    assert heat.customProperty(RESULT_PROPERTY) == str(out)
    assert _tree_position(heat) == _tree_position(result) + 1  # just below its result layer
    return result, heat


def test_processing_writes_the_heatmap_output(plugin, worker_env, raster_pair, tmp_path):
    import processing

    out, heat = tmp_path / "changes.gpkg", tmp_path / "heat.tif"
    result = processing.run("rsicrc:captionchanges", {
        "BEFORE": str(raster_pair[0]), "AFTER": str(raster_pair[1]), "TILE_SIZE": 256, "DEVICE": 0,
        "OUTPUT": str(out), "HEATMAP": str(heat), "HEATMAP_SCALE": 4},
        context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    assert result["HEATMAP"] == str(heat)
    with rasterio.open(heat) as ds, rasterio.open(raster_pair[0]) as src:
        assert ds.crs == src.crs and (ds.width, ds.height) == (src.width // 4, src.height // 4)
        assert ds.transform.a == 4 * src.transform.a
        data = ds.read(1)
    assert (data >= 0).all() and data.max() > 0  # both tiles captioned
    from rsicrc.pipeline.layer.gpkg import read_metadata

    assert read_metadata(out)["heatmap"] == str(heat)


def test_processing_without_heatmap_writes_none(captioned):
    out, result = captioned
    assert "HEATMAP" not in result or not result["HEATMAP"]
    assert not list(out.parent.glob("*.tif"))


def test_toolbox_loads_heatmap_below_the_result(plugin, worker_env, raster_pair, tmp_path):
    import processing

    out, heat = tmp_path / "loaded.gpkg", tmp_path / "loaded.tif"
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    processing.runAndLoadResults("rsicrc:captionchanges", {
        "BEFORE": str(raster_pair[0]), "AFTER": str(raster_pair[1]), "TILE_SIZE": 256, "DEVICE": 0,
        "OUTPUT": str(out), "HEATMAP": str(heat)}, context=context, feedback=QgsProcessingFeedback())
    try:
        _check_pair_in_project(out, heat)
    finally:
        _remove_layers_of(out, heat)


def test_dialog_task_adds_heatmap_below_the_result(plugin, worker_env, raster_pair, tmp_path, wait_signal):
    from rsicrc.rsicrc_qgis.caption import job as caption_job

    out, heat = tmp_path / "dialog.gpkg", tmp_path / "dialog.tif"
    args = caption_job.caption_args({"before": str(raster_pair[0]), "after": str(raster_pair[1]),
                                     "output": str(out), "tile_size": 256, "device": "cpu",
                                     "heatmap": str(heat)})
    assert args[args.index("--heatmap") + 1] == str(heat)
    task = plugin.start_caption(args, str(out), "changes")
    layer, message, level, _ = wait_signal(task.finishedWithResult, 300)
    try:
        assert layer is not None, message
        result, _ = _check_pair_in_project(out, heat)
        assert result.id() == layer.id()
    finally:
        _remove_layers_of(out, heat)
