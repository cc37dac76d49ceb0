"""This OS's per-user cache folder for rsicrc (the log, web-source descriptions, checked weights).

Standard library only, so that every layer may use it.
"""
import os
import sys
from pathlib import Path


def user_cache_dir(environ=os.environ, platform=sys.platform):
    if platform == "win32":
        base = Path(environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "rsicrc"
