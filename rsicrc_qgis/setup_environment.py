""""Set up environment": a venv with rsicrc's dependencies, pip's log shown live.

The plugin folder itself provides the rsicrc code to the child (environment.child_command), so
the venv only needs the dependencies pinned in pyproject.toml, shipped inside the plugin.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from . import settings
from .environment import child_env
from .worker_process import stop_process

PYPROJECT = settings.PLUGIN_DIR / "pyproject.toml"


def pinned_requirements(pyproject=PYPROJECT):
    """The [project] dependencies of pyproject.toml (no tomllib: QGIS may ship Python < 3.11)."""
    text = Path(pyproject).read_text(encoding="utf-8")
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M)
    if not block:
        raise ValueError(f"{pyproject} has no [project] dependencies list")
    body = "\n".join(line.split("#", 1)[0] for line in block.group(1).splitlines())
    return re.findall(r"\"([^\"]+)\"", body)


def base_python():
    """A Python to create the venv with: QGIS's own when it is one, else python3 on PATH."""
    if Path(sys.executable).name.lower().startswith("python"):
        return sys.executable
    found = shutil.which("python3") or shutil.which("python")
    if not found:
        raise FileNotFoundError("No python3 found on PATH to create the environment with.")
    return found


def setup_commands(venv_dir, requirements, python=None):
    venv_py = str(settings.venv_python(venv_dir))
    commands = [[python or base_python(), "-m", "venv", str(venv_dir)]]
    if requirements:
        commands += [[venv_py, "-m", "pip", "install", "--upgrade", "pip"],
                     [venv_py, "-m", "pip", "install", *requirements]]
    else:  # nothing to install: still prove the new environment's pip runs
        commands.append([venv_py, "-m", "pip", "--version"])
    return commands


class SetupEnvironmentTask(QgsTask):
    logLine = pyqtSignal(str)

    def __init__(self, venv_dir=None, requirements=None, python=None):
        super().__init__("RSICRC: setting up the Python environment", QgsTask.CanCancel)
        self.venv_dir = Path(venv_dir or settings.managed_venv_dir())
        self.requirements = pinned_requirements() if requirements is None else list(requirements)
        self.python = python
        self.error = None

    @property
    def venv_python(self):
        return str(settings.venv_python(self.venv_dir))

    def run(self):
        try:
            commands = setup_commands(self.venv_dir, self.requirements, self.python)
        except (OSError, ValueError) as exc:
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
