"""`make package`'s zip: what QGIS's "Install from ZIP" unpacks into the plugins folder."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QGIS_PROCESS = shutil.which("qgis_process.bin")
sys.path.insert(0, str(REPO / "tools"))
import package_plugin  # noqa: E402

REAL = {"email": "maintainer@rsicrc-project.org", "tracker": "https://codeberg.org/rsicrc-maint/rsicrc/issues",
        "repository": "https://codeberg.org/rsicrc-maint/rsicrc",
        "homepage": "https://codeberg.org/rsicrc-maint/rsicrc"}


def test_package_zip_installs_and_loads(tmp_path):
    proc = subprocess.run(["/usr/bin/python3", str(REPO / "tools" / "package_plugin.py"), "--local",
                           str(tmp_path / "dist")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (zip_path,) = (tmp_path / "dist").glob("rsicrc-*.zip")
    assert zip_path.stat().st_size < 25_000_000
    assert package_plugin.zip_problems(zip_path, local=True) == []
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


def test_repository_metadata_is_refused_for_upload_naming_the_fields(tmp_path):
    """metadata.txt has no real email/tracker/repository/homepage yet: no upload zip is made."""
    proc = subprocess.run(["/usr/bin/python3", str(REPO / "tools" / "package_plugin.py"), str(tmp_path / "dist")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "metadata.txt lacks email, tracker, repository, homepage (required by plugins.qgis.org" in proc.stderr
    assert not list((tmp_path / "dist").glob("*.zip*"))


def plugin_tree(root, **fields):
    """A minimal plugin folder with the given metadata (None drops a field)."""
    meta = {"name": "RSICRC", "qgisMinimumVersion": "3.22", "description": "d", "about": "a",
            "version": "0.1.0", "author": "The rsicrc authors", "icon": "resources/icons/rsicrc.png", **REAL}
    meta.update(fields)
    root.mkdir()
    (root / "__init__.py").write_text("def classFactory(iface):\n    pass\n")
    (root / "LICENSE").write_text("MIT\n")
    (root / "resources" / "icons").mkdir(parents=True)
    shutil.copy(REPO / "resources" / "icons" / "rsicrc.png", root / "resources" / "icons" / "rsicrc.png")
    lines = [f"{k}={v}" for k, v in meta.items() if v is not None]
    (root / "metadata.txt").write_text("[general]\n" + "\n".join(lines) + "\n")
    return root


def test_complete_metadata_builds_an_upload_zip(tmp_path):
    target = package_plugin.build(tmp_path / "dist", root=plugin_tree(tmp_path / "p"))
    assert target.name == "rsicrc-0.1.0.zip" and package_plugin.zip_problems(target) == []


@pytest.mark.parametrize("fields, named", [
    ({"email": None}, "metadata.txt lacks email"),
    ({"tracker": None, "homepage": None}, "metadata.txt lacks tracker, homepage"),
    ({"about": None}, "metadata.txt lacks about"),
    ({"email": "rsicrc@users.noreply.github.com"}, "email=rsicrc@users.noreply.github.com is not a maintainer"),
    ({"repository": "https://github.com/rsicrc/rsicrc"},
     "repository=https://github.com/rsicrc/rsicrc is a placeholder"),
    ({"homepage": "http://homepage"}, "homepage=http://homepage is a placeholder"),
    ({"tracker": "https://example.com/issues"}, "tracker=https://example.com/issues is a placeholder"),
    ({"tracker": "github.com/x/y/issues"}, "tracker=github.com/x/y/issues is not an http(s) address"),
    ({"author": "A/B"}, "author cannot contain slashes"),
])
def test_metadata_the_upload_would_reject_is_refused(tmp_path, fields, named):
    with pytest.raises(package_plugin.Refused) as refused:
        package_plugin.build(tmp_path / "dist", root=plugin_tree(tmp_path / "p", **fields))
    assert named in str(refused.value)
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_local_zip_needs_only_what_qgis_needs(tmp_path):
    root = plugin_tree(tmp_path / "p", email=None, tracker=None, repository=None, homepage=None)
    target = package_plugin.build(tmp_path / "dist", root=root, local=True)
    assert target.name == "rsicrc-0.1.0-local.zip"
    assert any("lacks email, tracker, repository, homepage" in p for p in package_plugin.zip_problems(target))


def write_zip(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def good_files():
    meta = "[general]\n" + "\n".join(f"{k}={v}" for k, v in {
        "name": "R", "qgisMinimumVersion": "3.22", "description": "d", "about": "a", "version": "1.0",
        "author": "me", **REAL}.items()) + "\n"
    return {"rsicrc/__init__.py": "", "rsicrc/metadata.txt": meta, "rsicrc/LICENSE": "MIT"}


@pytest.mark.parametrize("extra, named", [
    ({"rsicrc/lib/_speedups.py": b"\x7fELF\x02\x01\x01"}, "rsicrc/lib/_speedups.py: binary files"),
    ({"rsicrc/bin/tool.exe": b"MZ\x90\x00"}, "rsicrc/bin/tool.exe: binary files"),
    ({"rsicrc/lib/x.dylib": b"\xcf\xfa\xed\xfe"}, "rsicrc/lib/x.dylib: binary files"),
    ({"rsicrc/deps/numpy-1.26.4-cp312-cp312-win_amd64.whl": b"PK"}, "win_amd64.whl: binary files"),
    ({"rsicrc/__pycache__/a.cpython-311.pyc": b"x"}, "a __pycache__ folder is not allowed"),
    ({"rsicrc/.git/config": b"x"}, "a .git folder is not allowed"),
    ({"other/__init__.py": b""}, "exactly one top folder"),
])
def test_zip_contents_the_upload_would_reject(tmp_path, extra, named):
    target = write_zip(tmp_path / "z.zip", {**good_files(), **extra})
    assert any(named in p for p in package_plugin.zip_problems(target)), package_plugin.zip_problems(target)
    assert package_plugin.zip_problems(write_zip(tmp_path / "ok.zip", good_files())) == []


def test_zip_without_license_or_with_bad_top_folder(tmp_path):
    files = {k: v for k, v in good_files().items() if not k.endswith("LICENSE")}
    assert "rsicrc/LICENSE is missing" in package_plugin.zip_problems(write_zip(tmp_path / "a.zip", files))
    renamed = {k.replace("rsicrc/", "RSICRC-plugin/"): v for k, v in good_files().items()}
    problems = package_plugin.zip_problems(write_zip(tmp_path / "b.zip", renamed))
    assert "top folder 'RSICRC-plugin' is not a PEP 8 package name" in problems


def test_zip_over_the_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(package_plugin, "MAX_BYTES", 1000)
    target = write_zip(tmp_path / "big.zip", {**good_files(), "rsicrc/data.txt": os.urandom(5000)})
    assert any("over plugins.qgis.org's 25 MB limit" in p for p in package_plugin.zip_problems(target))


def test_stated_environment_cost_is_the_same_everywhere():
    """The per-platform download/disk figures in the setup dialog, metadata.txt and README agree."""
    import re

    from rsicrc.rsicrc_qgis.setup.environment_setup import ENV_COST

    about = (REPO / "metadata.txt").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for platform, text in ENV_COST.items():
        download, disk = re.findall(r"(\d+(?:\.\d+)?) GB", text)
        assert f"{download} GB and {disk} GB" in about or f"{download} GB to download and {disk} GB" in about, platform
        assert f"{download} GB / {disk} GB" in readme, platform


def test_check_urls_asks_each_address_as_the_upload_does(tmp_path):
    """--check-urls sends the validator's HEAD request: a 404 or an unreachable host is named."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/rsicrc" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        meta = {"repository": f"{base}/rsicrc", "homepage": f"{base}/rsicrc", "tracker": f"{base}/missing"}
        assert package_plugin.unreachable_urls(meta) == [f"metadata.txt tracker={base}/missing answers HTTP 404"]
        closed = {"homepage": "http://127.0.0.1:9/"}  # the discard port: nothing listens
        (problem,) = package_plugin.unreachable_urls(closed, timeout=5)
        assert problem.startswith("metadata.txt homepage=http://127.0.0.1:9/ cannot be reached")
    finally:
        server.shutdown()


