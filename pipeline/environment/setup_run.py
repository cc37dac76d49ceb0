"""Setting up the worker's environment: what the dialog's "Set up environment" and
`python -m rsicrc setup --venv DIR` both run (standard library only: QGIS's Python may have
nothing else).

The steps: uv (fetched once, uv_tool.py); a base Python 3.11-3.14 (base_python.py), else one that
uv manages, when it can download one; the venv made by uv;
the dependencies pinned in the plugin's pyproject.toml, torch from the index of the build that
fits the machine (torch_build.py); then a real tensor operation on the build's device. A GPU
build that fails it is replaced by the CPU build, with the reason in one line. The proxy goes to
every download (uv's through HTTP(S)_PROXY).
"""
import json
import os
import platform as host_platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .base_python import NoBasePython, check_given, find_base_python
from .child_json import ask_child, child_env, stop_process
from .nvidia import nvidia_facts
from .torch_build import NoTorchBuild, choose_torch_build, cpu_build
from .uv_tool import PYPI_SIMPLE, find_uv

PLUGIN_DIR = Path(__file__).resolve().parents[2]
PYPROJECT = PLUGIN_DIR / "pyproject.toml"
VERIFY_TIMEOUT_S = 300
# What uv installs where no usable Python exists (it downloads python-build-standalone).
MANAGED_PYTHON = "3.12"
# A tensor operation on the device: the build imports, sees its device, and computes right there.
VERIFY = """
import json, sys
device = sys.argv[1]
try:
    import torch
    x = torch.ones(64, device=device)
    ok = float((x + x).sum().item()) == 128.0
    print(json.dumps({"ok": ok, "torch": torch.__version__, "why": None if ok else "a wrong sum"}))
except Exception as exc:
    print(json.dumps({"ok": False, "torch": None, "why": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}))
"""


class SetupFailed(Exception):
    """A step failed; the message is one line saying which and why."""


@dataclass
class SetupOptions:
    venv: Path
    torch: str = "auto"  # auto, cpu, cuda (torch_build.TORCH_CHOICES)
    base_python: str = None  # a given interpreter, else the search of base_python.py
    index_url: str = PYPI_SIMPLE
    torch_index: str = None  # pytorch.org's index (torch_build.TORCH_INDEX) or a mirror of it
    proxy: str = None  # http://[user:password@]host:port
    uv_folder: Path = None  # where uv is kept (default: beside the venv)
    pyproject: Path = PYPROJECT


@dataclass
class SetupResult:
    python: str  # the venv's interpreter
    build: object  # the TorchBuild installed
    fallback: str = None  # why the GPU build gave way to the CPU build, when it did


def venv_python(venv, platform=sys.platform):
    venv = Path(venv)
    return venv / "Scripts" / "python.exe" if platform == "win32" else venv / "bin" / "python"


