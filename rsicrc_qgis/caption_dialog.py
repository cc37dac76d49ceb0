"""The toolbar dialog: pick BEFORE/AFTER, see the pair checks at once, start a CaptionTask."""
import html
from pathlib import Path

from qgis.core import QgsMapLayerProxyModel, QgsProject
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
)

from . import caption_job, pair_checks, settings

MARKS = {pair_checks.OK: ("✔", "#1a7f37"), pair_checks.WARN: ("⚠", "#9a6700"),
         pair_checks.ERROR: ("✖", "#cf222e")}


class CaptionDialog(QDialog):
    # (args, output path, layer name) when the user presses Run with a usable set-up
    runRequested = pyqtSignal(list, str, str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("RSICRC: caption changes between two rasters")
        self.setMinimumWidth(620)
        self.before_combo = QgsMapLayerComboBox()
        self.after_combo = QgsMapLayerComboBox()
        for combo in (self.before_combo, self.after_combo):
            combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
            combo.setAllowEmptyLayer(True)
            combo.setLayer(None)
        self._preselect()
        self.bands_edit = QLineEdit()
        self.bands_edit.setPlaceholderText("the rasters' RGB bands; or red,green,blue like 4,3,2")
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(32, 4096)
        self.tile_spin.setSingleStep(32)
        self.tile_spin.setValue(caption_job.DEFAULT_TILE_SIZE)
        self.tile_spin.setSuffix(" px")
        self.queries_edit = QPlainTextEdit()
        self.queries_edit.setPlaceholderText("optional, one a line: e.g. new buildings")
        self.queries_edit.setFixedHeight(64)
        self.model_edit = QLineEdit(settings.model_choice().value)
        self.model_edit.setPlaceholderText("default model (hub id or local folder)")
        self.device_combo = QComboBox()
        self.device_combo.addItems(settings.DEVICES)
        self.device_combo.setCurrentText(settings.device())
        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.SaveFile)
        self.output_widget.setFilter("GeoPackage (*.gpkg)")
        self.reproject_check = QCheckBox("Reproject/resample AFTER onto BEFORE's grid")
        self.clip_check = QCheckBox("Also store RS-M-CLIP embeddings (multilingual search)")
        self.checks_label = QLabel()
        self.checks_label.setWordWrap(True)
        self.checks_label.setObjectName("pairChecks")

        pair = QFormLayout()
        pair.addRow("BEFORE", self.before_combo)
        pair.addRow("AFTER", self.after_combo)
        pair.addRow("Bands", self.bands_edit)
        pair.addRow("", self.reproject_check)
        pair_box = QGroupBox("Rasters")
        pair_box.setLayout(pair)
        run = QFormLayout()
        run.addRow("Tile size", self.tile_spin)
        run.addRow("Queries", self.queries_edit)
        run.addRow("Model", self.model_edit)
        run.addRow("Device", self.device_combo)
        run.addRow("", self.clip_check)
        run.addRow("Output", self.output_widget)
        run_box = QGroupBox("Run")
        run_box.setLayout(run)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Close)
        self.buttons.button(QDialogButtonBox.Ok).setText("Run")
        self.buttons.accepted.connect(self.run)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(pair_box)
        layout.addWidget(self.checks_label)
        layout.addWidget(run_box)
        layout.addWidget(self.buttons)
        # Connected last: every widget the checks read must exist before the first change.
        for combo in (self.before_combo, self.after_combo):
            combo.layerChanged.connect(self.update_checks)
        self.bands_edit.textChanged.connect(self.update_checks)
        self.tile_spin.valueChanged.connect(self.update_checks)
        self.output_widget.fileChanged.connect(self.update_checks)
        self.reproject_check.toggled.connect(self.update_checks)
        self.update_checks()

    def _preselect(self):
        rasters = [lyr for lyr in QgsProject.instance().layerTreeRoot().layerOrder()
                   if lyr.type() == lyr.RasterLayer]
        if len(rasters) >= 2:
            # Layer order is top first; the older image is usually loaded first (lower).
            self.before_combo.setLayer(rasters[1])
            self.after_combo.setLayer(rasters[0])

    def bands(self):
        text = self.bands_edit.text().strip()
        try:
            value = caption_job.parse_bands(text)
        except caption_job.BadParameter:
            return None, False
        return ([int(b) for b in value.split(",")] if value else None), True

    def current_checks(self):
        before, after = self.before_combo.currentLayer(), self.after_combo.currentLayer()
        if before is None or after is None:
            return [pair_checks.Check(pair_checks.WARN, "Choose the BEFORE and AFTER rasters.")]
        bands, ok = self.bands()
        if not ok:
            return [pair_checks.Check(pair_checks.ERROR, "Bands: give three band numbers from 1, "
                                                         "like 4,3,2.")]
        checks = pair_checks.check_pair(before, after, bands, self.tile_spin.value(),
                                        self.reproject_check.isChecked())
        if before.id() == after.id():
            checks.insert(0, pair_checks.Check(pair_checks.WARN, "BEFORE and AFTER are the same layer."))
        return checks

    def update_checks(self, *_):
        checks = self.current_checks()
        self.checks_label.setText("<br>".join(
            f'<span style="color:{MARKS[c.level][1]}">{MARKS[c.level][0]} {html.escape(c.text)}</span>'
            for c in checks))
        before, after = self.before_combo.currentLayer(), self.after_combo.currentLayer()
        if before is not None and after is not None and not self.output_widget.filePath():
            src = Path(before.source().split("|")[0])
            if src.parent.is_dir():
                self.output_widget.setFilePath(str(src.parent / f"{src.stem}_changes.gpkg"))
        ready = (before is not None and after is not None and not pair_checks.blocking(checks)
                 and bool(self.output_widget.filePath().strip()))
        self.buttons.button(QDialogButtonBox.Ok).setEnabled(ready)
        self.last_checks = checks
        return checks

    def build_args(self):
        output = self.output_widget.filePath().strip()
        if output and not output.lower().endswith(".gpkg"):
            output += ".gpkg"
        before = caption_job.raster_path(self.before_combo.currentLayer(), "BEFORE")
        after = caption_job.raster_path(self.after_combo.currentLayer(), "AFTER")
        output = caption_job.output_path(output)
        bands = caption_job.parse_bands(self.bands_edit.text())
        args = caption_job.caption_args(
            before, after, output, bands, self.tile_spin.value(),
            caption_job.parse_queries(self.queries_edit.toPlainText()),
            self.model_edit.text().strip(), self.device_combo.currentText(),
            self.reproject_check.isChecked(), self.clip_check.isChecked())
        return args, output

    def run(self):
        if pair_checks.blocking(self.update_checks()):
            return
        try:
            args, output = self.build_args()
        except caption_job.BadParameter as exc:
            self.checks_label.setText(
                f'<span style="color:{MARKS[pair_checks.ERROR][1]}">✖ {html.escape(str(exc))}</span>')
            return
        name = (f"Changes {self.before_combo.currentLayer().name()} → "
                f"{self.after_combo.currentLayer().name()}")
        self.runRequested.emit(args, output, name)
        self.accept()
