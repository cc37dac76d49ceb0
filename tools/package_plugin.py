"""Build the installable plugin zip: `python tools/package_plugin.py DIST_DIR`.

QGIS's "Install from ZIP" wants one top folder named like the plugin package (rsicrc) with
metadata.txt and __init__.py in it. The zip holds the runtime code (model/, pipeline/,
rsicrc_qgis/, since the worker runs this same code), resources, LICENSE and pyproject.toml
("Set up environment" installs the dependencies pinned there) — no tests, caches, venvs or
build output. Uses only the standard library, so any python3 runs it.
"""
import argparse
import configparser
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "rsicrc"
TOP_FILES = ("__init__.py", "__main__.py", "metadata.txt", "LICENSE", "README.md", "pyproject.toml")
TOP_DIRS = ("model", "pipeline", "rsicrc_qgis", "resources")
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".venv", ".git", "tests", "dist", "build"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".partial", ".orig", ".rej", ".swp"}
MAX_BYTES = 25 * 1024 * 1024


def plugin_files(root=ROOT):
    files = [root / name for name in TOP_FILES if (root / name).is_file()]
    for top in TOP_DIRS:
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root)
            if (path.is_file() and not SKIP_PARTS.intersection(rel.parts)
                    and path.suffix not in SKIP_SUFFIXES and not path.name.startswith(".")):
                files.append(path)
    return files


def build(dist, root=ROOT):
    meta = configparser.ConfigParser()
    meta.read(root / "metadata.txt")
    version = meta["general"]["version"]
    dist = Path(dist)
    dist.mkdir(parents=True, exist_ok=True)
    target = dist / f"{PACKAGE}-{version}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in plugin_files(root):
            zf.write(path, f"{PACKAGE}/{path.relative_to(root).as_posix()}")
    size = target.stat().st_size
    if size > MAX_BYTES:
        target.unlink()
        raise SystemExit(f"{target}: {size / 2**20:.1f} MB is over plugins.qgis.org's 25 MB limit")
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", nargs="?", default="dist")
    target = build(parser.parse_args(argv).dist)
    with zipfile.ZipFile(target) as zf:
        count = len(zf.namelist())
    print(f"{target}: {count} files, {target.stat().st_size / 2**20:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
