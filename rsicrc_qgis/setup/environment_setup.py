""""Set up environment": a venv with rsicrc's dependencies, pip's log shown live.

The plugin folder itself provides the rsicrc code to the child (environment.child_command), so
the venv only needs the dependencies pinned in pyproject.toml, shipped inside the plugin.
"""
import os
import re
import subprocess
from pathlib import Path

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .. import settings
from ..qgis_enums import TASK_CAN_CANCEL
from ..worker.base_python import NoBasePython, check_given, find_base_python
from ..worker.child_json import child_env
from ..worker.process import stop_process

PYPROJECT = settings.PLUGIN_DIR / "pyproject.toml"

# Download and disk cost of the environment (pinned wheels for Python 3.12, decimal GB), as
# README and metadata.txt state. Linux: wheel sizes from PyPI's file list (torch pulls the CUDA 13
# runtime); disk: the installed files of those 75 packages in the reference .venv (6.45 GB; `du
# -sh .venv` says 6.2 GiB). Windows (CPU-only torch from PyPI) and macOS arm64: the same
# versions' wheels downloaded and unpacked. Measured 2026-12-01.
ENV_COST = {"linux": "about 3.3 GB to download and 6.5 GB on disk",
            "win32": "about 0.37 GB to download and 1.0 GB on disk",
            "darwin": "about 0.38 GB to download and 1.1 GB on disk"}


def environment_cost(platform):
    return ENV_COST.get(platform, ENV_COST["linux"])


def pinned_requirements(pyproject=PYPROJECT):
    """The [project] dependencies of pyproject.toml (no tomllib: QGIS may ship Python < 3.11)."""
    text = Path(pyproject).read_text(encoding="utf-8")
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M)
    if not block:
        raise ValueError(f"{pyproject} has no [project] dependencies list")
    body = "\n".join(line.split("#", 1)[0] for line in block.group(1).splitlines())
    return re.findall(r"\"([^\"]+)\"", body)


def base_python(python=None, on_probe=None):
    """The Python to create the venv with (base_python.py searches QGIS's layouts); a given one
    is checked the same way. Starts each candidate, so call it off the GUI thread."""
    if python:
        return check_given(python).path
    return find_base_python(on_probe=on_probe).path


def setup_commands(venv_dir, requirements, python):
    venv_py = str(settings.venv_python(venv_dir))
    commands = [[python, "-m", "venv", str(venv_dir)]]
    if requirements:
        commands += [[venv_py, "-m", "pip", "install", "--upgrade", "pip"],
                     [venv_py, "-m", "pip", "install", *requirements]]
    else:  # nothing to install: still prove the new environment's pip runs
        commands.append([venv_py, "-m", "pip", "--version"])
    return commands


class SetupEnvironmentTask(QgsTask):
    logLine = pyqtSignal(str)

    def __init__(self, venv_dir=None, requirements=None, python=None):
        super().__init__("RSICRC: setting up the Python environment", TASK_CAN_CANCEL)
        self.venv_dir = Path(venv_dir or settings.managed_venv_dir())
        self.requirements = pinned_requirements() if requirements is None else list(requirements)
        self.python = python
        self.error = None

    @property
    def venv_python(self):
        return str(settings.venv_python(self.venv_dir))

    def run(self):
        def tried(probe):
            self.logLine.emit(f"{probe.path}: " + (f"Python {'.'.join(map(str, probe.version))}, using it"
                                                  if probe.ok else probe.problem))

        try:
            python = base_python(self.python, on_probe=tried)
            commands = setup_commands(self.venv_dir, self.requirements, python)
        except (NoBasePython, OSError, ValueError) as exc:
            self.error = str(exc)
            return False
        self.venv_dir.parent.mkdir(parents=True, exist_ok=True)
        env = child_env()
        env.pop("VIRTUAL_ENV", None)
        for n, cmd in enumerate(commands, 1):
            if self.isCanceled():
                return False
            self.logLine.emit("$ " + " ".join(cmd))
            try:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, errors="replace",
                                        env=env, start_new_session=(os.name == "posix"))
            except OSError as exc:
                self.error = f"{cmd[0]} cannot be started: {exc}"
                return False
            for line in iter(proc.stdout.readline, ""):
                self.logLine.emit(line.rstrip("\n"))
                if self.isCanceled():
                    stop_process(proc)
                    return False
            code = proc.wait()
            self.setProgress(100.0 * n / len(commands))
            if code != 0:
                self.error = f"\"{' '.join(cmd[:5])} ...\" failed with exit code {code}; see the log."
                return False
        return True

    def finished(self, ok):
        if ok:
            settings.save(python=self.venv_python)
            self.logLine.emit(f"Done: rsicrc will run with {self.venv_python}")
        elif self.isCanceled():
            self.logLine.emit("Cancelled.")
        else:
            self.logLine.emit(f"Failed: {self.error}")
