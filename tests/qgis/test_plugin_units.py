"""Small pieces of the plugin: protocol parsing, settings overrides, CLIP scoring, styling,
pair checks, packaging-relevant metadata, torch-freedom."""
import configparser
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsRasterLayer, QgsSettings, QgsVectorLayer

REPO = Path(__file__).resolve().parents[2]


def test_protocol_lines():
    from rsicrc.rsicrc_qgis.worker import protocol

    assert protocol.parse_line('{"event": "progress", "done": 3, "total": 4}\n')["done"] == 3
    assert protocol.parse_line("Downloading weights 10%") is None
    assert protocol.parse_line('{"event": "nonsense"}') is None
    assert protocol.parse_line('{"event": "done", "output": "x"') is None  # cut short
    assert protocol.progress_percent({"event": "progress", "done": 1, "total": 4}) == 25.0
    assert protocol.progress_percent({"event": "start", "total": 4}) == 0.0
    assert protocol.progress_percent({"event": "progress", "done": 1, "total": 0}) is None


def test_environment_variables_override_settings(monkeypatch, tmp_path):
    from rsicrc.rsicrc_qgis import settings

    QgsSettings().setValue("rsicrc/python", "/stored/python")
    QgsSettings().setValue("rsicrc/model", "stored/model")
    try:
        monkeypatch.delenv("RSICRC_PYTHON", raising=False)
        monkeypatch.delenv("RSICRC_MODEL", raising=False)
        assert settings.python_choice() == settings.Choice("/stored/python", "plugin settings")
        assert settings.model_choice().value == "stored/model"
        monkeypatch.setenv("RSICRC_PYTHON", "/env/python")
        monkeypatch.setenv("RSICRC_MODEL", str(tmp_path))
        assert settings.python_choice().value == "/env/python"
        assert settings.python_choice().origin.startswith("environment variable")
        assert settings.model_choice().value == str(tmp_path)
    finally:
        QgsSettings().remove("rsicrc/python")
        QgsSettings().remove("rsicrc/model")


def test_autodetect_prefers_project_venv(monkeypatch):
    from rsicrc.rsicrc_qgis import settings

    monkeypatch.delenv("RSICRC_PYTHON", raising=False)
    QgsSettings().remove("rsicrc/python")
    candidates = settings.interpreter_candidates()
    assert candidates[0] == REPO / ".venv" / "bin" / "python"
    if candidates[0].is_file():
        assert settings.python_choice() == settings.Choice(str(candidates[0]), "auto-detected")


def test_caption_args_and_parameter_checks(tmp_path):
    from rsicrc.rsicrc_qgis.caption import job as caption_job

    out = str(tmp_path / "o.gpkg")
    args = caption_job.caption_args({"before": "b.tif", "after": "a.tif", "output": out, "bands": " 4, 3,2 ",
                                     "tile_size": 224, "queries": ["new road", "trees"],
                                     "model": "some/model", "device": "cpu", "reproject": True})
    assert args[:5] == ["caption", "b.tif", "a.tif", "--output", out] and args[-2:] == ["--progress", "json"]
    assert args.count("--query") == 2 and "--reproject" in args and "--resume-if-possible" not in args
    assert args[args.index("--tile-size") + 1] == "224" and args[args.index("--bands") + 1] == "4,3,2"
    for bad in ("0,1,2", "a,b,c"):
        with pytest.raises(caption_job.BadParameter, match="Bands"):
            caption_job.caption_args({"before": "b.tif", "after": "a.tif", "output": out, "bands": bad})


