"""The Python that "Set up environment" creates the venv from, on Windows, macOS and Linux.

Inside QGIS, sys.executable is often not a Python at all: on Windows it is `bin/qgis-bin.exe`
(OSGeo4W and the standalone installer; the interpreter lives in sys.prefix, i.e.
`<root>/apps/Python3xx/python.exe`, with `<root>/bin/python3.exe` beside qgis-bin.exe), on
macOS the app binary `QGIS.app/Contents/MacOS/QGIS` (the interpreter is
`Contents/MacOS/bin/python3.x` in the 3.x bundles, `<sys.prefix>/bin/python3.x` otherwise, or
`<prefix>/tools/python3/python3.x` in vcpkg builds); see qgis/QGIS#45646, #66672 and the
candidates of qgis/QGIS#67318. On Linux QGIS links the system python3 and sys.executable is
usually right. Starting the QGIS binary "as Python" opens a second QGIS, so every candidate is
run once with a tiny probe and must answer as a Python of a supported version.

Everything the search depends on (platform, sys.executable, sys.prefix, environment, PATH) is a
field of `Host`, so the resolution order can be tested for each layout on any machine.
"""
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .child_json import ask_child

# The Python versions the pinned wheels (pyproject.toml) exist for, both ends inclusive: its
# requires-python (tests/qgis/test_base_python.py holds the two equal; QGIS's own Python may be
# older than tomllib, so it is not read here). torch==2.14.1 has wheels for cp310-cp314 and
# shapely==2.2.0 needs 3.11; numpy is no longer held below 2 in the worker's environment.
SUPPORTED = ((3, 11), (3, 14))
# What to install where none fits: the newest Python every pinned package has wheels for on every
# OS (checked in Debian 13's chroot: tools/chroot_tests.sh).
RECOMMENDED = (3, 13)
# Machines torch==2.14.1 has wheels for (PyPI's files: manylinux_2_28 x86_64 and aarch64,
# win_amd64, macosx_14_0_arm64), and the oldest macOS those take.
WHEEL_MACHINES = {"linux": ("x86_64", "aarch64"), "win32": ("amd64", "x86_64"), "darwin": ("arm64",)}
MIN_MACOS = (14, 0)

ENV_VAR = "RSICRC_BASE_PYTHON"  # an explicit choice wins over the search
PROBE_TIMEOUT_S = 30

# One line of JSON: what decides whether the wheels exist for it. uv makes the venv and
# downloads, so neither venv, ensurepip, pip nor ssl is needed in the base Python.
PROBE = (
    "import json, platform, sys\n"
    "print(json.dumps({'version': list(sys.version_info[:3]), 'executable': sys.executable,"
    " 'bits': 64 if sys.maxsize > 2**32 else 32, 'machine': platform.machine(),"
    " 'macos': platform.mac_ver()[0]}))\n"
)


class NoBasePython(Exception):
    """No usable Python was found; the message lists what was tried and what to install."""


@dataclass(frozen=True)
class Host:
    """What the search looks at; `Host.current()` is the running QGIS."""

    platform: str  # sys.platform: "win32", "darwin", "linux", ...
    executable: str
    prefix: str
    base_prefix: str
    version: tuple  # (major, minor) of the Python QGIS runs
    environ: dict = field(default_factory=dict)

    @classmethod
    def current(cls):
        return cls(sys.platform, sys.executable or "", sys.prefix, getattr(sys, "base_prefix", sys.prefix),
                   tuple(sys.version_info[:2]), dict(os.environ))

    @property
    def windows(self):
        return self.platform == "win32"

    @staticmethod
    def path(text):
        # The real file system's flavour: the platform field picks the layouts to look at, so a
        # Windows or macOS tree simulated in a Linux folder is searched like the real one.
        return Path(text)

    def exists(self, path):
        return os.path.isfile(str(path))


@dataclass
class Probe:
    path: str
    version: tuple = None
    problem: str = None  # None: usable

    @property
    def ok(self):
        return self.problem is None


def looks_like_python(name):
    stem = name.lower()
    stem = stem[:-4] if stem.endswith(".exe") else stem
    return stem in ("python", "python3") or (stem.startswith("python3.") and stem[8:].isdigit())


def _ancestor(path, name):
    for parent in path.parents:
        if parent.name == name:
            return parent
    return None


