"""A time series in QGIS (`rsicrc caption D1 D2 D3 ...`): the dialog's later dates, their checks,
the LATER parameter of rsicrc:captionchanges (processing.run and qgis_process), and the
"when did it change" view a result of several intervals gets."""
import html
import json
import os
import shutil
import stat
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtWidgets import QDialogButtonBox

from rsicrc.pipeline import caption_params as cp
from rsicrc.pipeline.cli import build_parser

# Debian's `qgis_process` wrapper passes an option its binary rejects; the binary works.
QGIS_PROCESS = shutil.which("qgis_process.bin") or shutil.which("qgis_process")
# (tile_id, {interval: change_score}) of the GeoPackages built here; a tile's most changed
# interval is the argmax of its scores.
SCORES = {0: [0.1, 0.8, 0.3], 1: [0.9, 0.2, 0.4]}
NAMES = ["2019.tif", "2020.tif", "2021.tif", "2022.tif"]


def _parsed(argv):
    return cp.from_args(build_parser().parse_args(argv)).check()


def _write_like(path, template, change=None, bands=None, srs=None):
    """A copy of raster `template`; change: (rows, cols, value) painted in; bands: keep only these;
    srs: warped into this CRS."""
    from osgeo import gdal

    if srs:
        gdal.Warp(str(path), str(template), dstSRS=srs)
    else:
        gdal.Translate(str(path), str(template), bandList=bands)
    if change is not None:
        ds = gdal.Open(str(path), gdal.GA_Update)
        rows, cols, value = change
        for b in range(1, ds.RasterCount + 1):
            data = ds.GetRasterBand(b).ReadAsArray()
            data[rows, cols] = value
            ds.GetRasterBand(b).WriteArray(data)
        ds = None
    return path


@pytest.fixture(scope="module")
def series(raster_pair, tmp_path_factory):
    """Two later dates on the pair's grid (each with something new), and three bad ones."""
    folder = tmp_path_factory.mktemp("series")
    after = raster_pair[1]
    d3 = _write_like(folder / "d3.tif", after, (slice(20, 120), slice(20, 200), 240))
    d4 = _write_like(d3.with_name("d4.tif"), d3, (slice(150, 250), slice(300, 500), 30))
    return {"d3": d3, "d4": d4,
            "gray": _write_like(folder / "gray.tif", after, bands=[1]),
            "moved": _write_like(folder / "moved.tif", after, srs="EPSG:32633")}


@pytest.fixture
def layers(raster_pair, series):
    """{name: layer} in the project for the dialog: before, after and the series' rasters."""
    made = {"before": QgsRasterLayer(str(raster_pair[0]), "before"),
            "after": QgsRasterLayer(str(raster_pair[1]), "after"),
            **{name: QgsRasterLayer(str(path), name) for name, path in series.items()}}
    ids = [lyr.id() for lyr in made.values()]
    QgsProject.instance().addMapLayers(list(made.values()))
    yield made
    QgsProject.instance().removeMapLayers([i for i in ids if QgsProject.instance().mapLayer(i) is not None])


def _open_dialog(plugin, layers, tmp_path):
    dialog = plugin.open_caption_dialog()
    dialog.runRequested.disconnect()
    dialog.before_combo.setLayer(layers["before"])
    dialog.after_combo.setLayer(layers["after"])
    dialog.output_widget.setFilePath(str(tmp_path / "series.gpkg"))
    return dialog


def _listed(dialog):
    return [dialog.later_list.item(r).text() for r in range(dialog.later_list.count())]


# --- the dialog -------------------------------------------------------------------------------------

