"""A time series' heat map in QGIS: one band an interval, so one raster layer an interval, in a
group right below the result layer (the "when did it change" view stays above it), the latest
interval shown; from the dialog's task and from the Processing post-processors alike."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from qgis.core import (QgsLayerTree, QgsProcessingContext, QgsProcessingFeedback, QgsProject, QgsRasterLayer,
                       QgsVectorLayer)
from rasterio.transform import from_origin

from rsicrc.rsicrc_qgis.layers.heatmap_layer import BAND_PROPERTY, RESULT_PROPERTY, place_heatmaps
from rsicrc.rsicrc_qgis.layers.styling import WHEN_PROPERTY

NAMES = ["2019.tif", "2020.tif", "2021.tif"]
TOPS = [0.5, 0.9]  # each band's maximum: a layer drawn from band b stretches to TOPS[b - 1]


def _series_gpkg(path, heatmap=None, intervals=2):
    """A caption layer of two tiles with the time-series fields (docs/interfaces.md), `intervals`
    features a tile, and its run metadata (naming `heatmap`, when given); built with OGR."""
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("changes", srs, ogr.wkbPolygon)
    fields = (("tile_id", ogr.OFTInteger), ("caption", ogr.OFTString), ("changed", ogr.OFTInteger),
              ("change_score", ogr.OFTReal), ("interval", ogr.OFTInteger), ("before_name", ogr.OFTString),
              ("after_name", ogr.OFTString), ("most_changed_interval", ogr.OFTInteger))
    for name, kind in fields:
        lyr.CreateField(ogr.FieldDefn(name, kind))
    for tile in range(2):
        x0 = 500000 + 128 * tile
        ring = f"POLYGON(({x0} 4999872,{x0 + 128} 4999872,{x0 + 128} 5000000,{x0} 5000000,{x0} 4999872))"
        for k in range(intervals):
            f = ogr.Feature(lyr.GetLayerDefn())
            f.SetGeometry(ogr.CreateGeometryFromWkt(ring))
            values = (tile, f"tile {tile} interval {k}", 1, 0.2 + 0.3 * k, k, NAMES[k], NAMES[k + 1], intervals - 1)
            for (name, _), value in zip(fields, values):
                f.SetField(name, value)
            lyr.CreateFeature(f)
    meta = {"model_source": "generated",
            "intervals": [{"interval": k, "before": NAMES[k], "after": NAMES[k + 1]} for k in range(intervals)]}
    if heatmap:
        meta["heatmap"] = str(heatmap)
    for key, value in meta.items():
        lyr.SetMetadataItem(key, json.dumps(value))
    ds = None
    return path


def _heat_tif(path, descriptions=("2019.tif -> 2020.tif", "2020.tif -> 2021.tif")):
    """A float32 heat map on the layer's area, a band per description, band b peaking at TOPS[b - 1]."""
    count = len(descriptions)
    data = np.zeros((count, 16, 32), np.float32)
    for b in range(count):
        data[b, 2 + 4 * b:6 + 4 * b, 3:9] = np.linspace(0.1, TOPS[b % len(TOPS)], 6)
    with rasterio.open(path, "w", driver="GTiff", width=32, height=16, count=count, dtype="float32",
                       crs="EPSG:32632", transform=from_origin(500000, 5000000, 8, 8), nodata=-1) as dst:
        dst.write(data)
        for b, text in enumerate(descriptions, start=1):
            if text:
                dst.set_band_description(b, text)
    return path


@pytest.fixture
def project(qgis_app, tmp_path):
    """The project, rid of this test's layers and groups afterwards."""
    project = QgsProject.instance()
    yield project
    project.removeMapLayers([lyr.id() for lyr in project.mapLayers().values()
                             if lyr.source().startswith(str(tmp_path))])
    for group in list(_groups(project.layerTreeRoot())):
        if str(group.customProperty(RESULT_PROPERTY) or "").startswith(str(tmp_path)):
            group.parent().removeChildNode(group)


def _groups(node):
    for child in node.children():
        if QgsLayerTree.isGroup(child):
            yield child
            yield from _groups(child)


def _ours(project, path):
    return [lyr for lyr in project.mapLayers().values() if lyr.source().startswith(str(path))]