def set_up(options, on_line=print, is_canceled=lambda: False):
    """Make the environment of `options`; SetupResult, or SetupFailed saying why."""
    env = child_env()
    env.pop("VIRTUAL_ENV", None)  # uv would install into the venv QGIS was started from
    # The system's certificate store, as the standard library's download of uv uses: behind a
    # proxy that inspects TLS (common in companies) only that store knows the proxy's CA.
    env.setdefault("UV_NATIVE_TLS", "1")
    if options.proxy:
        env.update({name: options.proxy for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")})
    run = _Runner(env, on_line, is_canceled)
    try:  # before any download: a build that cannot be had here is said at once
        build = choose_torch_build(options.torch, sys.platform, host_platform.machine(), nvidia_facts())
    except NoTorchBuild as exc:
        raise SetupFailed(f"--torch {options.torch}: {exc}") from None
    base = _base_python(options, on_line)  # before any download: a given Python that cannot do is said at once
    folder = Path(options.uv_folder or Path(options.venv).parent / "uv")
    try:
        uv = str(find_uv(folder, options.index_url, options.proxy, on_line))
    except Exception as exc:  # uv_tool.UvUnavailable, or an unreadable folder
        raise SetupFailed(f"uv: {exc}") from None
    if not isinstance(base, str):
        base = _managed_python(run, uv, base, on_line)
    run([uv, "venv", "--allow-existing", "--python", base, str(options.venv)], "making the venv")
    python = str(venv_python(options.venv))
    on_line(f"PyTorch: {build.why}")
    _install(run, uv, python, options, build)
    problem = verify(python, build.device)
    if problem is None:
        return SetupResult(python, build)
    if not build.gpu:
        raise SetupFailed(f"PyTorch does not run in {python}: {problem}")
    fallback = f"the {build.name} build does not run on this {build.device} ({problem}); using the CPU build"
    on_line(fallback)
    cpu = cpu_build(sys.platform, fallback)
    _install(run, uv, python, options, cpu, reinstall=True)
    problem = verify(python, cpu.device)
    if problem is not None:
        raise SetupFailed(f"PyTorch does not run in {python} on the CPU either: {problem}")
    return SetupResult(python, cpu, fallback)


def _base_python(options, on_line):
    """The interpreter the venv is made from: the given one (SetupFailed when it cannot do), the
    best one found, or the NoBasePython of a search that found none."""
    def tried(probe):
        on_line(f"{probe.path}: " + (f"Python {'.'.join(map(str, probe.version))}, using it" if probe.ok
                                     else probe.problem))

    if options.base_python:
        try:
            return check_given(options.base_python).path
        except NoBasePython as exc:
            raise SetupFailed(str(exc)) from None
    try:
        return find_base_python(on_probe=tried).path
    except NoBasePython as exc:
        return exc


def _managed_python(run, uv, none_found, on_line):
    """A Python that uv downloads and manages, where this machine has none that fits."""
    on_line(f"no usable Python here; asking uv for a managed Python {MANAGED_PYTHON}")
    try:
        run([uv, "python", "install", MANAGED_PYTHON], "installing a managed Python")
    except SetupFailed:
        raise SetupFailed(str(none_found)) from None
    return MANAGED_PYTHON  # `uv venv --python` takes the request and finds the managed one


def _install(run, uv, python, options, build, reinstall=False):
    """The pinned dependencies into the venv, torch and torchvision from the build's index."""
    cmd = [uv, "pip", "install", "--python", python, "-r", str(options.pyproject), "--index-url", options.index_url]
    index = build.index_url
    if index and options.torch_index:  # a mirror of pytorch.org's index
        index = options.torch_index.rstrip("/") + "/" + build.name
    if index:  # uv takes a package from the first index that has it: torch from the build's
        cmd += ["--extra-index-url", index]
    if reinstall:
        cmd += ["--reinstall-package", "torch", "--reinstall-package", "torchvision"]
    run(cmd, f"installing the dependencies (PyTorch: {build.name})")


def verify(python, device):
    """None when torch computes on `device` in `python`, else why not (one line)."""
    child = ask_child([python, "-c", VERIFY, device], VERIFY_TIMEOUT_S, accept=lambda v: isinstance(v, dict)
                      and "ok" in v)
    if child.problem:
        return child.problem
    if child.answer is None:
        return child.tail() or f"exit code {child.returncode}"
    return None if child.answer["ok"] else child.answer["why"]


class _Runner:
    """Runs one step's command, its output line by line to `on_line`; a cancel stops it."""

    def __init__(self, env, on_line, is_canceled):
        self.env, self.on_line, self.is_canceled = env, on_line, is_canceled

    def __call__(self, cmd, doing):
        if self.is_canceled():
            raise SetupFailed("cancelled")
        self.on_line("$ " + " ".join(cmd))
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    text=True, encoding="utf-8", errors="replace", env=self.env,
                                    start_new_session=(os.name == "posix"))
        except OSError as exc:
            raise SetupFailed(f"{doing}: {cmd[0]} cannot be started ({exc.strerror or exc})") from None
        tail = []
        for line in iter(proc.stdout.readline, ""):
            self.on_line(line.rstrip("\n"))
            tail = (tail + [line.strip()])[-3:]
            if self.is_canceled():
                stop_process(proc)
                raise SetupFailed("cancelled")
        if proc.wait() != 0:
            last = next((t for t in reversed(tail) if t), f"exit code {proc.returncode}")
            raise SetupFailed(f"{doing} failed: {last}")


def report(result):
    """The result as one JSON line (for the dialog and scripts)."""
    return json.dumps({"python": result.python, "torch_build": result.build.name, "device": result.build.device,
                       "fallback": result.fallback})