def test_dialog_later_dates_add_reorder_remove_and_pass_in_order(plugin, layers, raster_pair, series, tmp_path):
    dialog = _open_dialog(plugin, layers, tmp_path)
    try:
        assert dialog.later_list.count() == 0 and not dialog.add_later_button.isEnabled()
        args, _ = dialog.build_args()
        assert _parsed(args).later == []  # two dates: today's run
        for name in ("d3", "d4"):
            dialog.later_combo.setLayer(layers[name])
            dialog.add_later_button.click()
        assert _listed(dialog) == ["d3", "d4"]
        assert "2 tile(s) of 256 px, 3 intervals each" in dialog.checks_label.text()
        dialog.later_list.setCurrentRow(1)
        assert not dialog.down_later_button.isEnabled()
        dialog.up_later_button.click()  # d4 before d3
        assert _listed(dialog) == ["d4", "d3"] and dialog.later_list.currentRow() == 0
        assert not dialog.up_later_button.isEnabled()
        args, output = dialog.build_args()
        params = _parsed(args)
        assert params.dates == [str(raster_pair[0]), str(raster_pair[1]), str(series["d4"]), str(series["d3"])]
        # The command line is the one to_argv writes for those dates.
        expected = cp.to_argv({"before": params.before, "after": params.after, "later": params.later,
                               "output": output})
        assert args[:6] == expected[:6] == ["caption", *params.dates, "--output"]
        dialog.down_later_button.click()
        assert _listed(dialog) == ["d3", "d4"]
        dialog.later_list.setCurrentRow(0)
        dialog.remove_later_button.click()
        assert _listed(dialog) == ["d4"]
        requested = []
        dialog.runRequested.connect(lambda *a: requested.append(a))
        dialog.buttons.button(QDialogButtonBox.Ok).click()
        (args, _, name, _), = requested
        assert _parsed(args).later == [str(series["d4"])]
        assert name == "Changes before → after → d4"
    finally:
        dialog.close()


def test_dialog_drops_a_later_date_removed_from_the_project(plugin, layers, tmp_path):
    dialog = _open_dialog(plugin, layers, tmp_path)
    try:
        for name in ("d3", "d4"):
            dialog.add_later(layers[name])
        QgsProject.instance().removeMapLayer(layers["d3"].id())
        assert _listed(dialog) == ["d4"]
        assert [lyr.name() for lyr in dialog.later_layers()] == ["d4"]
    finally:
        dialog.close()


@pytest.mark.parametrize("bad,says", [
    ("moved", 'CRS differ (BEFORE EPSG:32632, Date 3 "moved" EPSG:32633)'),
    ("gray", 'Date 3 "gray" has 1 non-alpha band(s)'),
])
def test_dialog_check_failing_on_the_third_date_names_it(plugin, layers, tmp_path, bad, says):
    dialog = _open_dialog(plugin, layers, tmp_path)
    run_button = dialog.buttons.button(QDialogButtonBox.Ok)
    try:
        assert run_button.isEnabled()
        dialog.add_later(layers[bad])
        assert says in html.unescape(dialog.checks_label.text()) and not run_button.isEnabled()
        dialog.remove_later()
        assert run_button.isEnabled()
    finally:
        dialog.close()


def test_series_checks_name_the_date_at_fault(raster_pair, series):
    from rsicrc.rsicrc_qgis.caption import pair_checks

    before, after = (QgsRasterLayer(str(p), p.stem) for p in raster_pair)
    d3, d4, moved = (QgsRasterLayer(str(series[n]), n) for n in ("d3", "d4", "moved"))
    checks = pair_checks.check_dates([before, after, d3, d4])
    assert not pair_checks.blocking(checks) and "3 intervals each" in checks[-1].text
    # The fourth date is checked against BEFORE, as the pipeline checks every date against the first.
    checks = pair_checks.check_dates([before, after, d3, moved])
    assert pair_checks.blocking(checks)
    assert [c.text for c in checks if c.level == pair_checks.ERROR] == [
        'CRS differ (BEFORE EPSG:32632, Date 4 "moved" EPSG:32633): turn on reprojection of Date 4 "moved" '
        "onto BEFORE's grid."]
    reprojected = pair_checks.check_dates([before, after, d3, moved], reproject=True)
    assert not pair_checks.blocking(reprojected)
    again = QgsRasterLayer(str(series["d3"]), "d3 again")
    repeated = pair_checks.check_dates([before, after, d3, again])
    assert pair_checks.blocking(repeated) and 'Date 4 "d3 again" is the same file' in repeated[-1].text
    # A pair keeps its own messages.
    assert pair_checks.check_pair(before, after)[-1].text == pair_checks.check_dates([before, after])[-1].text