def _check_series_in_project(project, gpkg, heat_path, base="Where changed"):
    """The view, the result, then the heat map's group of one layer an interval, latest shown."""
    vectors = [lyr for lyr in _ours(project, gpkg) if isinstance(lyr, QgsVectorLayer)]
    view = next(lyr for lyr in vectors if lyr.customProperty(WHEN_PROPERTY) is not None)
    (result,) = [lyr for lyr in vectors if lyr is not view]
    heats = [lyr for lyr in project.mapLayers().values() if lyr.source() == str(heat_path)]
    root = project.layerTreeRoot()
    result_node = root.findLayer(result.id())
    siblings = result_node.parent().children()
    at = siblings.index(result_node)
    assert siblings[at - 1] is root.findLayer(view.id())  # the view stays just above its result
    group = siblings[at + 1]  # and the heat map goes just below it, not between view and result
    assert QgsLayerTree.isGroup(group) and group.name() == base
    assert group.customProperty(RESULT_PROPERTY) == str(gpkg) and group.isMutuallyExclusive()
    members = [node.layer() for node in group.children()]
    assert len(members) == len(heats) == 2 and {lyr.id() for lyr in members} == {lyr.id() for lyr in heats}
    assert [lyr.name() for lyr in members] == [f"{base} — {a} → {b}" for a, b in zip(NAMES, NAMES[1:])]
    for band, (node, layer) in enumerate(zip(group.children(), members), start=1):
        renderer = layer.renderer()
        assert renderer.type() == "singlebandpseudocolor" and renderer.band() == band
        assert renderer.classificationMax() == pytest.approx(TOPS[band - 1])  # its own band's stretch
        items = renderer.shader().rasterShaderFunction().colorRampItemList()
        assert items[0].color.alpha() == 0 and items[-1].color.alpha() > 200  # transparent to hot
        assert items[-1].value == pytest.approx(TOPS[band - 1])
        assert layer.customProperty(RESULT_PROPERTY) == str(gpkg)
        assert int(layer.customProperty(BAND_PROPERTY)) == band
        assert node.itemVisibilityChecked() == (band == len(members))  # the last interval shown
    return result, view, group


def _tree(project):
    """The whole layer tree as nested (name, visible) pairs, to compare before and after."""
    def walk(node):
        return [(child.name(), child.itemVisibilityChecked(), walk(child) if QgsLayerTree.isGroup(child) else None)
                for child in node.children()]
    return walk(project.layerTreeRoot())


def _finish_task(gpkg, name="Changes"):
    """What the dialog's task does once the worker is done."""
    from rsicrc.rsicrc_qgis.caption.task import CaptionTask

    task = CaptionTask([], str(gpkg), name)
    task.result = SimpleNamespace(done={"features": 4})
    got = []
    task.finishedWithResult.connect(lambda *a: got.append(a))
    task.finished(True)
    (layer, message, _, _), = got
    assert layer is not None, message
    return task, layer


def test_dialog_task_adds_a_heatmap_layer_an_interval(plugin, project, tmp_path):
    heat = _heat_tif(tmp_path / "heat.tif")
    gpkg = _series_gpkg(tmp_path / "series.gpkg", heatmap=heat)
    task, layer = _finish_task(gpkg)
    assert not task.warnings
    result, _, _ = _check_series_in_project(project, gpkg, heat)
    assert result.id() == layer.id()
    tree = _tree(project)
    place_heatmaps(project)  # the post-processors call it again and again: nothing moves twice
    assert _tree(project) == tree


@pytest.mark.parametrize("heat_first", [True, False], ids=["heat-map-loaded-first", "result-loaded-first"])
def test_processing_post_processors_group_the_intervals_below_the_result(plugin, project, tmp_path, heat_first):
    """Processing adds each output to the project, then calls its post-processor, in its own order."""
    from rsicrc.rsicrc_qgis.processing.layer_post_processor import StyleHeatmapLayer, StyleResultLayer

    heat_path = _heat_tif(tmp_path / "heat.tif")
    gpkg = _series_gpkg(tmp_path / "series.gpkg", heatmap=heat_path)
    context = QgsProcessingContext()
    context.setProject(project)
    result = QgsVectorLayer(f"{gpkg}|layername=changes", "Changes", "ogr")
    heat = QgsRasterLayer(str(heat_path), "Where changed", "gdal")
    loads = [(heat, StyleHeatmapLayer(str(gpkg))), (result, StyleResultLayer(when_view=True))]
    for layer, post in (loads if heat_first else loads[::-1]):
        project.addMapLayer(layer)
        post.postProcessLayer(layer, context, QgsProcessingFeedback())
    got, _, _ = _check_series_in_project(project, gpkg, heat_path)
    assert got.id() == result.id()
    assert project.mapLayer(heat.id()) is heat  # the layer Processing loaded is kept: the latest interval's
    assert heat.name() == "Where changed — 2020.tif → 2021.tif"


