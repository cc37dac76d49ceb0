"""Driven inside desktop QGIS by test_xvfb_map_tool.py (`qgis --code this.py`).

Uses the loaded plugin as an analyst would: loads the pair, switches on the "What changed
here?" tool from the toolbar, clicks the map with the mouse where the two dates differ most,
waits for the answer in the panel and the where-changed map on the canvas, then saves a
screenshot and a JSON report. Every step is driven by signals; a watchdog ends QGIS if something
never happens, so the test fails instead of hanging.
"""
import json
import os
import traceback

import numpy as np
from osgeo import gdal
from qgis.core import QgsApplication, QgsPointXY, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QPoint, QTimer, Qt
from qgis.PyQt.QtTest import QTest
from qgis.utils import iface, plugins

BEFORE = os.environ["RSICRC_TEST_BEFORE"]
AFTER = os.environ["RSICRC_TEST_AFTER"]
SHOT = os.environ["RSICRC_TEST_SCREENSHOT"]
REPORT = os.environ["RSICRC_TEST_REPORT"]
WATCHDOG_MS = int(os.environ.get("RSICRC_TEST_WATCHDOG_S", "300")) * 1000
WINDOW = 256
report = {"steps": []}


def finish(error=None):
    if error:
        report["error"] = error
    with open(REPORT, "w") as f:
        json.dump(report, f, indent=1)
    os._exit(0 if not error else 3)  # skip QGIS's shutdown (prompts, exit-time crashes)


def guarded(fn):
    def wrapper(*args):
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - put it in the report rather than a dialog
            finish(traceback.format_exc())
    return wrapper


def most_changed_point():
    """Map coordinates of the centre of the WINDOW px tile where AFTER differs most from BEFORE."""
    b, a = gdal.Open(BEFORE), gdal.Open(AFTER)
    diff = np.abs(a.ReadAsArray().astype(np.int16) - b.ReadAsArray().astype(np.int16)).sum(axis=0)
    rows, cols = diff.shape[0] // WINDOW, diff.shape[1] // WINDOW
    sums = diff[:rows * WINDOW, :cols * WINDOW].reshape(rows, WINDOW, cols, WINDOW).sum(axis=(1, 3))
    row, col = np.unravel_index(int(np.argmax(sums)), sums.shape)
    x0, px, _, y0, _, py = b.GetGeoTransform()
    return x0 + (col + 0.5) * WINDOW * px, y0 + (row + 0.5) * WINDOW * py, int(col) * WINDOW, int(row) * WINDOW


@guarded
def start():
    plugin = plugins.get("rsicrc")
    if plugin is None:
        return finish("plugin rsicrc is not loaded")
    report["toolbar_actions"] = [a.objectName() for a in plugin.toolbar.actions()]
    before = QgsRasterLayer(BEFORE, "before (2019)")
    after = QgsRasterLayer(AFTER, "after (2023)")
    QgsProject.instance().addMapLayers([before, after])
    # Show AFTER, where the new buildings are (BEFORE lands on top of the layer list).
    QgsProject.instance().layerTreeRoot().findLayer(before.id()).setItemVisibilityChecked(False)
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(before.crs())
    canvas.setExtent(before.extent().buffered(before.extent().width() * 0.04))
    plugin.click_panel.set_pair(before, after)
    action = [a for a in plugin.toolbar.actions() if a.objectName() == "rsicrcWhatChangedHere"][0]
    action.trigger()  # as a press of the toolbar button
    report["tool_active"] = canvas.mapTool() is plugin.click.tool
    report["steps"].append("tool")
    x, y, col, row = most_changed_point()
    report["clicked"], report["expected_window"] = [x, y], {"col": col, "row": row, "size": WINDOW}
    plugin.click.clickFinished.connect(guarded(lambda ok, text: answered(plugin, ok, text)))
    canvas.mapCanvasRefreshed.connect(guarded(lambda: click_when_drawn(plugin, x, y)))
    canvas.refresh()


def click_when_drawn(plugin, x, y):
    canvas = iface.mapCanvas()
    if canvas.isDrawing() or "clicked_pixel" in report:
        return
    pixel = canvas.getCoordinateTransform().transform(QgsPointXY(x, y))
    report["clicked_pixel"] = [round(pixel.x()), round(pixel.y())]
    QTest.mouseClick(canvas.viewport(), Qt.LeftButton, Qt.NoModifier, QPoint(*report["clicked_pixel"]))
    report["status_while_waiting"] = plugin.click_panel.status_label.text()
    report["steps"].append("clicked")


def answered(plugin, ok, text):
    report["steps"].append("answered")
    report["ok"], report["message"] = ok, text
    if not ok:
        return finish(f"the click was not answered: {text}")
    panel, answer = plugin.click_panel, plugin.click.answer
    report["window"] = answer["window"]
    report["caption"] = answer["caption"]
    report["panel_caption"] = panel.caption_label.text()
    report["panel_details"] = panel.details_label.text()
    report["has_attention"] = answer["attention"] is not None
    report["heat_cells"] = plugin.click.heat.cells
    report["heat_bands"] = len(plugin.click.heat.bands)
    canvas = iface.mapCanvas()
    canvas.mapCanvasRefreshed.disconnect()
    canvas.mapCanvasRefreshed.connect(guarded(rendered))
    canvas.refresh()


def rendered():
    canvas = iface.mapCanvas()
    if canvas.isDrawing():
        return
    canvas.mapCanvasRefreshed.disconnect()
    report["steps"].append("rendered")
    QTimer.singleShot(0, guarded(shoot))  # one more turn so the render is on screen


def shoot():
    QgsApplication.primaryScreen().grabWindow(0).save(SHOT)
    report["screenshot"] = SHOT
    finish()


QTimer.singleShot(WATCHDOG_MS, lambda: finish("watchdog: QGIS did not finish in time"))
iface.mainWindow().setGeometry(0, 0, 1600, 1000)
QTimer.singleShot(500, start)
