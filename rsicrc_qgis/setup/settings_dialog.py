"""RSICRC settings: interpreter, model, device, with a "Check" button that starts the Python.

The dialog also shows which device the worker will use (CUDA GPU and its memory, Apple MPS, or
the CPU and why), asked of the worker in the chosen environment off QGIS's main thread when the
dialog opens and whenever the interpreter check or the device choice changes, and warns when an
NVIDIA GPU is present that torch cannot use, with the command that fixes it.
"""
import os

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                                 QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget)

from .. import settings
from ..worker.device_check import check_device
from ..worker.environment import check_environment


class SettingsDialog(QDialog):
    deviceChecked = pyqtSignal(object)  # the DeviceStatus shown

    def __init__(self, parent=None, on_setup=None, device_checker=check_device):
        super().__init__(parent)
        self.setWindowTitle("RSICRC settings")
        self.setMinimumWidth(560)
        self._check_task = None
        self._device_task = None
        self._device_checker = device_checker
        self._device_round = 0
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
        self.device_status = QLabel("")
        self.device_status.setWordWrap(True)
        self.device_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.device_warning = QLabel("")
        self.device_warning.setWordWrap(True)
        self.device_warning.setStyleSheet("color: #b35900;")
        self.device_warning.setVisible(False)
        self.device_fix = QLineEdit("")  # one line to copy the command from, however long
        self.device_fix.setReadOnly(True)
        self.device_fix.setVisible(False)
        device_box = QGroupBox("Device the worker will use")
        device_rows = QVBoxLayout(device_box)
        for widget in (self.device_status, self.device_warning, self.device_fix):
            device_rows.addWidget(widget)
        self.device_combo.currentTextChanged.connect(lambda _text: self.check_device())
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
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(device_box)
        if note:
            layout.addWidget(note)
        layout.addLayout(actions)
        layout.addWidget(self.status)
        layout.addWidget(buttons)
        self.check_device()

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
        self.check_device()

    def check_device(self):
        """Ask the worker (off the main thread) which device it will use with these choices."""
        self._device_round += 1
        round_, python = self._device_round, self.python_edit.text().strip() or None
        device = self.device_combo.currentText()
        self.device_status.setText(f"Checking {device}… (starting the worker and importing torch)")
        checker = self._device_checker
        task = QgsTask.fromFunction("RSICRC: checking the device", lambda _task: checker(python, device),
                                    on_finished=lambda exc, status=None: self._device_checked(round_, exc, status))
        self._device_task = task
        QgsApplication.taskManager().addTask(task)

    def _device_checked(self, round_, exception, status=None):
        if round_ != self._device_round:  # an answer for an earlier choice
            return
        try:
            if exception is not None or status is None:
                self.device_status.setText(f"Device check failed: {exception}")
                self.device_warning.setVisible(False)
                self.device_fix.setVisible(False)
                self.deviceChecked.emit(None)
                return
            self.device_status.setText(("" if status.ok else "✖ ") + status.text)
            self.device_warning.setText(f"⚠ {status.warning}" + (" Fix:" if status.fix else ""))
            self.device_warning.setVisible(bool(status.warning))
            self.device_fix.setText(status.fix or "")
            self.device_fix.setCursorPosition(0)
            self.device_fix.setVisible(bool(status.fix))
            self._fit_height()
            self.deviceChecked.emit(status)
        except RuntimeError:  # the dialog was closed and deleted meanwhile
            pass

    def _fit_height(self):
        # Wrapped labels need more height once their text arrives; the dialog does not grow by itself.
        self.layout().activate()
        need = self.heightForWidth(self.width()) if self.hasHeightForWidth() else self.sizeHint().height()
        if need > self.height():
            self.resize(self.width(), need)

    def accept(self):
        settings.save(python=self.python_edit.text(), model=self.model_edit.text(),
                      device_name=self.device_combo.currentText(), field=self.field_edit.text(),
                      clip_model=self.clip_model_edit.text())
        super().accept()