def test_a_band_without_an_interval_description_is_named_by_number(plugin, project, tmp_path):
    heat = _heat_tif(tmp_path / "heat.tif", descriptions=("", "made by hand"))
    gpkg = _series_gpkg(tmp_path / "series.gpkg", heatmap=heat)
    _finish_task(gpkg, "Mine")
    names = [lyr.name() for lyr in project.mapLayers().values() if lyr.source() == str(heat)]
    assert sorted(names) == ["Where changed — band 1", "Where changed — made by hand"]


def test_a_one_band_heat_map_stays_one_layer(plugin, project, tmp_path):
    heat = _heat_tif(tmp_path / "heat.tif", descriptions=("attention",))
    gpkg = _series_gpkg(tmp_path / "pair.gpkg", heatmap=heat, intervals=1)
    _, result = _finish_task(gpkg)
    ours = _ours(project, tmp_path)
    (layer,) = [lyr for lyr in ours if lyr.source() == str(heat)]
    assert len(ours) == 2  # a pair: no view, no group
    root = project.layerTreeRoot()
    siblings = root.findLayer(result.id()).parent().children()
    assert siblings[siblings.index(root.findLayer(result.id())) + 1] is root.findLayer(layer.id())
    assert layer.name() == "Where changed" and layer.customProperty(BAND_PROPERTY) is None
    assert layer.renderer().band() == 1 and layer.renderer().classificationMax() == pytest.approx(TOPS[0])


def test_toolbox_loads_a_series_heat_map_as_a_group_of_intervals(plugin, worker_env, raster_pair, tmp_path,
                                                                  project):
    """End to end: three dates with --heatmap through the toolbox, on the pipeline's own GeoTIFF."""
    import processing
    from osgeo import gdal

    later = tmp_path / "d3.tif"
    gdal.Translate(str(later), str(raster_pair[1]))
    ds = gdal.Open(str(later), gdal.GA_Update)
    for b in range(1, 4):
        data = ds.GetRasterBand(b).ReadAsArray()
        data[20:120, 20:200] = 240
        ds.GetRasterBand(b).WriteArray(data)
    ds = None
    out, heat = tmp_path / "three.gpkg", tmp_path / "three.tif"
    context = QgsProcessingContext()
    context.setProject(project)
    processing.runAndLoadResults("rsicrc:captionchanges", {
        "BEFORE": str(raster_pair[0]), "AFTER": str(raster_pair[1]), "LATER": [str(later)], "TILE_SIZE": 256,
        "DEVICE": 1, "OUTPUT": str(out), "HEATMAP": str(heat)}, context=context, feedback=QgsProcessingFeedback())
    with rasterio.open(heat) as ds:
        assert ds.descriptions == ("before.tif -> after.tif", "after.tif -> d3.tif")
        tops = [float(ds.read(b, masked=True).max()) for b in (1, 2)]
    group = next(g for g in _groups(project.layerTreeRoot()) if g.customProperty(RESULT_PROPERTY) == str(out))
    members = [node.layer() for node in group.children()]
    assert [lyr.name() for lyr in members] == ["Where changed — before.tif → after.tif",
                                               "Where changed — after.tif → d3.tif"]
    assert [lyr.renderer().band() for lyr in members] == [1, 2]
    assert [lyr.renderer().classificationMax() for lyr in members] == pytest.approx(tops, rel=1e-5)
    assert [node.itemVisibilityChecked() for node in group.children()] == [False, True]
    (result,) = [lyr for lyr in _ours(project, out) if lyr.customProperty(WHEN_PROPERTY) is None]
    node = project.layerTreeRoot().findLayer(result.id())
    siblings = node.parent().children()
    assert siblings[siblings.index(node) + 1] is group
    assert siblings[siblings.index(node) - 1].layer().customProperty(WHEN_PROPERTY) is not None
