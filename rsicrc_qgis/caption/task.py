"""The dialog's caption run as a QgsTask: progress in the task manager, cancel kills the child."""
from qgis.core import QgsMessageLog, QgsProject, QgsTask, QgsVectorLayer
from qgis.PyQt.QtCore import pyqtSignal

from . import job as caption_job
from ..layers.heatmap_layer import add_with_result, heatmap_layer
from ..layers.result_layer import NotAResultLayer, read_result_metadata
from ..layers.styling import add_when_changed_view, style_result_layer
from ..qgis_enums import CRITICAL, INFO, SUCCESS, TASK_CAN_CANCEL, WARNING
from ..worker import protocol
from ..worker.environment import EnvironmentProblem
from ..worker.process import Canceled, CliFailure

LOG_TAG = "RSICRC"


class CaptionTask(QgsTask):
    # Emitted on the main thread once the task is over: (layer or None, message, level, is_env)
    finishedWithResult = pyqtSignal(object, str, int, bool)
    # Every protocol event of the child, as it arrives (queued to the main thread)
    childEvent = pyqtSignal(dict)

    def __init__(self, args, output, layer_name="Changes", python=None, env=None):
        super().__init__(f"RSICRC: captioning changes into {output}", TASK_CAN_CANCEL)
        self.args = args
        self.env = env or {}  # added to the worker's environment (a web layer's login), never shown
        self.output = output
        self.layer_name = layer_name
        self.python = python
        self.result = None
        self.error = None
        self.warnings = []
        self.child_pid = None

    def _on_started(self, proc):
        self.child_pid = proc.pid

    def _on_event(self, event):
        self.childEvent.emit(event)
        percent = protocol.progress_percent(event)
        if percent is not None:
            self.setProgress(percent)
        elif event["event"] == "warning":
            self.warnings.append(event.get("message", ""))
            QgsMessageLog.logMessage(event.get("message", ""), LOG_TAG, WARNING)

    def run(self):
        try:
            self.result = caption_job.run_caption_job(
                self.args, on_event=self._on_event, is_canceled=self.isCanceled,
                on_log=lambda text: QgsMessageLog.logMessage(text, LOG_TAG, INFO),
                python=self.python, on_started=self._on_started, env=self.env)
            return True
        except Canceled as exc:
            self.error = exc
        except (CliFailure, EnvironmentProblem) as exc:
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - report, never a traceback dialog
            self.error = CliFailure(f"{type(exc).__name__}: {exc}")
        return False

    def _heatmap(self):
        """The run's heat map layer (its path is in the result's metadata), None without one."""
        try:
            path = read_result_metadata(self.output).get("heatmap")
        except NotAResultLayer:
            return None
        layer = heatmap_layer(path, self.output) if path else None
        if path and layer is None:
            self.warnings.append(f"the heat map {path} cannot be opened")
        return layer

    def finished(self, ok):
        if ok:
            layer = QgsVectorLayer(caption_job.layer_uri(self.output), self.layer_name, "ogr")
            if not layer.isValid():
                self.finishedWithResult.emit(None, f"rsicrc finished but {self.output} cannot be "
                                                   "opened as a layer.", CRITICAL, False)
                return
            style_result_layer(layer)
            heat = self._heatmap()
            if heat is not None:
                add_with_result(heat, layer)
            else:
                QgsProject.instance().addMapLayer(layer)
            add_when_changed_view(layer)
            done = self.result.done or {}
            message = (f"{done.get('features', layer.featureCount())} tiles captioned into "
                       f"{self.output}" + (f", {done['skipped']} skipped" if done.get("skipped") else ""))
            if self.warnings:
                message += f" ({len(self.warnings)} warning(s), see the RSICRC log)"
            self.finishedWithResult.emit(layer, message, SUCCESS, False)
        elif isinstance(self.error, Canceled) or (self.error is None and self.isCanceled()):
            self.finishedWithResult.emit(None, f"Captioning cancelled; run again with the same "
                                               f"output ({self.output}) to resume.", INFO, False)
        else:
            self.finishedWithResult.emit(None, str(self.error or "Captioning failed."),
                                         CRITICAL, isinstance(self.error, EnvironmentProblem))