# --- Processing ---------------------------------------------------------------------------------------

def _algorithm():
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().algorithmById("rsicrc:captionchanges")


def test_processing_offers_later_rasters_oldest_first(plugin):
    from qgis.core import QgsProcessing, QgsProcessingParameterDefinition

    param = _algorithm().parameterDefinition("LATER")
    assert param is not None and param.type() == "multilayer"
    assert param.layerType() == QgsProcessing.TypeRaster
    assert param.flags() & QgsProcessingParameterDefinition.FlagOptional
    assert "oldest first" in param.description() and "oldest first" in param.help()
    assert "oldest first" in _algorithm().shortHelpString()


def test_processing_turns_later_into_the_command_in_order(plugin, raster_pair, series, tmp_path, monkeypatch):
    """processing.run with LATER: the worker gets to_argv's command line, the dates in order."""
    import processing

    from rsicrc.rsicrc_qgis.caption import job as caption_job

    asked = []
    monkeypatch.setattr(caption_job, "run_caption_job", lambda args, **kw: asked.append(args) or
                        SimpleNamespace(done={"features": 4, "skipped": 0}))
    out = tmp_path / "o.gpkg"
    later = [str(series["d4"]), str(series["d3"])]
    result = processing.run("rsicrc:captionchanges", {
        "BEFORE": str(raster_pair[0]), "AFTER": str(raster_pair[1]), "LATER": later, "TILE_SIZE": 256,
        "DEVICE": 1, "OUTPUT": str(out)}, context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    (args,) = asked
    assert result["FEATURES"] == 4
    expected = cp.to_argv({"before": str(raster_pair[0]), "after": str(raster_pair[1]), "later": later,
                           "output": str(out)})
    assert args[:7] == expected[:7] == ["caption", str(raster_pair[0]), str(raster_pair[1]), *later,
                                        "--output", str(out)]
    assert _parsed(args).later == later and _parsed(args).device == "cpu"
    asked.clear()
    processing.run("rsicrc:captionchanges", {
        "BEFORE": str(raster_pair[0]), "AFTER": str(raster_pair[1]), "DEVICE": 1, "OUTPUT": str(out)},
        context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    assert _parsed(asked[0]).later == []


def test_processing_later_layer_that_cannot_be_opened_is_named(plugin, raster_pair, series, tmp_path):
    from rsicrc.rsicrc_qgis.caption import job as caption_job

    alg, context = _algorithm(), QgsProcessingContext()  # the context owns the layers it opens
    with pytest.raises(caption_job.BadParameter, match=r"Date 4 \(LATER\): .*nope.tif"):
        alg.later_layers({"LATER": [str(series["d3"]), str(tmp_path / "nope.tif")]}, context)
    assert [lyr.source() for lyr in alg.later_layers({"LATER": str(series["d3"])}, context)] == [str(series["d3"])]


@pytest.fixture(scope="module")
def qp_env(plugin_parent, worker_env, tmp_path_factory):
    """The environment tests/qgis/test_qgis_process.py runs qgis_process in."""
    if QGIS_PROCESS is None:
        pytest.skip("qgis_process is not installed")
    env = dict(os.environ, QGIS_PLUGINPATH=str(plugin_parent), QT_QPA_PLATFORM="offscreen",
               QGIS_CUSTOM_CONFIG_PATH=str(tmp_path_factory.mktemp("qgis-profile")), **worker_env)
    env.pop("PYTHONPATH", None)
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "rsicrc"], env=env, check=True,
                   capture_output=True, text=True, timeout=120)
    return env


