"""The "What changed here?" map tool: click the map, get the caption of the window around it.

The click (canvas CRS) is transformed to BEFORE's layer CRS and sent, with the file's own CRS
(the coordinates QGIS shows a layer at are its file's numbers, whatever CRS the layer is given),
to the warm search worker as a caption_at request (pipeline/caption/point.py) through a
ClickRequester (never on the main thread, the newest click wins). The answer goes to the panel,
and the where-changed map is drawn over the window as a grid of semi-transparent cells, one
rubber band per colour step; it is cleared on the next click and when the tool is switched off.
"""
from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsCsException, QgsGeometry, QgsProject,
                       QgsRectangle)
from qgis.gui import QgsMapToolEmitPoint, QgsRubberBand
from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor

from .. import settings
from ..caption.job import BadParameter, raster_path
from ..caption.pair_checks import file_crs
from ..qgis_enums import POLYGON_GEOMETRY, WKT_PREFERRED_GDAL
from ..worker.serve_client import shared_worker
from .request import ClickRequester

HEAT_STEPS = 8
# From pale yellow (the model hardly looked there) to red (where it looked most).
LOW, HIGH = QColor(255, 237, 111), QColor(215, 25, 28)
LOW_ALPHA, HIGH_ALPHA = 35, 175


def heat_colour(level):
    """The fill of colour step `level` (0 .. HEAT_STEPS - 1)."""
    t = level / (HEAT_STEPS - 1)

    def mix(a, b):
        return round(a + (b - a) * t)

    return QColor(mix(LOW.red(), HIGH.red()), mix(LOW.green(), HIGH.green()), mix(LOW.blue(), HIGH.blue()),
                  mix(LOW_ALPHA, HIGH_ALPHA))


def heat_levels(values):
    """(h, w) list of floats -> (h, w) list of colour steps, the map stretched from its min to its max."""
    flat = [v for row in values for v in row]
    low, high = min(flat), max(flat)
    span = high - low
    if span <= 0:
        return [[0 for _ in row] for row in values]
    return [[min(HEAT_STEPS - 1, int((v - low) / span * HEAT_STEPS)) for v in row] for row in values]


class HeatMap:
    """The answer drawn on the canvas: the window's outline and, when given, its attention cells."""

    def __init__(self, canvas):
        self.canvas = canvas
        self.bands = []  # QgsRubberBand: one per colour step in use, then the outline
        self.cells = 0

    def clear(self):
        for band in self.bands:
            band.reset(POLYGON_GEOMETRY)
            self.canvas.scene().removeItem(band)
        self.bands, self.cells = [], 0

    def _band(self, fill, stroke, width=0):
        band = QgsRubberBand(self.canvas, POLYGON_GEOMETRY)
        band.setFillColor(fill)
        band.setStrokeColor(stroke)
        band.setWidth(width)
        self.bands.append(band)
        return band

    def show(self, answer):
        self.clear()
        crs = QgsCoordinateReferenceSystem.fromWkt(answer["crs"])
        left, bottom, right, top = answer["bounds"]
        heat = answer.get("attention")
        if heat:
            rows, cols = len(heat), len(heat[0])
            dy, dx = (top - bottom) / rows, (right - left) / cols
            by_level = {}
            for i, row in enumerate(heat_levels(heat)):  # row 0 is the window's north edge
                for j, level in enumerate(row):
                    cell = QgsRectangle(left + j * dx, top - (i + 1) * dy, left + (j + 1) * dx, top - i * dy)
                    by_level.setdefault(level, []).append(cell)
            for level in sorted(by_level):
                band = self._band(heat_colour(level), QColor(0, 0, 0, 0))
                for cell in by_level[level]:
                    band.addGeometry(QgsGeometry.fromRect(cell), crs, False)
                band.updatePosition()
                band.update()
                self.cells += len(by_level[level])
        outline = self._band(QColor(0, 0, 0, 0), QColor(30, 30, 30), 2)  # last: drawn on top
        outline.addGeometry(QgsGeometry.fromRect(QgsRectangle(left, bottom, right, top)), crs)