def test_the_setup_task_uses_qgis_proxy_for_every_download(qgis_app, tmp_path, monkeypatch, wait_signal):
    """The proxy of QGIS's network settings reaches uv's own download and uv's (a loopback proxy
    counts what passes; the index is on 127.0.0.1 too)."""
    from qgis.core import QgsApplication, QgsNetworkAccessManager
    from qgis.PyQt.QtNetwork import QNetworkProxy

    from local_index import index_server, package_index, proxy_server, real_uv_wheel
    from rsicrc.rsicrc_qgis.setup.environment_setup import SetupEnvironmentTask, qgis_proxy

    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    root, pyproject = package_index(tmp_path, real_uv_wheel(tmp_path / "uv-wheel"))
    manager = QgsNetworkAccessManager.instance()
    saved = manager.fallbackProxy()
    with index_server(root) as server, proxy_server() as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        manager.setFallbackProxyAndExcludes(QNetworkProxy(QNetworkProxy.ProxyType.HttpProxy, "127.0.0.1", port), [], [])
        try:
            assert qgis_proxy() == proxy.url
            task = SetupEnvironmentTask(tmp_path / "venv", python=sys.executable, torch="cpu",
                                        index_url=f"{server.url}/simple", torch_index=f"{server.url}/torch",
                                        pyproject=pyproject, uv_folder=tmp_path / "uv")
            lines = []
            task.logLine.connect(lines.append)
            QgsApplication.taskManager().addTask(task)
            wait_signal(task.taskCompleted, 300)
        finally:
            manager.setFallbackProxyAndExcludes(saved, [], [])
    through = [path for _, path, _ in proxy.requests]
    assert any(p.endswith("/simple/uv/") for p in through) and any("/torch/cpu/torch/" in p for p in through)
    assert any(line.startswith("$ ") and " venv " in line for line in lines)  # the log streams each step
    QgsSettings().remove("rsicrc/python")


def test_clip_scoring_is_the_pipelines():
    from rsicrc.pipeline.scores import score_embeddings
    from rsicrc.rsicrc_qgis.search.clip_scoring import clip_scores_from_embeddings

    rng = np.random.default_rng(1)
    t = rng.standard_normal(8).astype(np.float32)
    b, a = rng.standard_normal((2, 5, 8)).astype(np.float32)
    for when in ("after", "before"):
        for change in (False, True):
            np.testing.assert_array_equal(clip_scores_from_embeddings(t, b, a, when, change),
                                          score_embeddings(t, b, a, when, change))


