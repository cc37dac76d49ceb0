"""Dialog widgets for the run options, one per option of pipeline/caption_params.py.

Each widget takes its kind, bounds, label and help from the option's definition, so the dialog
offers every option the CLI has, with the same defaults and limits.
"""
from qgis.gui import QgsDoubleSpinBox, QgsFileWidget, QgsMapLayerComboBox, QgsSpinBox
from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QLineEdit, QPlainTextEdit

from .. import settings
from ...pipeline.caption_params import DEVICES
from ..qgis_enums import RASTER_LAYERS, SAVE_FILE

# The plugin's settings stand in for these when the form leaves them empty.
SETTING_DEFAULTS = {"model": settings.model_choice, "clip_model": settings.clip_model_choice}


def raster_layer_combo():
    """A picker of the project's raster layers that starts empty: a date is the user's choice."""
    combo = QgsMapLayerComboBox()
    combo.setFilters(RASTER_LAYERS)
    combo.setAllowEmptyLayer(True)
    combo.setLayer(None)
    return combo


class OptionWidget:
    """One option's widget: value() in the option's own terms (None when left empty)."""

    def __init__(self, name, opt, default):
        self.name, self.opt, self.default = name, opt, default
        self.widget = self._make()
        self.widget.setToolTip(opt.help)
        self.widget.setObjectName(f"option_{name}")
        self.set_value(self._initial())

    def _initial(self):
        if self.name in SETTING_DEFAULTS:
            return SETTING_DEFAULTS[self.name]().value or None
        if self.opt.kind == "device":
            return settings.device()
        return self.default

    def _make(self):
        kind, opt = self.opt.kind, self.opt
        if kind == "bool":
            return QCheckBox(opt.label)
        if kind == "int":
            box = QgsSpinBox()
            box.setRange(int(opt.minimum), int(opt.maximum))
            box.setClearValue(int(self.default))
            return box
        if kind == "float":
            box = QgsDoubleSpinBox()
            box.setDecimals(3)
            box.setRange(opt.minimum, opt.maximum)
            box.setSingleStep(0.05 if opt.maximum <= 1 else 0.5)
            if self.default is None:
                # The lowest value stands for "not set": the option's minimum is excluded anyway.
                box.setSpecialValueText("not set")
                box.setClearValue(opt.minimum)
            else:
                box.setClearValue(self.default)
            return box
        if kind == "texts":
            edit = QPlainTextEdit()
            edit.setPlaceholderText("optional, one a line: e.g. new buildings")
            edit.setFixedHeight(64)
            return edit
        if kind == "raster_output":
            files = QgsFileWidget()
            files.setStorageMode(SAVE_FILE)
            files.setFilter("GeoTIFF (*.tif *.tiff)")
            files.lineEdit().setPlaceholderText("optional: none")
            return files
        if kind in ("device", "choice"):
            combo = QComboBox()
            combo.addItems(self.choices())
            return combo
        edit = QLineEdit()
        edit.setPlaceholderText(opt.help)
        return edit

    def choices(self):
        return list(DEVICES) if self.opt.kind == "device" else list(self.opt.choices)

    def value(self):
        w, kind = self.widget, self.opt.kind
        if kind == "bool":
            return w.isChecked()
        if kind == "int":
            return w.value()
        if kind == "float":
            return None if self.default is None and w.value() <= self.opt.minimum else w.value()
        if kind == "texts":
            return [q.strip() for q in w.toPlainText().splitlines() if q.strip()]
        if kind in ("device", "choice"):
            return w.currentText()
        if kind == "raster_output":
            path = w.filePath().strip()
            if path and not path.lower().endswith((".tif", ".tiff")):
                path += ".tif"  # what the file dialog's filter promises
            return path or None
        return w.text().strip() or None

    def set_value(self, value):
        w, kind = self.widget, self.opt.kind
        if kind == "bool":
            w.setChecked(bool(value))
        elif kind in ("int", "float"):
            w.setValue(self.opt.minimum if value is None else value)
        elif kind == "texts":
            w.setPlainText("\n".join(value or []))
        elif kind in ("device", "choice"):
            w.setCurrentText(value or self.choices()[0])
        elif kind == "raster_output":
            w.setFilePath("" if value is None else str(value))
        else:
            w.setText("" if value is None else str(value))

    def connect(self, slot):
        w, kind = self.widget, self.opt.kind
        signal = {"bool": "toggled", "int": "valueChanged", "float": "valueChanged",
                  "texts": "textChanged", "device": "currentTextChanged", "choice": "currentTextChanged",
                  "raster_output": "fileChanged"}.get(kind, "textChanged")
        getattr(w, signal).connect(slot)
