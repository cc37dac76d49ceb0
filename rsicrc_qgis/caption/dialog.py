"""The toolbar dialog: pick BEFORE/AFTER (and later dates for a time series), see the checks at
once, start a CaptionTask.

Every run option of the CLI is here, built from its one definition (pipeline/caption_params.py):
the everyday ones under "Run", the rest under "Advanced".
"""
import html
from pathlib import Path

from qgis.core import QgsProject
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QListWidget,
                                 QListWidgetItem, QPushButton, QVBoxLayout, QWidget)

from . import job as caption_job, pair_checks
from ...pipeline.caption_params import ParamError, band_list, check_value, form_options
from ..qgis_enums import SAVE_FILE
from .area_chooser import AreaChooser, AreaError
from .option_widgets import OptionWidget, raster_layer_combo

AREA_KINDS = ("extent", "area")

MARKS = {pair_checks.OK: ("✔", "#1a7f37"), pair_checks.WARN: ("⚠", "#9a6700"),
         pair_checks.ERROR: ("✖", "#cf222e")}


class CaptionDialog(QDialog):
    # (args, output path, layer name, the worker's added environment: a web layer's login) when the
    # user presses Run with a usable set-up
    runRequested = pyqtSignal(list, str, str, dict)

    def __init__(self, parent=None, canvas=None):
        super().__init__(parent)
        self.setWindowTitle("RSICRC: caption changes between rasters")
        self.setMinimumWidth(620)
        self.before_combo = raster_layer_combo()
        self.after_combo = raster_layer_combo()
        self._preselect()
        self._make_later_dates()
        # The area options are one "Area" chooser here (whole overlap, map view, a layer's features).
        self.options = {name: OptionWidget(name, opt, default) for name, opt, default in form_options()
                        if opt.kind not in AREA_KINDS}
        self.area_chooser = AreaChooser(canvas)
        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(SAVE_FILE)
        self.output_widget.setFilter("GeoPackage (*.gpkg)")
        self.checks_label = QLabel()
        self.checks_label.setWordWrap(True)
        self.checks_label.setObjectName("pairChecks")

        pair = QFormLayout()
        pair.addRow("BEFORE", self.before_combo)
        pair.addRow("AFTER", self.after_combo)
        pair.addRow("Later dates (oldest first)", self.later_box)
        pair_box = QGroupBox("Rasters")
        pair_box.setLayout(pair)
        run, advanced = QFormLayout(), QFormLayout()
        for option in self.options.values():
            form = advanced if option.opt.advanced else run
            form.addRow("" if option.opt.kind == "bool" else option.opt.label, option.widget)
        run.addRow("Area", self.area_chooser)
        run.addRow("Output", self.output_widget)
        run_box = QGroupBox("Run")
        run_box.setLayout(run)
        self.advanced_box = QgsCollapsibleGroupBox("Advanced")
        self.advanced_box.setLayout(advanced)
        self.advanced_box.setCollapsed(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Close)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Run")
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
        self.later_list.model().rowsInserted.connect(self.update_checks)
        self.later_list.model().rowsRemoved.connect(self.update_checks)
        self.later_list.model().rowsMoved.connect(self.update_checks)
        self.later_list.currentRowChanged.connect(self._update_later_buttons)
        QgsProject.instance().layersWillBeRemoved.connect(self._forget_later)
        for option in self.options.values():
            option.connect(self.update_checks)
        self.output_widget.fileChanged.connect(self.update_checks)
        self.area_chooser.changed.connect(self.update_checks)
        self.update_checks()

    def _preselect(self):
        rasters = [lyr for lyr in QgsProject.instance().layerTreeRoot().layerOrder()
                   if lyr.type() == lyr.RasterLayer]
        if len(rasters) >= 2:
            # Layer order is top first; the older image is usually loaded first (lower).
            self.before_combo.setLayer(rasters[1])
            self.after_combo.setLayer(rasters[0])

    def _make_later_dates(self):
        """A time series: the dates after AFTER, which the user adds from the project, reorders
        and removes; the list holds layer ids, the names are what it shows."""
        self.later_list = QListWidget()
        self.later_list.setObjectName("laterDates")
        self.later_list.setMaximumHeight(90)
        self.later_combo = raster_layer_combo()
        self.add_later_button = QPushButton("Add")
        self.add_later_button.setToolTip("Add the chosen raster after the dates listed")
        self.up_later_button, self.down_later_button = QPushButton("Up"), QPushButton("Down")
        self.remove_later_button = QPushButton("Remove")
        self.add_later_button.clicked.connect(lambda: self.add_later(self.later_combo.currentLayer()))
        self.up_later_button.clicked.connect(lambda: self.move_later(-1))
        self.down_later_button.clicked.connect(lambda: self.move_later(1))
        self.remove_later_button.clicked.connect(self.remove_later)
        self.later_combo.layerChanged.connect(self._update_later_buttons)
        adding, moving = QHBoxLayout(), QHBoxLayout()
        adding.addWidget(self.later_combo, 1)
        adding.addWidget(self.add_later_button)
        for button in (self.up_later_button, self.down_later_button, self.remove_later_button):
            moving.addWidget(button)
        moving.addStretch(1)
        box = QVBoxLayout()
        box.setContentsMargins(0, 0, 0, 0)
        box.addLayout(adding)
        box.addWidget(self.later_list)
        box.addLayout(moving)
        self.later_box = QWidget()
        self.later_box.setLayout(box)
        self.later_box.setToolTip("Optional: more dates for a time series, oldest first. Each date is "
                                  "captioned against the one before it on the same tiles.")
        self._update_later_buttons()

    def later_layers(self):
        """The later dates' layers, in the list's order (oldest first)."""
        project = QgsProject.instance()
        layers = (project.mapLayer(self.later_list.item(row).data(Qt.ItemDataRole.UserRole))
                  for row in range(self.later_list.count()))
        return [layer for layer in layers if layer is not None]

    def add_later(self, layer):
        if layer is None:
            return
        item = QListWidgetItem(layer.name())
        item.setData(Qt.ItemDataRole.UserRole, layer.id())
        item.setToolTip(layer.source())
        self.later_list.addItem(item)
        self.later_list.setCurrentItem(item)

    def remove_later(self):
        row = self.later_list.currentRow()
        if row >= 0:
            self.later_list.takeItem(row)
        self._update_later_buttons()

    def move_later(self, step):
        """Move the selected date `step` places (-1: earlier, 1: later)."""
        row = self.later_list.currentRow()
        target = row + step
        if row < 0 or not 0 <= target < self.later_list.count():
            return
        item = self.later_list.takeItem(row)
        self.later_list.insertItem(target, item)
        self.later_list.setCurrentRow(target)

    def done(self, result):  # noqa: N802 - Qt signature
        # The project outlives the dialog: stop hearing of its layers once the dialog is over.
        try:
            QgsProject.instance().layersWillBeRemoved.disconnect(self._forget_later)
        except TypeError:  # already disconnected
            pass
        super().done(result)

    def _forget_later(self, layer_ids):
        for row in reversed(range(self.later_list.count())):
            if self.later_list.item(row).data(Qt.ItemDataRole.UserRole) in layer_ids:
                self.later_list.takeItem(row)

    def _update_later_buttons(self, *_):
        row, count = self.later_list.currentRow(), self.later_list.count()
        self.add_later_button.setEnabled(self.later_combo.currentLayer() is not None)
        self.up_later_button.setEnabled(row > 0)
        self.down_later_button.setEnabled(0 <= row < count - 1)
        self.remove_later_button.setEnabled(row >= 0)

    def dates(self):
        """Every chosen date, oldest first: BEFORE, AFTER, then the later ones."""
        return [self.before_combo.currentLayer(), self.after_combo.currentLayer(), *self.later_layers()]

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
        checks = pair_checks.check_dates(self.dates(), bands, self.value("tile_size"),
                                         self.value("reproject"))
        if self.area_chooser.is_whole() and any(d is not None and d.providerType() == "wms" for d in self.dates()):
            checks.append(pair_checks.Check(pair_checks.ERROR, "A web layer covers the world: choose an Area "
                                                               "(the map view, or a layer's features)."))
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
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(ready)
        return checks

    def build_args(self):
        output = self.output_widget.filePath().strip()
        if output and not output.lower().endswith(".gpkg"):
            output += ".gpkg"
        values = {name: option.value() for name, option in self.options.items()}
        resolution = values.get("target_resolution")
        values["before"] = caption_job.raster_path(self.before_combo.currentLayer(), "BEFORE", resolution)
        values["after"] = caption_job.raster_path(self.after_combo.currentLayer(), "AFTER", resolution)
        values["later"] = caption_job.later_paths(self.later_layers(), resolution)
        try:
            values.update(self.area_chooser.values())
        except AreaError as exc:
            raise caption_job.BadParameter(f"Area: {exc}.") from None
        self.worker_env = caption_job.worker_login(self.dates())
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
        name = "Changes " + " → ".join(layer.name() for layer in self.dates())
        self.runRequested.emit(args, output, name, self.worker_env)
        self.accept()