def _windows_candidates(host):
    out = []
    # The standalone installer and OSGeo4W put PYTHONHOME (= sys.prefix) at apps/Python3xx.
    for prefix in (host.prefix, host.base_prefix):
        out.append(host.path(prefix) / "python.exe")
    roots = []
    exe = host.path(host.executable)
    if exe.parent.name.lower() == "bin":  # <root>/bin/qgis-bin.exe
        roots.append(exe.parent.parent)
    if host.environ.get("OSGEO4W_ROOT"):
        roots.append(host.path(host.environ["OSGEO4W_ROOT"]))
    for root in roots:
        out += [root / "bin" / "python3.exe", root / "bin" / "python.exe",
                root / "apps" / f"Python{host.version[0]}{host.version[1]}" / "python.exe"]
        apps = root / "apps"
        if os.path.isdir(str(apps)):
            others = sorted((d for d in os.listdir(str(apps)) if d.lower().startswith("python3")),
                            key=_version_key, reverse=True)
            out += [apps / d / "python.exe" for d in others]
    # python.org's per-user installer default, newest supported first
    local = host.environ.get("LOCALAPPDATA")
    if local:
        for minor in range(SUPPORTED[1][1], SUPPORTED[0][1] - 1, -1):
            out.append(host.path(local) / "Programs" / "Python" / f"Python3{minor}" / "python.exe")
    return out


def _macos_candidates(host):
    out = []
    xy = f"{host.version[0]}.{host.version[1]}"
    contents = _ancestor(host.path(host.executable), "Contents") or _ancestor(host.path(host.prefix), "Contents")
    if contents is not None:  # inside QGIS.app
        bindir = contents / "MacOS" / "bin"
        out += [bindir / f"python{xy}", bindir / "python3", bindir / "python"]
    for prefix in (host.prefix, host.base_prefix):
        p = host.path(prefix)
        out += [p / "bin" / f"python{xy}", p / "bin" / "python3", p / "tools" / "python3" / f"python{xy}"]
    if contents is not None:
        versions = contents / "Frameworks" / "Python.framework" / "Versions"
        out += [versions / xy / "bin" / f"python{xy}", versions / "Current" / "bin" / "python3"]
    # python.org's framework installer and Homebrew, newest supported first
    for minor in range(SUPPORTED[1][1], SUPPORTED[0][1] - 1, -1):
        v = f"3.{minor}"
        out += [Path(f"/Library/Frameworks/Python.framework/Versions/{v}/bin/python{v}"),
                Path(f"/opt/homebrew/bin/python{v}"), Path(f"/usr/local/bin/python{v}")]
    return out


def _posix_candidates(host):
    xy = f"{host.version[0]}.{host.version[1]}"
    out = []
    for prefix in (host.prefix, host.base_prefix):  # the python3 QGIS links, e.g. /usr or /app (Flatpak)
        out += [host.path(prefix) / "bin" / f"python{xy}", host.path(prefix) / "bin" / "python3"]
    return out


def _on_path(host):
    sep = ";" if host.windows else ":"
    if host.windows:
        names = ["python.exe", "python3.exe"]
    else:
        names = [f"python3.{m}" for m in range(SUPPORTED[1][1], SUPPORTED[0][1] - 1, -1)] + ["python3", "python"]
    out = []
    for name in names:
        for folder in (host.environ.get("PATH") or "").split(sep):
            # The Microsoft Store's python.exe "app execution alias" only opens the Store.
            if folder and not (host.windows and "windowsapps" in folder.lower()):
                out.append(host.path(folder) / name)
    return out


def candidates(host):
    """Interpreters to try, best first, only those that exist as files (not yet run)."""
    found = []
    if host.environ.get(ENV_VAR):
        found.append(host.path(host.environ[ENV_VAR]))
    if host.executable and looks_like_python(host.path(host.executable).name):
        found.append(host.path(host.executable))  # Linux packages, conda, builds where #45646 is fixed
    if host.windows:
        found += _windows_candidates(host)
    elif host.platform == "darwin":
        found += _macos_candidates(host)
    else:
        found += _posix_candidates(host)
    found += _on_path(host)
    unique, seen = [], set()
    for path in found:
        # /bin/python3 and /usr/bin/python3 (merged /usr), or a link and its target, run once.
        key = os.path.normcase(os.path.realpath(str(path)))
        if key not in seen and host.exists(path):
            seen.add(key)
            unique.append(str(path))
    return unique


