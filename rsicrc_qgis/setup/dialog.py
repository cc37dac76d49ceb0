"""The live log of "Set up environment" (uv's output as it comes: each download and its size)."""
import sys

from qgis.core import QgsApplication
from qgis.PyQt.QtGui import QFont
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QVBoxLayout

from .environment_setup import SetupEnvironmentTask, environment_cost


class SetupDialog(QDialog):
    def __init__(self, parent=None, venv_dir=None, python=None, **options):
        super().__init__(parent)
        self.setWindowTitle("RSICRC: set up the Python environment")
        self.resize(760, 420)
        self.task = SetupEnvironmentTask(venv_dir, python, **options)
        self.label = QLabel(f"Creating {self.task.venv_dir} with the packages pinned in the plugin's pyproject.toml "
                            f"and the PyTorch build that fits this machine ({environment_cost(sys.platform)} with "
                            f"the CUDA build; this takes minutes). Each download and its size shows below.")
        self.label.setWordWrap(True)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setFont(QFont("monospace", 9))
        self.log.setMaximumBlockCount(5000)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel | QDialogButtonBox.StandardButton.Close)
        self.buttons.button(QDialogButtonBox.StandardButton.Close).setEnabled(False)
        self.buttons.button(QDialogButtonBox.StandardButton.Cancel).clicked.connect(self.task.cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Close).clicked.connect(self.accept)
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addWidget(self.log, 1)
        layout.addWidget(self.buttons)
        self.task.logLine.connect(self.log.appendPlainText)
        self.task.taskCompleted.connect(self._over)
        self.task.taskTerminated.connect(self._over)

    def start(self):
        QgsApplication.taskManager().addTask(self.task)

    def _over(self):
        self.buttons.button(QDialogButtonBox.StandardButton.Cancel).setEnabled(False)
        self.buttons.button(QDialogButtonBox.StandardButton.Close).setEnabled(True)
        self.label.setText("Environment ready." if self.task.error is None and not self.task.isCanceled()
                           else f"Not done: {self.task.error or 'cancelled'}")
