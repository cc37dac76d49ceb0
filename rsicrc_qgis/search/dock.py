"""The search dock: type a text, press Enter; every tile of the chosen result layer is scored
from its stored embeddings, the score written through the edit buffer, the best selected,
listed best first and zoomed to."""
import html

from qgis.core import QgsApplication, QgsTask
from qgis.gui import QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                                 QSpinBox, QVBoxLayout, QWidget)

from . import core as search_core, layer_search
from .. import settings
from ..layers import result_layer
from ..qgis_enums import POLYGON_LAYERS
from ..worker.environment import EnvironmentProblem
from ..worker.process import Canceled
from ..worker.serve_client import WorkerError, shared_worker

METHOD_LABELS = {search_core.MODE_CAPTION: "RSICRC (caption model, English)",
                 search_core.MODE_CLIP: "Multilingual (RS-M-CLIP)"}


class SearchDock(QgsDockWidget):
    # (ok, message) once a search is over, on the main thread
    searchFinished = pyqtSignal(bool, str)
    environmentProblem = pyqtSignal(str)

    def __init__(self, iface, parent=None):
        super().__init__("RSICRC search", parent)
        self.setObjectName("RsicrcSearchDock")
        self.iface = iface
        self._task = None
        self._closing = False
        self._meta = None
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(POLYGON_LAYERS)
        self.layer_combo.layerChanged.connect(self._layer_changed)
        self.method_combo = QComboBox()
        self.method_combo.currentIndexChanged.connect(self._method_changed)
        self.when_combo = QComboBox()
        self.when_combo.addItems(["after", "before"])
        self.appeared_check = QCheckBox("appeared (matches AFTER, not BEFORE)")
        self.top_spin = QSpinBox()
        self.top_spin.setRange(1, 10000)
        self.top_spin.setValue(10)
        self.query_edit = QLineEdit()
        self.query_edit.setPlaceholderText("e.g. new buildings near the road — Enter to search")
        self.query_edit.setClearButtonEnabled(True)
        self.query_edit.returnPressed.connect(self.search)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextFormat(Qt.TextFormat.RichText)
        self.results = QListWidget()
        self.results.itemClicked.connect(self._zoom_to_item)
        form = QFormLayout()
        form.addRow("Layer", self.layer_combo)
        form.addRow("Method", self.method_combo)
        form.addRow("Image", self.when_combo)
        form.addRow("", self.appeared_check)
        form.addRow("Select best", self.top_spin)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addLayout(form)
        layout.addWidget(self.query_edit)
        layout.addWidget(self.status_label)
        layout.addWidget(self.results, 1)
        self.setWidget(body)
        self._layer_changed(self.layer_combo.currentLayer())

    # --- layer and method -------------------------------------------------------------
    def set_layer(self, layer):
        self.layer_combo.setLayer(layer)

    def _layer_changed(self, layer):
        self._meta = None
        self.method_combo.blockSignals(True)
        self.method_combo.clear()
        self.method_combo.blockSignals(False)
        if layer is None:
            self._status("Choose a layer made by RSICRC caption.")
            self.query_edit.setEnabled(False)
            return
        try:
            self._meta = result_layer.layer_metadata(layer)
        except result_layer.NotAResultLayer as exc:
            self._status(str(exc), error=True)
            self.query_edit.setEnabled(False)
            return
        modes = [search_core.MODE_CAPTION]
        if result_layer.has_clip(self._meta):
            modes.append(search_core.MODE_CLIP)
        for mode in modes:
            self.method_combo.addItem(METHOD_LABELS[mode], mode)
        self.query_edit.setEnabled(True)
        complete = self._meta.get("complete", True)
        self._status(f"Made by {html.escape(str(self._meta.get('model_source', '?')))}"
                     + ("" if complete else " — <b>incomplete run</b>"))
        self._method_changed()

    def _method_changed(self, *_):
        clip = self.method_combo.currentData() == search_core.MODE_CLIP
        self.when_combo.setEnabled(clip)
        self.appeared_check.setEnabled(clip)

    def _status(self, text, error=False):
        colour = "#cf222e" if error else "#404040"
        self.status_label.setText(f'<span style="color:{colour}">{text}</span>')

    # --- search -------------------------------------------------------------------------
    def search(self):
        layer = self.layer_combo.currentLayer()
        text = self.query_edit.text().strip()
        if self._task is not None:
            self._status("A search is still running.")
            return
        if layer is None or self._meta is None:
            return self._fail("Choose a layer made by RSICRC caption.")
        if not text:
            return self._fail("Type what to look for.")
        mode = self.method_combo.currentData() or search_core.MODE_CAPTION
        field = settings.search_field()
        # A layer the user edits gets the scores in its edit buffer (pending, one undo step);
        # otherwise the task writes them into the file, off the main thread like the reading.
        path = None if layer.isEditable() else result_layer.gpkg_path(layer)
        try:
            layer_search.check_score_field(layer.fields(), field, layer.name())
            layer_search.check_edit_buffer_size(layer)
            prepared = search_core.prepare(layer, self._meta, mode)
            worker = shared_worker(device=settings.device())
        except EnvironmentProblem as exc:
            self.environmentProblem.emit(str(exc))
            return self._fail(html.escape(str(exc)))
        except (layer_search.SearchProblem, result_layer.NotAResultLayer) as exc:
            return self._fail(html.escape(str(exc)))
        when, change = self.when_combo.currentText(), self.appeared_check.isChecked()
        self._status("Searching… (the first search loads the model)")

        def work(task):
            outcome = search_core.score_features(prepared, text, worker, when, change, task.isCanceled)
            if path is not None and not task.isCanceled():
                layer_search.write_scores_to_file(path, field, outcome.fids, outcome.scores, outcome.skipped)
            return outcome

        task = QgsTask.fromFunction(
            f"RSICRC: searching \"{text}\"", work,
            on_finished=lambda exc, outcome=None: self._scored(layer, field, path, exc, outcome))
        self._task = task
        QgsApplication.taskManager().addTask(task)

    def shutdown(self):
        """The plugin is unloading: cancel a running search; its late result must touch nothing."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _scored(self, layer, field, path, exc, outcome):
        if self._closing:
            return
        self._task = None
        if isinstance(exc, EnvironmentProblem):
            self.environmentProblem.emit(str(exc))
            return self._fail(html.escape(str(exc)))
        if (isinstance(exc, Canceled) or (exc is None and outcome is None)
                or (exc is not None and str(exc) == "Task canceled")):
            return self._fail("Search cancelled.")
        if exc is not None:
            known = (WorkerError, layer_search.SearchProblem)
            return self._fail(html.escape(str(exc) if isinstance(exc, known)
                                          else f"{type(exc).__name__}: {exc}"))
        try:
            if path is not None:
                layer_search.reload_after_file_write(layer)
            else:
                layer_search.write_scores_in_edit_buffer(layer, field, outcome.fids, outcome.scores,
                                                         outcome.skipped)
            layer_search.order_by_score(layer, field)
            best = layer_search.select_best(layer, outcome.fids, outcome.scores, self.top_spin.value())
        except layer_search.SearchProblem as exc2:
            return self._fail(html.escape(str(exc2)))
        except Exception as exc2:  # noqa: BLE001 - a slot's exception would vanish, the dock never finish
            return self._fail(html.escape(f"Search failed: {type(exc2).__name__}: {exc2}"))
        self._show(layer, best, dict(zip(outcome.fids, outcome.scores)))
        lines = [f"{len(outcome.fids)} tiles scored into field <b>{html.escape(field)}</b>; "
                 f"best {len(best)} selected."]
        if outcome.unknown_words:
            lines.append('<span style="color:#9a6700">Unknown words (ignored): <b>'
                         + html.escape(", ".join(outcome.unknown_words)) + "</b></span>")
        if outcome.skipped:
            lines.append(f"{len(outcome.skipped)} tiles have no embedding (score left empty).")
        self._status("<br>".join(lines))
        if best and self.iface is not None:
            self.iface.mapCanvas().zoomToSelected(layer)
            self.iface.mapCanvas().refresh()
        self.searchFinished.emit(True, " ".join(lines))

    def _fail(self, message):
        self._status(message, error=True)
        self.searchFinished.emit(False, message)

    def _show(self, layer, best, score_of):
        self.results.clear()
        has_caption = layer.fields().indexOf("caption") >= 0
        for fid in best:
            feature = layer.getFeature(fid)
            caption = feature["caption"] if has_caption else f"feature {fid}"
            item = QListWidgetItem(f"{score_of[fid]:.3f}   {caption}")
            item.setData(Qt.ItemDataRole.UserRole, fid)
            self.results.addItem(item)

    def _zoom_to_item(self, item):
        layer = self.layer_combo.currentLayer()
        if layer is None or self.iface is None:
            return
        fid = item.data(Qt.ItemDataRole.UserRole)
        self.iface.mapCanvas().zoomToFeatureIds(layer, [fid])
        self.iface.mapCanvas().flashFeatureIds(layer, [fid])
