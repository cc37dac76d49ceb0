"""Desktop QGIS under Xvfb with the plugin enabled, driven by a `--code` script that writes a JSON
report (the Xvfb tests' one launcher)."""
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
SAMPLE = REPO / "resources" / "sample"


def sample_pair(fallback):
    before, after = SAMPLE / "before.tif", SAMPLE / "after.tif"
    return (before, after) if before.is_file() and after.is_file() else fallback


def run_desktop_qgis(script, tmp_path, plugin_parent, worker_env, shot, env, watchdog_s, timeout_s,
                     docked_table=False):
    """Run tests/qgis/`script` in desktop QGIS and return its report; `shot` is removed first.

    env: the script's own RSICRC_TEST_* variables. Skips when xvfb-run or qgis is missing."""
    xvfb, qgis = shutil.which("xvfb-run"), shutil.which("qgis")
    if xvfb is None:
        pytest.skip("xvfb-run is not installed (apt-get install xvfb)")
    if qgis is None:
        pytest.skip("desktop QGIS is not installed")
    profiles = tmp_path / "profiles"
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\nrsicrc=true\n\n[qgis]\ncheckVersion=false\n"
                   + ("dockAttributeTable=true\n" if docked_table else "") + "showTips322=false\n")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if shot.exists():
        shot.unlink()
    report_path = tmp_path / "report.json"
    full_env = dict(os.environ, QGIS_PLUGINPATH=str(plugin_parent), RSICRC_TEST_SCREENSHOT=str(shot),
                    RSICRC_TEST_REPORT=str(report_path), RSICRC_TEST_WATCHDOG_S=str(watchdog_s),
                    **worker_env, **{k: str(v) for k, v in env.items()})
    for var in ("QT_QPA_PLATFORM", "PYTHONPATH", "QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH"):
        full_env.pop(var, None)
    cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", qgis, "--profiles-path", str(profiles),
           "--nologo", "--noversioncheck", "--code", str(REPO / "tests" / "qgis" / script)]
    # Own process group: on a timeout, Xvfb and QGIS go too (xvfb-run alone would orphan them).
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
    assert report_path.is_file(), f"no report; exit {proc.returncode}: {stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    assert "error" not in report, report.get("error")
    return report


def assert_window_shot(shot):
    from qgis.PyQt.QtGui import QImage

    image = QImage(str(shot))
    assert not image.isNull() and image.width() >= 1000 and image.height() >= 700
    return image
