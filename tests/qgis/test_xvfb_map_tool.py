"""Desktop QGIS under Xvfb with the plugin: the "What changed here?" tool switched on from the
toolbar, a mouse click on the map, the answer in the panel and the where-changed map on the
canvas, and a screenshot of it (tests/artifacts/qgis_click.png)."""
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
SHOT = ARTIFACTS / "qgis_click.png"
SAMPLE = REPO / "resources" / "sample"


@pytest.mark.slow
def test_desktop_qgis_click_answer_and_screenshot(plugin_parent, worker_env, raster_pair, tmp_path):
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
    ini.write_text("[PythonPlugins]\nrsicrc=true\n\n[qgis]\ncheckVersion=false\nshowTips322=false\n")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if SHOT.exists():
        SHOT.unlink()
    report_path = tmp_path / "report.json"
    env = dict(os.environ, QGIS_PLUGINPATH=str(plugin_parent), RSICRC_TEST_BEFORE=str(before),
               RSICRC_TEST_AFTER=str(after), RSICRC_TEST_SCREENSHOT=str(SHOT), RSICRC_TEST_REPORT=str(report_path),
               RSICRC_TEST_WATCHDOG_S="300", **worker_env)
    for var in ("QT_QPA_PLATFORM", "PYTHONPATH", "QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH"):
        env.pop(var, None)
    cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", qgis, "--profiles-path", str(profiles),
           "--nologo", "--noversioncheck", "--code", str(Path(__file__).with_name("xvfb_map_tool_script.py"))]
    # Own process group: on a timeout, Xvfb and QGIS go too (xvfb-run alone would orphan them).
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=360)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
    assert report_path.is_file(), f"no report; exit {proc.returncode}: {stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    assert "error" not in report, report.get("error")
    assert report["steps"] == ["tool", "clicked", "answered", "rendered"]
    assert report["tool_active"]
    assert "rsicrcWhatChangedHere" in report["toolbar_actions"]
    # The mouse click came back before the answer: QGIS was waiting, not frozen.
    assert "Starting the model" in report["status_while_waiting"]
    assert report["ok"] and report["caption"] and report["panel_caption"] == report["caption"]
    # The window centred on the click: the clicked tile's, give or take the screen pixel the mouse hit.
    window, expected = report["window"], report["expected_window"]
    assert window["size"] == expected["size"]
    assert abs(window["col"] - expected["col"]) <= 2 and abs(window["row"] - expected["row"]) <= 2
    assert "Change score" in report["panel_details"]
    if report["has_attention"]:
        assert report["heat_cells"] >= 4 and report["heat_bands"] >= 2
    assert report["heat_bands"] >= 1  # the window's outline at least
    from qgis.PyQt.QtGui import QImage

    image = QImage(str(SHOT))
    assert not image.isNull() and image.width() >= 1000 and image.height() >= 700
