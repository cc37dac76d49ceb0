"""The "What changed here?" panel: which pair the map tool reads, and the answer to a click."""
import html

from qgis.core import QgsProject
from qgis.gui import QgsDockWidget, QgsSpinBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QCheckBox, QFormLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from .. import settings
from ...pipeline.caption_params import ParamError, check_value, options
from ..caption.option_widgets import raster_layer_combo

_OPTIONS = {name: opt for name, opt, _ in options()}
_TILE = _OPTIONS["tile_size"]
ERROR_COLOUR, WAIT_COLOUR, TEXT_COLOUR = "#cf222e", "#9a6700", "#404040"


class ClickPanel(QgsDockWidget):
    def __init__(self, parent=None):
        super().__init__("RSICRC: what changed here?", parent)
        self.setObjectName("RsicrcClickPanel")
        self.before_combo = raster_layer_combo()
        self.after_combo = raster_layer_combo()
        self.tile_spin = QgsSpinBox()
        self.tile_spin.setRange(int(_TILE.minimum), int(_TILE.maximum))
        self.tile_spin.setClearValue(256)
        self.tile_spin.setValue(256)
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setToolTip("Side of the window centred on the click (" + _TILE.help + ")")
        self.bands_edit = QLineEdit()
        self.bands_edit.setPlaceholderText("the rasters' RGB bands, or e.g. 4,3,2")
        self.bands_edit.setToolTip(_OPTIONS["bands"].help)
        self.reproject_check = QCheckBox(_OPTIONS["reproject"].label)
        self.reproject_check.setToolTip(_OPTIONS["reproject"].help)
        self.clip_check = QCheckBox("Land cover before → after (RS-M-CLIP)")
        self.clip_check.setToolTip("Also classify both dates with RS-M-CLIP (its model is set in RSICRC settings)")
        self.status_label = self._label("statusLabel")
        self.caption_label = self._label("captionLabel")
        self.caption_label.setStyleSheet("font-size: 14pt; font-weight: bold;")
        self.details_label = self._label("detailsLabel")
        form = QFormLayout()
        form.addRow("BEFORE", self.before_combo)
        form.addRow("AFTER", self.after_combo)
        form.addRow("Window", self.tile_spin)
        form.addRow(_OPTIONS["bands"].label, self.bands_edit)
        form.addRow("", self.reproject_check)
        form.addRow("", self.clip_check)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addLayout(form)
        layout.addWidget(self.status_label)
        layout.addWidget(self.caption_label)
        layout.addWidget(self.details_label)
        layout.addStretch(1)
        self.setWidget(body)
        self.load_pair()
        for combo in (self.before_combo, self.after_combo):
            combo.layerChanged.connect(self._remember_pair)
        self.show_message("Click the map where BEFORE and AFTER overlap.")

    @staticmethod
    def _label(name):
        label = QLabel()
        label.setObjectName(name)
        label.setWordWrap(True)
        label.setTextFormat(Qt.TextFormat.RichText)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        return label

    # --- the pair -------------------------------------------------------------------------
    def load_pair(self):
        """The pair last chosen (here or in the caption dialog), else the two top rasters."""
        project = QgsProject.instance()
        before_id, after_id = settings.last_pair()
        before, after = project.mapLayer(before_id), project.mapLayer(after_id)
        if before is None or after is None:
            rasters = [lyr for lyr in project.layerTreeRoot().layerOrder() if lyr.type() == lyr.RasterLayer]
            if len(rasters) < 2:
                return
            before, after = rasters[1], rasters[0]  # as the caption dialog: the older one loaded first
        for combo, layer in ((self.before_combo, before), (self.after_combo, after)):
            combo.blockSignals(True)
            combo.setLayer(layer)
            combo.blockSignals(False)

    def set_pair(self, before, after):
        self.before_combo.setLayer(before)
        self.after_combo.setLayer(after)

    def _remember_pair(self, *_):
        before, after = self.before_combo.currentLayer(), self.after_combo.currentLayer()
        if before is not None and after is not None:
            settings.save_last_pair(before.id(), after.id())

    def pair(self):
        return self.before_combo.currentLayer(), self.after_combo.currentLayer()

    def bands(self):
        """The Bands field as the option takes it ("4,3,2" or None); ValueError saying what is wrong."""
        try:
            return check_value("bands", self.bands_edit.text())
        except ParamError:
            raise ValueError("Bands: give three band numbers from 1, like 4,3,2 (or leave it empty).") from None

    # --- what is shown ----------------------------------------------------------------------
    def _status(self, text, colour):
        self.status_label.setText(f'<span style="color:{colour}">{text}</span>')

    def clear_answer(self):
        self.caption_label.clear()
        self.details_label.clear()

    def show_message(self, text, error=False):
        self._status(html.escape(text), ERROR_COLOUR if error else TEXT_COLOUR)
        if error:
            self.clear_answer()

    def show_busy(self, text):
        self._status(html.escape(text), WAIT_COLOUR)

    def show_answer(self, answer):
        score = answer.get("change_score")
        self.caption_label.setText(html.escape(str(answer.get("caption") or "")))
        verdict = "<b>changed</b>" if answer.get("changed") else "no change"
        lines = [f"Change score <b>{score:.2f}</b> — {verdict}" if isinstance(score, (int, float))
                 else f"Change score: — ({verdict})"]
        labels = answer.get("clip")
        if labels:
            arrow = "→" if labels.get("class_changed") else "= "
            lines.append(f"Land cover: {html.escape(str(labels['before_class']))} "
                         f"({labels['before_class_prob']:.0%}) {arrow} "
                         f"{html.escape(str(labels['after_class']))} ({labels['after_class_prob']:.0%})")
        window = answer.get("window") or {}
        bounds = answer.get("bounds")
        if bounds:
            lines.append(f"Window {window.get('size', '?')} px at column {window.get('col', '?')}, row "
                         f"{window.get('row', '?')}: {bounds[0]:.2f}, {bounds[1]:.2f} – {bounds[2]:.2f}, "
                         f"{bounds[3]:.2f} ({html.escape(str(answer.get('crs_name') or ''))})")
        if answer.get("nodata_fraction"):
            lines.append(f"{answer['nodata_fraction']:.0%} of the window is nodata.")
        if answer.get("attention") is not None:
            lines.append("The map shows where the model looked (red: most).")
        for note in answer.get("warnings") or []:
            lines.append(f'<span style="color:{WAIT_COLOUR}">{html.escape(str(note))}</span>')
        self.details_label.setText("<br>".join(lines))
        self._status("Done. Click elsewhere for another window.", TEXT_COLOUR)
