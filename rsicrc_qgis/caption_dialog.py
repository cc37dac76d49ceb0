"""The toolbar dialog: pick BEFORE/AFTER, see the pair checks at once, start a CaptionTask.

Every run option of the CLI is here, built from its one definition (pipeline/caption_params.py):
the everyday ones under "Run", the rest under "Advanced".
"""
import html
from pathlib import Path

from qgis.core import QgsMapLayerProxyModel, QgsProject
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QGroupBox, QLabel, QVBoxLayout

from ..pipeline.caption_params import ParamError, band_list, check_value, form_options
from . import caption_job, pair_checks
from .option_widgets import OptionWidget

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
        self.options = {name: OptionWidget(name, opt, default) for name, opt, default in form_options()}
        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.SaveFile)
        self.output_widget.setFilter("GeoPackage (*.gpkg)")
        self.checks_label = QLabel()
        self.checks_label.setWordWrap(True)
        self.checks_label.setObjectName("pairChecks")

        pair = QFormLayout()
        pair.addRow("BEFORE", self.before_combo)
        pair.addRow("AFTER", self.after_combo)
        pair_box = QGroupBox("Rasters")
        pair_box.setLayout(pair)
        run, advanced = QFormLayout(), QFormLayout()
        for option in self.options.values():
            form = advanced if option.opt.advanced else run
            form.addRow("" if option.opt.kind == "bool" else option.opt.label, option.widget)
        run.addRow("Output", self.output_widget)
        run_box = QGroupBox("Run")
        run_box.setLayout(run)
        self.advanced_box = QgsCollapsibleGroupBox("Advanced")
        self.advanced_box.setLayout(advanced)
        self.advanced_box.setCollapsed(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Close)
        self.buttons.button(QDialogButtonBox.Ok).setText("Run")
        self.buttons.accepted.connect(self.run)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(pair_box)
        layout.addWidget(self.checks_label)
        layout.addWidget(run_box)
        layout.addWidget(self.advanced_box)
        layout.addWidget(self.buttons)
        # Connected last: every widget the checks read must exist before the first change.
        for combo in (self.before_combo, self.after_combo):
            combo.layerChanged.connect(self.update_checks)
        for option in self.options.values():
            option.connect(self.update_checks)
        self.output_widget.fileChanged.connect(self.update_checks)
        self.update_checks()

    def _preselect(self):
        rasters = [lyr for lyr in QgsProject.instance().layerTreeRoot().layerOrder()
                   if lyr.type() == lyr.RasterLayer]
        if len(rasters) >= 2:
            # Layer order is top first; the older image is usually loaded first (lower).
            self.before_combo.setLayer(rasters[1])
            self.after_combo.setLayer(rasters[0])

    def value(self, name):
        return self.options[name].value()

    def bands(self):
        """(band list or None, usable?) from the Bands field."""
        try:
            return band_list(check_value("bands", self.value("bands"))), True
        except ParamError:
            return None, False

    def current_checks(self):
        before, after = self.before_combo.currentLayer(), self.after_combo.currentLayer()
        if before is None or after is None:
            return [pair_checks.Check(pair_checks.WARN, "Choose the BEFORE and AFTER rasters.")]
        bands, ok = self.bands()
        if not ok:
            return [pair_checks.Check(pair_checks.ERROR, "Bands: give three band numbers from 1, "
                                                         "like 4,3,2.")]
        checks = pair_checks.check_pair(before, after, bands, self.value("tile_size"),
                                        self.value("reproject"))
        if before.id() == after.id():
            checks.insert(0, pair_checks.Check(pair_checks.WARN, "BEFORE and AFTER are the same layer."))
        return checks

    def update_checks(self, *_):
        for option in self.options.values():
            if option.opt.requires:
                option.widget.setEnabled(bool(self.value(option.opt.requires)))
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
        return checks

    def build_args(self):
        output = self.output_widget.filePath().strip()
        if output and not output.lower().endswith(".gpkg"):
            output += ".gpkg"
        values = {name: option.value() for name, option in self.options.items()}
        values["before"] = caption_job.raster_path(self.before_combo.currentLayer(), "BEFORE")
        values["after"] = caption_job.raster_path(self.after_combo.currentLayer(), "AFTER")
        values["output"] = output = caption_job.output_path(output)
        return caption_job.caption_args(values), output

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
