"""Where the plugin keeps its choices (QgsSettings) and how environment variables override them.

RSICRC_PYTHON, RSICRC_MODEL and RSICRC_CLIP_MODEL win over the stored settings so that headless runs
(`qgis_process`, CI) can be pointed at an environment without touching a QGIS profile.
"""
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from qgis.core import QgsApplication, QgsSettings

from ..pipeline.caption_params import DEVICES
from ..pipeline.environment.setup_run import PLUGIN_DIR, venv_python

KEY_PREFIX = "rsicrc/"
DEFAULT_DEVICE = "auto"
DEFAULT_SEARCH_FIELD = "search_score"

# The plugin folder is the package root: rsicrc_qgis/ sits right under it.


def _get(key, default=""):
    value = QgsSettings().value(KEY_PREFIX + key, default)
    return "" if value is None else str(value)


def _set(key, value):
    QgsSettings().setValue(KEY_PREFIX + key, value or "")


def managed_venv_dir():
    """The venv that "Set up environment" creates, inside the QGIS profile (user-writable)."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "rsicrc" / "venv"


def interpreter_candidates():
    """Pythons worth trying, best first: the project's venv, the managed venv, then others."""
    found = [venv_python(PLUGIN_DIR / ".venv"), venv_python(managed_venv_dir())]
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        if os.environ.get(var):
            found.append(venv_python(os.environ[var]) if var == "VIRTUAL_ENV"
                         else Path(os.environ[var]) / ("python.exe" if os.name == "nt" else "bin/python"))
    # Inside QGIS sys.executable is often the qgis binary itself, so only trust it when it
    # really is a Python.
    if Path(sys.executable).name.lower().startswith("python"):
        found.append(Path(sys.executable))
    for name in ("python3", "python"):
        path = shutil.which(name)
        if path:
            found.append(Path(path))
    unique = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


@dataclass(frozen=True)
class Choice:
    value: str
    origin: str  # "environment variable RSICRC_...", "settings", "auto-detected", "default"


def python_choice():
    if os.environ.get("RSICRC_PYTHON"):
        return Choice(os.environ["RSICRC_PYTHON"], "environment variable RSICRC_PYTHON")
    stored = _get("python")
    if stored:
        return Choice(stored, "plugin settings")
    for path in interpreter_candidates():
        if path.is_file():
            return Choice(str(path), "auto-detected")
    return Choice("", "auto-detected")


def _source_choice(env_var, key):
    if os.environ.get(env_var):
        return Choice(os.environ[env_var], f"environment variable {env_var}")
    stored = _get(key)
    if stored:
        return Choice(stored, "plugin settings")
    return Choice("", "default")


def model_choice():
    """The model source passed as --model; empty means the CLI's own default."""
    return _source_choice("RSICRC_MODEL", "model")


def clip_model_choice():
    """The RS-M-CLIP source passed as --clip-model; empty means the CLI's own default."""
    return _source_choice("RSICRC_CLIP_MODEL", "clip_model")


def device():
    value = _get("device", DEFAULT_DEVICE) or DEFAULT_DEVICE
    return value if value in DEVICES else DEFAULT_DEVICE


def search_field():
    return _get("search_field", DEFAULT_SEARCH_FIELD) or DEFAULT_SEARCH_FIELD


def stored_python():
    return _get("python")


def stored_model():
    return _get("model")


def stored_clip_model():
    return _get("clip_model")


def save(python=None, model=None, device_name=None, field=None, clip_model=None):
    if python is not None:
        _set("python", python.strip())
    if model is not None:
        _set("model", model.strip())
    if clip_model is not None:
        _set("clip_model", clip_model.strip())
    if device_name is not None:
        _set("device", device_name if device_name in DEVICES else DEFAULT_DEVICE)
    if field is not None:
        _set("search_field", field.strip())


def last_pair():
    """(BEFORE layer id, AFTER layer id) last chosen in the caption dialog or the map tool's panel."""
    return _get("last_before"), _get("last_after")


def save_last_pair(before_id, after_id):
    _set("last_before", before_id)
    _set("last_after", after_id)