def test_qgis_process_passes_repeated_later_in_order(qp_env, raster_pair, series, tmp_path):
    """qgis_process takes LATER=... once per date; a stand-in interpreter records the command."""
    record = tmp_path / "argv.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\nexit 3\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    proc = subprocess.run([QGIS_PROCESS, "run", "rsicrc:captionchanges", "--", f"BEFORE={raster_pair[0]}",
                           f"AFTER={raster_pair[1]}", f"LATER={series['d4']}", f"LATER={series['d3']}",
                           f"OUTPUT={tmp_path / 'qp.gpkg'}"], env=dict(qp_env, RSICRC_PYTHON=str(fake)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr  # the stand-in does no work
    argv = record.read_text().splitlines()
    assert argv[argv.index("caption"):][:6] == ["caption", str(raster_pair[0]), str(raster_pair[1]),
                                                str(series["d4"]), str(series["d3"]), "--output"]


# --- the "when did it change" view --------------------------------------------------------------------

def _series_gpkg(path, intervals=3, metadata=True):
    """A caption layer with the time-series fields (docs/interfaces.md): two tiles, `intervals`
    features each, built directly with OGR."""
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("changes", srs, ogr.wkbPolygon)
    for name, kind in (("tile_id", ogr.OFTInteger), ("caption", ogr.OFTString), ("changed", ogr.OFTInteger),
                       ("change_score", ogr.OFTReal), ("interval", ogr.OFTInteger), ("before_name", ogr.OFTString),
                       ("after_name", ogr.OFTString), ("most_changed_interval", ogr.OFTInteger)):
        lyr.CreateField(ogr.FieldDefn(name, kind))
    for tile, scores in SCORES.items():
        scores = scores[:intervals]
        most = int(np.argmax(scores))
        x0 = 500000 + 128 * tile
        ring = f"POLYGON(({x0} 4999872,{x0 + 128} 4999872,{x0 + 128} 5000000,{x0} 5000000,{x0} 4999872))"
        for interval, score in enumerate(scores):
            f = ogr.Feature(lyr.GetLayerDefn())
            f.SetGeometry(ogr.CreateGeometryFromWkt(ring))
            for key, value in (("tile_id", tile), ("caption", f"tile {tile} interval {interval}"),
                               ("changed", 1), ("change_score", score), ("interval", interval),
                               ("before_name", NAMES[interval]), ("after_name", NAMES[interval + 1]),
                               ("most_changed_interval", most)):
                f.SetField(key, value)
            lyr.CreateFeature(f)
    if metadata:
        items = {"model_source": "generated", "intervals": [
            {"interval": i, "before": NAMES[i], "after": NAMES[i + 1]} for i in range(intervals)]}
        for key, value in items.items():
            lyr.SetMetadataItem(key, json.dumps(value))
    ds = None
    return path


@pytest.mark.parametrize("metadata", [True, False], ids=["from-metadata", "from-features"])
def test_when_did_it_change_view_of_three_intervals(qgis_app, tmp_path, metadata):
    from rsicrc.rsicrc_qgis.layers import styling

    path = _series_gpkg(tmp_path / "series.gpkg", metadata=metadata)
    layer = QgsVectorLayer(f"{path}|layername=changes", "Changes", "ogr")
    assert styling.style_result_layer(layer)
    view = styling.when_changed_layer(layer)
    assert view is not None and view.isValid()
    assert view.name() == "Changes — when did it change"
    assert view.subsetString() == '"interval" = "most_changed_interval"'
    renderer = view.renderer()
    assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "most_changed_interval"
    assert [c.value() for c in renderer.categories()] == [0, 1, 2]
    assert [c.label() for c in renderer.categories()] == ["2019.tif → 2020.tif", "2020.tif → 2021.tif",
                                                          "2021.tif → 2022.tif"]
    assert len({c.symbol().color().name() for c in renderer.categories()}) == 3
    # One polygon a tile: the feature of its most changed interval (the argmax of its scores).
    got = {f["tile_id"]: f["interval"] for f in view.getFeatures()}
    assert got == {tile: int(np.argmax(scores)) for tile, scores in SCORES.items()}
    # The main layer keeps today's style.
    assert layer.renderer().type() == "graduatedSymbol" and layer.subsetString() == ""
    assert layer.featureCount() == 6


def test_one_interval_gets_no_view(qgis_app, tmp_path):
    from rsicrc.rsicrc_qgis.layers import styling

    path = _series_gpkg(tmp_path / "pair.gpkg", intervals=1)
    layer = QgsVectorLayer(f"{path}|layername=changes", "Changes", "ogr")
    assert styling.when_changed_layer(layer) is None
    project = QgsProject.instance()
    project.addMapLayer(layer)
    try:
        before = set(project.mapLayers())
        assert styling.add_when_changed_view(layer) is None and set(project.mapLayers()) == before
    finally:
        project.removeMapLayer(layer.id())


def test_dialog_task_adds_the_view_above_its_result(plugin, tmp_path):
    """What the dialog's task does once the worker is done: the result, and above it the view."""
    from rsicrc.rsicrc_qgis.caption.task import CaptionTask

    path = _series_gpkg(tmp_path / "task.gpkg", intervals=2)
    task = CaptionTask([], str(path), "Changes 2019 → 2021")
    task.result = SimpleNamespace(done={"features": 4})
    got = []
    task.finishedWithResult.connect(lambda *a: got.append(a))
    project = QgsProject.instance()
    task.finished(True)
    (layer, _, _, _), = got
    ours = [lyr for lyr in project.mapLayers().values() if lyr.source().startswith(str(path))]
    try:
        assert len(ours) == 2
        view = next(lyr for lyr in ours if lyr is not layer)
        assert view.name() == "Changes 2019 → 2021 — when did it change"
        assert [c.label() for c in view.renderer().categories()] == ["2019.tif → 2020.tif", "2020.tif → 2021.tif"]
        order = [n.layerId() for n in project.layerTreeRoot().findLayers()]
        assert order.index(view.id()) == order.index(layer.id()) - 1
    finally:
        project.removeMapLayers([lyr.id() for lyr in ours])


# --- end to end (needs the pipeline's time series) ----------------------------------------------------

def test_toolbox_captions_three_dates_with_the_when_view(plugin, worker_env, raster_pair, series, tmp_path):
    import processing

    from rsicrc.rsicrc_qgis.layers.result_layer import read_result_metadata as read_metadata

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    out = tmp_path / "three.gpkg"
    result = processing.runAndLoadResults("rsicrc:captionchanges", {
        "BEFORE": str(raster_pair[0]), "AFTER": str(raster_pair[1]), "LATER": [str(series["d3"])],
        "TILE_SIZE": 256, "DEVICE": 1, "OUTPUT": str(out)}, context=context, feedback=QgsProcessingFeedback())
    project = QgsProject.instance()
    loaded = [lyr for lyr in project.mapLayers().values() if lyr.source().startswith(str(out))]
    try:
        assert result["FEATURES"] == 4  # two tiles, two intervals
        assert [(i["before"], i["after"]) for i in read_metadata(out)["intervals"]] == \
            [("before.tif", "after.tif"), ("after.tif", "d3.tif")]
        assert len(loaded) == 2
        view = next(lyr for lyr in loaded if lyr.subsetString())
        main = next(lyr for lyr in loaded if lyr is not view)
        assert main.renderer().type() == "graduatedSymbol" and main.featureCount() == 4
        assert view.name().endswith(" — when did it change") and view.featureCount() == 2
        assert [c.label() for c in view.renderer().categories()] == ["before.tif → after.tif", "after.tif → d3.tif"]
        for f in view.getFeatures():
            scores = {g["interval"]: g["change_score"] for g in main.getFeatures()
                      if g["tile_id"] == f["tile_id"]}
            assert f["interval"] == f["most_changed_interval"] == max(scores, key=scores.get)
    finally:
        project.removeMapLayers([lyr.id() for lyr in loaded])
