"""RSICRC settings: interpreter, model, device, with a "Check" button that starts the Python."""
import os

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import settings
from .environment import check_environment


class SettingsDialog(QDialog):
    def __init__(self, parent=None, on_setup=None):
        super().__init__(parent)
        self.setWindowTitle("RSICRC settings")
        self.setMinimumWidth(560)
        self._check_task = None
        form = QFormLayout()
        self.python_edit = QLineEdit(settings.stored_python())
        self.python_edit.setPlaceholderText(f"auto: {settings.python_choice().value or 'none found'}")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.python_edit)
        row.addWidget(browse)
        holder = QWidget()
        holder.setLayout(row)
        row.setContentsMargins(0, 0, 0, 0)
        form.addRow("Python interpreter", holder)
        self.model_edit = QLineEdit(settings.stored_model())
        self.model_edit.setPlaceholderText("default: the CLI's model (rogerferrod/RSICRC); hub id or folder")
        form.addRow("Model", self.model_edit)
        self.clip_model_edit = QLineEdit(settings.stored_clip_model())
        self.clip_model_edit.setPlaceholderText("default: hf-hub:joaodaniel/RS-M-CLIP; hub id or folder")
        form.addRow("RS-M-CLIP model", self.clip_model_edit)
        self.device_combo = QComboBox()
        self.device_combo.addItems(settings.DEVICES)
        self.device_combo.setCurrentText(settings.device())
        form.addRow("Device", self.device_combo)
        self.field_edit = QLineEdit(settings.search_field())
        form.addRow("Search score field", self.field_edit)
        overrides = [n for n in ("RSICRC_PYTHON", "RSICRC_MODEL") if os.environ.get(n)]
        note = QLabel("Overridden by the environment: " + ", ".join(overrides)) if overrides else None
        self.status = QLabel("")
        self.status.setWordWrap(True)
        check = QPushButton("Check environment")
        check.clicked.connect(self._check)
        setup = QPushButton("Set up environment…")
        setup.setEnabled(on_setup is not None)
        if on_setup is not None:
            setup.clicked.connect(on_setup)
        actions = QHBoxLayout()
        actions.addWidget(check)
        actions.addWidget(setup)
        actions.addStretch(1)
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        if note:
            layout.addWidget(note)
        layout.addLayout(actions)
        layout.addWidget(self.status)
        layout.addWidget(buttons)

    def _browse(self):
        path, _ = QFileDialog.getOpenFileName(self, "Python interpreter", self.python_edit.text())
        if path:
            self.python_edit.setText(path)

    def _check(self):
        python = self.python_edit.text().strip() or None
        self.status.setText("Checking… (starting the interpreter and importing torch)")
        task = QgsTask.fromFunction("RSICRC: checking the Python environment",
                                    lambda _task: check_environment(python),
                                    on_finished=self._checked)
        self._check_task = task
        QgsApplication.taskManager().addTask(task)

    def _checked(self, exception, status=None):
        if exception is not None or status is None:
            self.status.setText(f"Check failed: {exception}")
        else:
            self.status.setText(("✔ " if status.ok else "✖ ") + status.message)

    def accept(self):
        settings.save(python=self.python_edit.text(), model=self.model_edit.text(),
                      device_name=self.device_combo.currentText(), field=self.field_edit.text(),
                      clip_model=self.clip_model_edit.text())
        super().accept()
