"""Both algorithms from the command line: `qgis_process run rsicrc:<name>` (system Python,
plugin found through QGIS_PLUGINPATH, worker through RSICRC_PYTHON/RSICRC_MODEL)."""
import json
import os
import shutil
import subprocess

import pytest

# Debian's `qgis_process` wrapper passes an option its binary rejects; the binary works.
QGIS_PROCESS = shutil.which("qgis_process.bin") or shutil.which("qgis_process")


@pytest.fixture(scope="module")
def qp_env(plugin_parent, worker_env, tmp_path_factory):
    if QGIS_PROCESS is None:
        pytest.skip("qgis_process is not installed")
    profile = tmp_path_factory.mktemp("qgis-profile")
    env = dict(os.environ, QGIS_PLUGINPATH=str(plugin_parent), QT_QPA_PLATFORM="offscreen",
               QGIS_CUSTOM_CONFIG_PATH=str(profile), **worker_env)
    env.pop("PYTHONPATH", None)
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "rsicrc"], env=env, check=True,
                   capture_output=True, text=True, timeout=120)
    return env


def _run(env, *args, timeout=400):
    proc = subprocess.run([QGIS_PROCESS, "--json", "run", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    start = proc.stdout.find("{")
    return proc, (json.loads(proc.stdout[start:]) if proc.returncode == 0 else None)


def test_qgis_process_lists_both_algorithms(qp_env):
    out = subprocess.run([QGIS_PROCESS, "list"], env=qp_env, capture_output=True, text=True,
                         timeout=120).stdout
    assert "rsicrc:captionchanges" in out and "rsicrc:searchchanges" in out


def test_qgis_process_caption_then_search(qp_env, raster_pair, tmp_path):
    before, after = raster_pair
    out = tmp_path / "qp.gpkg"
    proc, res = _run(qp_env, "rsicrc:captionchanges", "--", f"BEFORE={before}", f"AFTER={after}",
                     "TILE_SIZE=256", "QUERIES=road", f"OUTPUT={out}")
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    assert res["results"]["FEATURES"] == 2
    assert res["results"]["OUTPUT"] == f"{out}|layername=changes"
    proc, res = _run(qp_env, "rsicrc:searchchanges", "--", f"INPUT={out}|layername=changes",
                     "QUERY=road", "FIELD=road_score", "TOP=1", f"OUTPUT={tmp_path / 's.gpkg'}")
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    from qgis.core import QgsVectorLayer

    scored = QgsVectorLayer(res["results"]["OUTPUT"], "s", "ogr")
    assert scored.featureCount() == 2
    for f in scored.getFeatures():
        assert f["road_score"] == pytest.approx(f["q_road"], abs=1e-5)


def test_qgis_process_reports_missing_environment(qp_env, raster_pair, tmp_path):
    before, after = raster_pair
    env = dict(qp_env, RSICRC_PYTHON=str(tmp_path / "nope" / "python"))
    proc, _ = _run(env, "rsicrc:captionchanges", "--", f"BEFORE={before}", f"AFTER={after}",
                   f"OUTPUT={tmp_path / 'x.gpkg'}", timeout=120)
    assert proc.returncode != 0
    assert "does not exist" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_qgis_process_offers_every_run_option(qp_env):
    """The algorithm qgis_process runs is built from the one definition of the run options."""
    from rsicrc.pipeline.caption_params import form_options

    proc = subprocess.run([QGIS_PROCESS, "--json", "help", "rsicrc:captionchanges"], env=qp_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    described = json.loads(proc.stdout[proc.stdout.find("{"):])["parameters"]
    for name, opt, _ in form_options():
        assert name.upper() in described, name
        assert described[name.upper()]["description"] == opt.label or \
            described[name.upper()]["description"].startswith(opt.label), name