def test_plugin_never_imports_torch():
    """QGIS's own Python imports the whole plugin and its provider without torch."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "import rsicrc.rsicrc_qgis.plugin, rsicrc.rsicrc_qgis.processing.provider;"
            "print('torch' in sys.modules)")
    parent = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip())
    (parent / "rsicrc").symlink_to(REPO, target_is_directory=True)
    proc = subprocess.run(["/usr/bin/python3", "-c", code, str(parent)], capture_output=True,
                          text=True, timeout=120, env={"QT_QPA_PLATFORM": "offscreen",
                                                        "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_styling_on_documented_layout(tmp_path):
    """A GeoPackage written here in the documented layout (test input) gets the result style."""
    from osgeo import ogr, osr

    from rsicrc.rsicrc_qgis.layers import styling

    path = tmp_path / "made.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    lyr = ds.CreateLayer("changes", srs, ogr.wkbPolygon)
    for name, kind in (("tile_id", ogr.OFTInteger), ("caption", ogr.OFTString),
                       ("changed", ogr.OFTInteger), ("change_score", ogr.OFTReal)):
        lyr.CreateField(ogr.FieldDefn(name, kind))
    for i, score in enumerate((0.1, 0.9)):
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField("tile_id", i)
        f.SetField("caption", f"caption {i}")
        f.SetField("changed", int(score > 0.5))
        f.SetField("change_score", score)
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({i} 0,{i+1} 0,{i+1} 1,{i} 1,{i} 0))"))
        lyr.CreateFeature(f)
    ds = None
    layer = QgsVectorLayer(f"{path}|layername=changes", "c", "ogr")
    assert styling.style_result_layer(layer)
    renderer = layer.renderer()
    assert renderer.classAttribute() == "change_score"
    assert [r.lowerValue() for r in renderer.ranges()] == [0.0, 0.2, 0.4, 0.6, 0.8]
    # unchanged tiles stay see-through, changed ones are filled
    assert renderer.ranges()[0].symbol().color().alpha() == 0
    assert renderer.ranges()[-1].symbol().color().alpha() >= 64
    plain = QgsVectorLayer("Polygon?field=a:int", "p", "memory")
    assert not styling.style_result_layer(plain)


def test_pair_checks(raster_pair, tmp_path):
    from osgeo import gdal

    from rsicrc.rsicrc_qgis.caption import pair_checks

    before, after = (QgsRasterLayer(str(p), p.stem) for p in raster_pair)
    checks = pair_checks.check_pair(before, after, None, 256)
    assert not pair_checks.blocking(checks) and "2 tile(s)" in checks[-1].text
    assert pair_checks.blocking(pair_checks.check_pair(before, after, None, 512))
    assert pair_checks.blocking(pair_checks.check_pair(before, after, [1, 2, 5], 256))
    moved = tmp_path / "moved.tif"
    gdal.Translate(str(moved), str(raster_pair[1]), outputSRS="EPSG:32633")
    other = QgsRasterLayer(str(moved), "moved")
    crs_checks = pair_checks.check_pair(before, other, None, 256)
    assert pair_checks.blocking(crs_checks)
    assert any("CRS differ" in c.text for c in crs_checks)


def test_pair_checks_use_the_files_crs_not_a_layer_override(raster_pair, tmp_path):
    """rsicrc reads the files: a CRS the user set on a layer in QGIS changes nothing but a warning."""
    from osgeo import gdal
    from qgis.core import QgsCoordinateReferenceSystem

    from rsicrc.rsicrc_qgis.caption import pair_checks

    before, after = (QgsRasterLayer(str(p), p.stem) for p in raster_pair)
    after.setCrs(QgsCoordinateReferenceSystem("EPSG:4326"))  # the file says EPSG:32632
    checks = pair_checks.check_pair(before, after, None, 256)
    assert not pair_checks.blocking(checks) and "2 tile(s)" in checks[-1].text
    assert [c.level for c in checks if "not its file's" in c.text] == [pair_checks.WARN]
    assert not any("CRS differ" in c.text for c in checks)
    # The other way round: files in two CRSs, the layers made to look alike, still differ.
    moved = tmp_path / "moved.tif"
    gdal.Translate(str(moved), str(raster_pair[1]), outputSRS="EPSG:32633")
    other = QgsRasterLayer(str(moved), "moved")
    other.setCrs(before.crs())
    checks = pair_checks.check_pair(before, other, None, 256)
    assert pair_checks.blocking(checks) and any("CRS differ" in c.text for c in checks)


def test_metadata_txt_has_required_fields():
    meta = configparser.ConfigParser()
    meta.read(REPO / "metadata.txt")
    general = meta["general"]
    # email, repository and tracker are left out until real ones exist (tools/package_plugin.py
    # refuses an upload zip without them; tests/qgis/test_packaging.py).
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                "tags", "icon", "hasProcessingProvider"):
        assert general.get(key, "").strip(), key
    assert general["qgisMinimumVersion"] == "3.22"
    # Offered in QGIS 4 too: an unset maximum means 3.99.
    assert general["qgisMaximumVersion"] == "4.99" and general["supportsQt6"] == "True"
    assert (REPO / general["icon"]).is_file()
    assert general["version"] == json.loads(json.dumps(__import__("rsicrc").__version__))


@pytest.mark.parametrize("name", ["tile_id", "change_score", "clip_after", "before_class_prob"])
def test_score_field_cannot_overwrite_what_caption_wrote(name):
    from qgis.core import QgsVectorLayer

    from rsicrc.rsicrc_qgis.search import layer_search

    layer = QgsVectorLayer("Point?field=tile_id:integer&field=change_score:double", "result", "memory")
    with pytest.raises(layer_search.SearchProblem, match="would overwrite"):
        layer_search.ensure_score_field(layer, name)
    layer.startEditing()
    assert layer_search.ensure_score_field(layer, "road_score") == 2  # a new name is fine
    layer.rollBack()


def test_worker_runs_the_plugins_own_folder_and_nothing_beside_it(tmp_path, monkeypatch):
    """The child imports rsicrc from the plugin folder (whatever it is called) and does not see
    the other plugins' folders: one named like a dependency cannot shadow it."""
    from rsicrc.rsicrc_qgis import settings
    from rsicrc.rsicrc_qgis.worker import environment
    from rsicrc.pipeline.environment.child_json import child_env

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    folder = plugins / "rsicrc-main"  # as a zip from a source host unpacks
    folder.symlink_to(REPO, target_is_directory=True)
    for shadow in ("numpy", "pyogrio", "torch"):
        (plugins / shadow).mkdir()
        (plugins / shadow / "__init__.py").write_text("raise ImportError('shadowed by another plugin')\n")
    monkeypatch.setattr(settings, "PLUGIN_DIR", folder)
    monkeypatch.chdir(plugins)  # nor the working directory
    status = environment.check_environment(sys.executable)
    assert status.ok, status.message
    assert status.details["rsicrc"] == str(folder / "__init__.py")
    out = subprocess.run(environment.child_command(sys.executable, ["info", str(tmp_path / "none.gpkg")]),
                         capture_output=True, text=True, env=child_env(), timeout=120)
    assert out.returncode == 2 and "no such file" in out.stderr, out.stderr


