"""Sending the map tool's clicks to the warm search worker without ever blocking QGIS.

The worker answers one request at a time and a request cannot be withdrawn once sent, so the
newest click wins: while one click is in flight, a new one waits as the single pending click
(replacing any earlier pending one) and is sent when the worker answers; the answer to the
superseded click is dropped. Cancelling instead would stop the worker and throw its loaded model
away. Each request runs in a QgsTask (a worker thread); the answer is handed back on the main
thread through a signal.
"""
from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import QObject, pyqtSignal

from ..worker.environment import EnvironmentProblem
from ..worker.process import Canceled
from ..worker.serve_client import WorkerError

STARTING = "Starting the model… (the first click loads it; the next ones take a second or two)"
WORKING = "Looking at the window…"
SUPERSEDED = "Looking at the window… (your latest click is next)"


class ClickRequester(QObject):
    busy = pyqtSignal(str)  # what the user waits for
    answered = pyqtSignal(dict, dict)  # (request, answer) of the latest click
    failed = pyqtSignal(dict, str, bool)  # (request, message, is an environment problem)

    def __init__(self, worker_for, parent=None):
        """worker_for(): the search worker to use (may raise EnvironmentProblem)."""
        super().__init__(parent)
        self._worker_for = worker_for
        self._task = None
        self._pending = None
        self._warm = set()  # (worker, model) pairs that have answered a click
        self._closing = False

    @property
    def in_flight(self):
        return self._task is not None

    def submit(self, request):
        """Send `request` (ServeClient.caption_at's keywords) now, or as soon as the worker is free."""
        if self._closing:
            return
        if self._task is not None:
            self._pending = dict(request)
            self.busy.emit(SUPERSEDED)
            return
        self._start(dict(request))

    def _start(self, request):
        try:
            worker = self._worker_for()
        except EnvironmentProblem as exc:
            self.failed.emit(request, str(exc), True)
            return
        warm = worker.running and (id(worker), request.get("model")) in self._warm
        self.busy.emit(WORKING if warm else STARTING)

        def work(task):
            return worker.caption_at(**request, is_canceled=task.isCanceled)

        task = QgsTask.fromFunction("RSICRC: what changed here?", work,
                                    on_finished=lambda exc, answer=None: self._finished(worker, request, exc, answer))
        self._task = task
        QgsApplication.taskManager().addTask(task)

    def _finished(self, worker, request, exc, answer):
        self._task = None
        if self._closing:
            return
        if exc is None or isinstance(exc, WorkerError):  # the worker answered: its model is loaded
            self._warm.add((id(worker), request.get("model")))
        pending, self._pending = self._pending, None
        if pending is not None:  # this click was superseded: its answer is not shown
            self._start(pending)
            return
        if isinstance(exc, EnvironmentProblem):
            self.failed.emit(request, str(exc), True)
        elif isinstance(exc, Canceled) or (exc is None and answer is None) or \
                (exc is not None and str(exc) == "Task canceled"):
            self.failed.emit(request, "Cancelled.", False)
        elif isinstance(exc, WorkerError):
            self.failed.emit(request, str(exc), False)
        elif exc is not None:
            self.failed.emit(request, f"{type(exc).__name__}: {exc}", False)
        else:
            self.answered.emit(request, answer)

    def shutdown(self):
        """The plugin is unloading: drop the pending click and cancel the one in flight; a late
        answer touches nothing."""
        self._closing = True
        self._pending = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