def _package_folders(names, prefix="rsicrc/"):
    """The package folders (relative to the plugin's top) among archive member names."""
    return {n[len(prefix):-len("/__init__.py")] for n in names
            if n.startswith(prefix) and n.endswith("/__init__.py") and "/" in n[len(prefix):]}


def test_the_wheel_and_the_zip_hold_every_package_folder_of_the_tree(tmp_path):
    """The wheel (`pip wheel .`) and the plugin zip hold exactly the tree's package folders: a new
    room is never left out of either."""
    tree = {str(p.parent.relative_to(REPO)) for layer in ("model", "pipeline", "rsicrc_qgis")
            for p in (REPO / layer).rglob("__init__.py") if "__pycache__" not in p.parts}
    assert {"pipeline/caption", "rsicrc_qgis/processing"} <= tree
    # Built from a copy: setuptools keeps a build/ folder in the source tree, whose stale files a
    # later wheel would take.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                                  "__pycache__", ".pytest_cache", "tests"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("rsicrc-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = zf.namelist()
    assert _package_folders(in_wheel) == tree
    assert {"rsicrc/__init__.py", "rsicrc/__main__.py", "rsicrc/metadata.txt"} <= set(in_wheel)
    proc = subprocess.run(["/usr/bin/python3", str(REPO / "tools" / "package_plugin.py"), "--local",
                           str(tmp_path / "dist")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (plugin_zip,) = (tmp_path / "dist").glob("rsicrc-*.zip")
    with zipfile.ZipFile(plugin_zip) as zf:
        assert _package_folders(zf.namelist()) == tree


def test_bandit_finds_nothing_at_medium_severity():
    """plugins.qgis.org runs bandit on every upload; at -ll (medium and above) it finds nothing."""
    proc = subprocess.run([sys.executable, "-m", "bandit", "-q", "-ll", "-r", "model", "pipeline", "rsicrc_qgis",
                           "__init__.py", "__main__.py"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _python_for_the_migration_script():
    """A Python >= 3.12 (what qgis-pyqt5to6 needs): on PATH, or one of pyenv's."""
    found = [shutil.which(f"python3.{minor}") for minor in (12, 13, 14)]
    found += sorted(str(p) for p in Path("~/.pyenv/versions").expanduser().glob("3.1[2-9]*/bin/python"))
    for python in filter(None, found):  # a pyenv shim on PATH may name a version that is not active
        check = subprocess.run([python, "-c", "import sys, venv; assert sys.version_info >= (3, 12)"],
                               capture_output=True, timeout=60)
        if check.returncode == 0:
            return python
    return None


def test_the_qt6_migration_script_finds_nothing_to_change(tmp_path):
    """QGIS 4 (Qt6): the official migration script (PyPI qgis-pyqt5to6) leaves rsicrc_qgis/ as it is:
    scoped enums and exec() everywhere. Its venv is cached outside the clone."""
    python = _python_for_the_migration_script()
    if python is None:
        pytest.skip("no Python 3.12 or newer here for qgis-pyqt5to6")
    venv = Path("~/.cache/rsicrc-tests/pyqt5to6").expanduser()
    script = venv / "bin" / "pyqt5to6"
    if not script.exists():
        subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--pre", "qgis-pyqt5to6",
                        "PyQt6", "PyQt6-QScintilla"], check=True, timeout=900, capture_output=True)
    copy = tmp_path / "rsicrc_qgis"
    shutil.copytree(REPO / "rsicrc_qgis", copy, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([str(script), str(copy)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    changed = [str(p.relative_to(copy)) for p in sorted(copy.rglob("*.py"))
               if p.read_bytes() != (REPO / "rsicrc_qgis" / p.relative_to(copy)).read_bytes()]
    assert not changed, f"the migration script rewrites {changed} ({proc.stdout[-2000:]})"
