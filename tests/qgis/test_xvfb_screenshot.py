"""Desktop QGIS under Xvfb with the plugin: a caption job from the toolbar dialog, a dock
search, and a screenshot of the window (tests/artifacts/qgis_rsicrc_window.png)."""
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
SHOT = ARTIFACTS / "qgis_rsicrc_window.png"
SAMPLE = REPO / "resources" / "sample"


@pytest.mark.slow
def test_desktop_qgis_caption_and_screenshot(plugin_parent, worker_env, raster_pair, tmp_path):
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        pytest.skip("xvfb-run is not installed (apt-get install xvfb)")
    qgis = shutil.which("qgis")
    if qgis is None:
        pytest.skip("desktop QGIS is not installed")
    before, after = SAMPLE / "before.tif", SAMPLE / "after.tif"
    if not (before.is_file() and after.is_file()):
        before, after = raster_pair
    profiles = tmp_path / "profiles"
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\nrsicrc=true\n\n[qgis]\ncheckVersion=false\ndockAttributeTable=true\n"
                   "showTips322=false\n")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if SHOT.exists():
        SHOT.unlink()
    report_path = tmp_path / "report.json"
    env = dict(os.environ, QGIS_PLUGINPATH=str(plugin_parent), RSICRC_TEST_BEFORE=str(before),
               RSICRC_TEST_AFTER=str(after), RSICRC_TEST_OUTPUT=str(tmp_path / "changes.gpkg"),
               RSICRC_TEST_SCREENSHOT=str(SHOT), RSICRC_TEST_REPORT=str(report_path),
               RSICRC_TEST_WATCHDOG_S="360", **worker_env)
    for var in ("QT_QPA_PLATFORM", "PYTHONPATH", "QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH"):
        env.pop(var, None)
    cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", qgis, "--profiles-path", str(profiles),
           "--nologo", "--noversioncheck", "--code",
           str(Path(__file__).with_name("xvfb_qgis_script.py"))]
    # Own process group: on a timeout, Xvfb and QGIS go too (xvfb-run alone would orphan them).
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
    assert report_path.is_file(), f"no report; exit {proc.returncode}: {stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    assert "error" not in report, report.get("error")
    assert report["steps"] == ["dialog", "captioned", "searched", "rendered"]
    assert report["toolbar_actions"] == ["rsicrcCaptionChanges", "rsicrcSearchDock", "rsicrcWhatChangedHere"]
    assert "Caption changes…" in report["plugin_menu"]
    assert report["renderer"] == "graduatedSymbol" and report["features"] >= 2
    assert report["search_ok"] and report["selected"] == 3 and report["selected_at_shot"] == 3
    from qgis.PyQt.QtGui import QImage

    image = QImage(str(SHOT))
    assert not image.isNull() and image.width() >= 1000 and image.height() >= 700
