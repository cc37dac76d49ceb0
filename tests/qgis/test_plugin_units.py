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

from rsicrc.rsicrc_qgis.worker.base_python import SUPPORTED

REPO = Path(__file__).resolve().parents[2]
# The set-up refuses a Python outside SUPPORTED (Debian 13's 3.13, sid's 3.14), so a set-up run
# with this interpreter can only be tested where it is accepted (else it waits out its timeout).
SUPPORTED_HERE = pytest.mark.skipif(
    not SUPPORTED[0] <= tuple(sys.version_info[:2]) <= SUPPORTED[1],
    reason="the environment set-up refuses this Python (outside base_python.SUPPORTED)")


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


def test_pinned_requirements_come_from_pyproject():
    from rsicrc.rsicrc_qgis.setup.environment_setup import pinned_requirements, setup_commands

    reqs = pinned_requirements()
    assert any(r.startswith("torch==") for r in reqs) and any(r.startswith("rasterio") for r in reqs)
    cmds = setup_commands(Path("/tmp/v"), reqs, python="/usr/bin/python3")
    assert cmds[0] == ["/usr/bin/python3", "-m", "venv", "/tmp/v"]
    assert cmds[-1][-len(reqs):] == reqs


@SUPPORTED_HERE
def test_setup_environment_task_streams_log(qgis_app, tmp_path, wait_signal):
    """A real venv creation with the pip step, log lines arriving while it runs."""
    from qgis.core import QgsApplication

    from rsicrc.rsicrc_qgis.setup.environment_setup import SetupEnvironmentTask

    task = SetupEnvironmentTask(tmp_path / "venv", requirements=[], python=sys.executable)
    lines = []
    task.logLine.connect(lines.append)
    QgsApplication.taskManager().addTask(task)
    wait_signal(task.taskCompleted, 300)
    assert (tmp_path / "venv" / "bin" / "python").is_file()
    assert any(line.startswith("$ ") and "venv" in line for line in lines)
    assert any("pip" in line.lower() for line in lines if not line.startswith("$ "))
    QgsSettings().remove("rsicrc/python")


def test_clip_scoring_is_the_pipelines():
    from rsicrc.pipeline.caption.clip_annotator import score_embeddings
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
    from rsicrc.rsicrc_qgis.worker import environment
    from rsicrc.rsicrc_qgis import settings

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
                         capture_output=True, text=True, env=environment.child_env(), timeout=120)
    assert out.returncode == 2 and "no such file" in out.stderr, out.stderr


def test_a_search_that_reads_fewer_features_than_the_layer_has_says_so():
    """QGIS only logs a file it fails to open from a worker thread; the iteration just ends."""
    from rsicrc.rsicrc_qgis.search import layer_search, core as search_core

    search_core.check_all_read("l", 5, 5)
    with pytest.raises(layer_search.SearchProblem, match="Only 3 of the 5 features"):
        search_core.check_all_read("l", 3, 5)