class _FlakySource:
    """A feature source whose first `short` reads stop early, as QGIS's do when GDAL finds the
    GeoPackage locked."""

    def __init__(self, features, short):
        self.features, self.short, self.reads = features, short, 0

    def getFeatures(self, request):
        self.reads += 1
        return iter(self.features[:1] if self.reads <= self.short else self.features)


class _Feature:
    def __init__(self, fid, blob):
        self.fid, self.blob = fid, blob

    def id(self):
        return self.fid

    def __getitem__(self, name):
        return self.blob


def _flaky_search(short):
    from qgis.core import QgsField, QgsFields
    from qgis.PyQt.QtCore import QVariant

    from rsicrc.rsicrc_qgis.search import core as search_core

    fields = QgsFields()
    fields.append(QgsField("embedding", QVariant.ByteArray))
    rows = np.eye(3, 4, dtype=np.float32)
    source = _FlakySource([_Feature(i, row.tobytes()) for i, row in enumerate(rows)], short)
    return source, search_core.PreparedSearch("edited", search_core.MODE_CAPTION, "model", "", source, fields,
                                              dim=4, expected=3)


def test_an_edited_layer_read_short_is_read_again():
    """A layer being edited is read on the main thread; a read that stops early is tried again."""
    from rsicrc.rsicrc_qgis.search import core as search_core

    source, prepared = _flaky_search(short=2)
    assert search_core.read_edited_layer(prepared) is prepared
    assert source.reads == 3 and prepared.fids == [0, 1, 2]
    np.testing.assert_array_equal(prepared.matrix, np.eye(3, 4, dtype=np.float32))


def test_a_search_that_reads_fewer_features_than_the_layer_has_says_so():
    """QGIS only logs a file it fails to open; the iteration just ends. Snapshot reads (off the main
    thread) are read once; an edited layer's after its retries."""
    from rsicrc.rsicrc_qgis.search import core as search_core, layer_search

    for read in (search_core.read_layer, search_core.read_edited_layer):
        source, prepared = _flaky_search(short=5)
        with pytest.raises(layer_search.ShortRead, match="Only 1 of the 3 features of layer \"edited\""):
            read(prepared)
        assert source.reads == (1 if read is search_core.read_layer
                                else len(search_core.EDITED_READ_RETRY_PAUSES) + 1)
    layer_search.check_all_read("l", 5, 5)


def test_qgis_enums_are_this_qgis_own_values():
    """Each value the plugin uses is the running QGIS's own; the newest name wins where an old one
    names another enum's value (QgsPalLayerSettings.OverPoint since 3.26)."""
    from qgis.core import Qgis, QgsPalLayerSettings, QgsProcessing

    from rsicrc.rsicrc_qgis import qgis_enums

    assert qgis_enums.INFO == Qgis.Info and qgis_enums.CRITICAL == Qgis.Critical
    assert qgis_enums.SOURCE_RASTER == QgsProcessing.TypeRaster
    placement = getattr(Qgis, "LabelPlacement", None)
    assert qgis_enums.LABEL_OVER_POINT == (placement.OverPoint if placement else QgsPalLayerSettings.OverPoint)
    assert qgis_enums.first_of("core.Qgis.NoSuchEnum.Value", "core.Qgis.Info") == Qgis.Info
    with pytest.raises(AttributeError, match="none of core.Qgis.Nothing"):
        qgis_enums.first_of("core.Qgis.Nothing")