def _version_key(name):
    digits = "".join(c for c in name if c.isdigit())
    return (len(digits), digits)


def probe(path, platform=sys.platform, timeout=PROBE_TIMEOUT_S):
    """Run `path` with PROBE and judge the answer for `platform`."""
    child = ask_child([path, "-I", "-c", PROBE], timeout, accept=lambda v: isinstance(v, dict) and "version" in v)
    if child.problem:
        return Probe(path, problem=child.problem)
    if child.returncode != 0 or child.answer is None:
        tail = child.tail()[:200]
        return Probe(path, problem="is not a working Python" + (f" ({tail})" if tail else ""))
    version = tuple(child.answer["version"])
    return Probe(path, version, judge(version, platform, child.answer))


def judge(version, platform, answer):
    """None when this Python (the probe's answer) can build the environment, else why not."""
    shown = ".".join(map(str, version))
    low, high = SUPPORTED
    if tuple(version[:2]) < low:
        return f"Python {shown} is too old: the pinned packages (shapely 2.2, torch 2.14) need {_span()}"
    if tuple(version[:2]) > high:
        return f"Python {shown} is too new: the pinned packages (torch 2.14) have no wheels past {high[0]}.{high[1]}"
    if answer.get("bits", 64) != 64:
        return f"Python {shown} is a 32-bit build; PyTorch needs a 64-bit Python"
    machine = (answer.get("machine") or "").lower()
    if machine and platform in WHEEL_MACHINES and machine not in WHEEL_MACHINES[platform]:
        return f"Python {shown} runs on {machine}, and PyTorch 2.14 has no wheels for {machine} on this system"
    macos = tuple(int(p) for p in (answer.get("macos") or "").split(".")[:2] if p.isdigit())
    if platform == "darwin" and macos and macos < MIN_MACOS:
        return f"macOS {answer['macos']} is too old: PyTorch 2.14's wheels need macOS {MIN_MACOS[0]} or later"
    return None


def _span():
    (a, b), (c, d) = SUPPORTED
    return f"Python {a}.{b} to {c}.{d}"


def install_advice(platform):
    """What to install, in one sentence, for this platform."""
    (a, b), (c, d) = SUPPORTED
    want = f"{RECOMMENDED[0]}.{RECOMMENDED[1]}"
    if platform == "win32":
        text = (f"Install 64-bit Python {want} from https://www.python.org/downloads/windows/ and run "
                "\"Set up environment\" again")
    elif platform == "darwin":
        text = (f"Install Python {want} from https://www.python.org/downloads/macos/ (or `brew install "
                f"python@{want}`) and run \"Set up environment\" again; PyTorch 2.14 has macOS wheels for "
                "Apple silicon (macOS 14 or later) only")
    else:
        text = (f"Install Python {a}.{b} to {want} from your distribution (e.g. `sudo apt install python3` on "
                f"Debian/Ubuntu, `sudo dnf install python3` on Fedora) and run \"Set up environment\" again")
    return text + f"; or point {ENV_VAR} at such a python."


def find_base_python(host=None, run=probe, on_probe=None):
    """The Probe (path, version) of the first candidate that answers as a usable Python;
    NoBasePython otherwise.

    on_probe(Probe) sees every candidate tried (the setup log shows them).
    """
    host = host or Host.current()
    tried = []
    for path in candidates(host):
        result = run(path, host.platform)
        if on_probe is not None:
            on_probe(result)
        if result.ok:
            return result
        tried.append(result)
    if tried:
        listed = "; ".join(f"{t.path}: {t.problem}" for t in tried)
        head = f"No usable Python ({_span()}, 64-bit) was found. Tried {listed}."
    else:
        head = f"No Python was found to create the environment with ({_span()} needed)."
    raise NoBasePython(f"{head} {install_advice(host.platform)}")


def check_given(path, run=probe):
    """An explicitly chosen base Python must pass the same probe."""
    result = run(path)
    if not result.ok:
        raise NoBasePython(f"{path}: {result.problem}. {install_advice(sys.platform)}")
    return result
