"""`make package`'s zip: what QGIS's "Install from ZIP" unpacks into the plugins folder."""
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QGIS_PROCESS = shutil.which("qgis_process.bin")


def test_package_zip_installs_and_loads(tmp_path):
    proc = subprocess.run(["/usr/bin/python3", str(REPO / "tools" / "package_plugin.py"),
                           str(tmp_path / "dist")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (zip_path,) = (tmp_path / "dist").glob("rsicrc-*.zip")
    assert zip_path.stat().st_size < 25 * 1024 * 1024
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert {"rsicrc/metadata.txt", "rsicrc/__init__.py", "rsicrc/LICENSE",
                "rsicrc/pyproject.toml", "rsicrc/resources/icons/rsicrc.png",
                "rsicrc/rsicrc_qgis/plugin.py"} <= set(names)
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")
                    or "/tests/" in n or "/.venv/" in n or "/.git" in n]
        plugins = tmp_path / "profile" / "python" / "plugins"
        zf.extractall(plugins)
    if QGIS_PROCESS is None:
        pytest.skip("qgis_process is not installed")
    env = dict(os.environ, QGIS_PLUGINPATH=str(plugins), QT_QPA_PLATFORM="offscreen",
               QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile-cfg"))
    env.pop("PYTHONPATH", None)
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "rsicrc"], env=env, check=True,
                   capture_output=True, timeout=120)
    listing = subprocess.run([QGIS_PROCESS, "list"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert "rsicrc:captionchanges" in listing.stdout and "rsicrc:searchchanges" in listing.stdout