class ChangeMapTool(QgsMapToolEmitPoint):
    """Emits clickedAt(point in the canvas CRS) on a left click; deactivated() when switched off."""

    clickedAt = pyqtSignal(object)
    toolDeactivated = pyqtSignal()

    def __init__(self, canvas):
        super().__init__(canvas)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.canvasClicked.connect(self._clicked)

    def _clicked(self, point, button):
        if button == Qt.MouseButton.LeftButton:
            self.clickedAt.emit(point)

    def deactivate(self):
        super().deactivate()
        self.toolDeactivated.emit()


def default_worker():
    return shared_worker(device=settings.device())


class ClickController(QObject):
    """Ties the tool, the panel, the worker and the heat map together."""

    environmentProblem = pyqtSignal(str)
    # (ok, message or caption) once the latest click's answer is shown, on the main thread
    clickFinished = pyqtSignal(bool, str)

    def __init__(self, canvas, panel, worker_for=default_worker, parent=None):
        super().__init__(parent)
        self.canvas, self.panel = canvas, panel
        self.tool = ChangeMapTool(canvas)
        self.heat = HeatMap(canvas)
        self.requester = ClickRequester(worker_for, self)
        self.answer = None  # the answer shown, None after a failed click
        self.tool.clickedAt.connect(self.click)
        self.tool.toolDeactivated.connect(self.heat.clear)
        self.requester.busy.connect(panel.show_busy)
        self.requester.answered.connect(self._answered)
        self.requester.failed.connect(self._failed)

    def request_for(self, point):
        """The caption_at keywords for a click at `point` (canvas CRS); BadParameter says what is missing."""
        before, after = self.panel.pair()
        if before is None or after is None:
            raise BadParameter("Choose the BEFORE and AFTER rasters in the panel.")
        before_path, after_path = raster_path(before, "BEFORE"), raster_path(after, "AFTER")
        try:
            bands = self.panel.bands()
        except ValueError as exc:
            raise BadParameter(str(exc)) from None
        canvas_crs = self.canvas.mapSettings().destinationCrs()
        try:
            where = QgsCoordinateTransform(canvas_crs, before.crs(), QgsProject.instance()).transform(point)
        except QgsCsException:
            raise BadParameter(f"This point cannot be expressed in BEFORE's CRS ({before.crs().authid()}).") from None
        crs = file_crs(before)
        if not crs.isValid():
            crs = before.crs()
        code = crs.authid()
        return {"before": before_path, "after": after_path, "x": where.x(), "y": where.y(),
                "crs": code if code.upper().startswith("EPSG:") else crs.toWkt(
                    WKT_PREFERRED_GDAL),
                "tile_size": self.panel.tile_spin.value(), "bands": bands,
                "reproject": self.panel.reproject_check.isChecked(), "clip": self.panel.clip_check.isChecked(),
                "model": settings.model_choice().value or None,
                "clip_model": settings.clip_model_choice().value or None}

    def click(self, point):
        self.heat.clear()
        self.panel.clear_answer()
        try:
            request = self.request_for(point)
        except BadParameter as exc:
            self.panel.show_message(str(exc), error=True)
            self.clickFinished.emit(False, str(exc))
            return
        self.requester.submit(request)

    def _answered(self, request, answer):
        self.answer = answer
        self.panel.show_answer(answer)
        self.heat.show(answer)
        self.clickFinished.emit(True, str(answer.get("caption", "")))

    def _failed(self, request, message, is_environment):
        self.answer = None
        self.heat.clear()
        self.panel.show_message(message, error=True)
        if is_environment:
            self.environmentProblem.emit(message)
        self.clickFinished.emit(False, message)

    def shutdown(self):
        self.requester.shutdown()
        self.heat.clear()
        if self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)
