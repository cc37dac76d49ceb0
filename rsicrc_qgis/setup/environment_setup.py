""""Set up environment": the worker's venv made by the set-up that `python -m rsicrc setup` runs
(pipeline/environment/setup_run.py), in a task, its log shown live, through QGIS's proxy.

The plugin folder itself provides the rsicrc code to the child (worker/environment.child_command),
so the venv only needs the dependencies pinned in pyproject.toml, shipped inside the plugin.
"""
import urllib.parse

from qgis.core import QgsNetworkAccessManager, QgsTask
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtNetwork import QNetworkProxy

from ...pipeline.environment.setup_run import SetupFailed, SetupOptions, set_up
from .. import settings
from ..qgis_enums import TASK_CAN_CANCEL

# Download and disk cost of the environment (pinned wheels for Python 3.12, decimal GB), as
# README and metadata.txt state. Linux: wheel sizes from PyPI's file list (torch pulls the CUDA 13
# runtime); disk: the installed files of those 75 packages in the reference .venv (6.45 GB; `du
# -sh .venv` says 6.2 GiB). Windows (CPU-only torch from PyPI) and macOS arm64: the same
# versions' wheels downloaded and unpacked. Measured 2026-12-01. Linux without an NVIDIA GPU gets
# the CPU build, without the CUDA runtime's wheels.
ENV_COST = {"linux": "about 3.3 GB to download and 6.5 GB on disk",
            "win32": "about 0.37 GB to download and 1.0 GB on disk",
            "darwin": "about 0.38 GB to download and 1.1 GB on disk"}


def environment_cost(platform):
    return ENV_COST.get(platform, ENV_COST["linux"])


def qgis_proxy():
    """QGIS's proxy (Settings > Options > Network) as http://[user:password@]host:port, or None."""
    proxy = QgsNetworkAccessManager.instance().fallbackProxy()
    if proxy.type() not in (QNetworkProxy.ProxyType.HttpProxy, QNetworkProxy.ProxyType.HttpCachingProxy) \
            or not proxy.hostName():
        return None
    auth = ""
    if proxy.user():
        auth = urllib.parse.quote(proxy.user(), safe="") + (
            ":" + urllib.parse.quote(proxy.password(), safe="") if proxy.password() else "") + "@"
    return f"http://{auth}{proxy.hostName()}:{proxy.port() or 8080}"


class SetupEnvironmentTask(QgsTask):
    logLine = pyqtSignal(str)

    def __init__(self, venv_dir=None, python=None, torch="auto", **options):
        """options: the rest of SetupOptions (index_url, torch_index, pyproject, uv_folder)."""
        super().__init__("RSICRC: setting up the Python environment", TASK_CAN_CANCEL)
        venv = settings.managed_venv_dir() if venv_dir is None else venv_dir
        self.options = SetupOptions(venv, torch=torch, base_python=python, proxy=qgis_proxy(), **options)
        self.venv_dir = self.options.venv
        self.error = None
        self.result = None

    @property
    def venv_python(self):
        return str(settings.venv_python(self.venv_dir))

    def run(self):
        try:
            self.result = set_up(self.options, on_line=self.logLine.emit, is_canceled=self.isCanceled)
        except SetupFailed as exc:
            self.error = str(exc)
            return False
        return True

    def finished(self, ok):
        if ok:
            settings.save(python=self.result.python)
            if self.result.fallback:
                self.logLine.emit(f"Note: {self.result.fallback}")
            self.logLine.emit(f"Done: rsicrc will run with {self.result.python} (PyTorch {self.result.build.name} "
                              f"build, on the {self.result.build.device})")
        elif self.isCanceled():
            self.logLine.emit("Cancelled.")
        else:
            self.logLine.emit(f"Failed: {self.error}")
