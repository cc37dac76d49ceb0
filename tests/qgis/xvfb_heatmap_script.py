"""Driven inside desktop QGIS by test_xvfb_heatmap.py (`qgis --code this.py`).

Loads the pair, opens the toolbar dialog, asks for a heat map (--heatmap) with overlapping
tiles, presses Run and waits for the QgsTask; then reports where the plugin put the heat map in
the layer tree and how it is styled, and saves a screenshot of the main window. Every step is
driven by signals; a watchdog ends QGIS if something never happens.
"""
import json
import os
import traceback

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QDockWidget
from qgis.utils import iface, plugins

BEFORE = os.environ["RSICRC_TEST_BEFORE"]
AFTER = os.environ["RSICRC_TEST_AFTER"]
OUTPUT = os.environ["RSICRC_TEST_OUTPUT"]
HEATMAP = os.environ["RSICRC_TEST_HEATMAP"]
SHOT = os.environ["RSICRC_TEST_SCREENSHOT"]
REPORT = os.environ["RSICRC_TEST_REPORT"]
WATCHDOG_MS = int(os.environ.get("RSICRC_TEST_WATCHDOG_S", "300")) * 1000
report = {"steps": []}
keep = []


def finish(error=None):
    if error:
        report["error"] = error
    with open(REPORT, "w") as f:
        json.dump(report, f, indent=1)
    os._exit(0 if not error else 3)  # skip QGIS's shutdown prompts


def guarded(fn):
    def wrapper(*args):
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - into the report rather than a dialog
            finish(traceback.format_exc())
    return wrapper


@guarded
def start():
    plugin = plugins.get("rsicrc")
    if plugin is None:
        return finish("plugin rsicrc is not loaded")
    before = QgsRasterLayer(BEFORE, "before (2019)")
    after = QgsRasterLayer(AFTER, "after (2023)")
    QgsProject.instance().addMapLayers([before, after])
    dialog = plugin.open_caption_dialog()
    dialog.before_combo.setLayer(before)
    dialog.after_combo.setLayer(after)
    dialog.output_widget.setFilePath(OUTPUT)
    dialog.options["heatmap"].set_value(HEATMAP)
    dialog.options["overlap"].set_value(128)
    report["heatmap_scale_enabled"] = dialog.options["heatmap_scale"].widget.isEnabled()
    report["steps"].append("dialog")
    plugin.start_caption_orig = plugin.start_caption

    def started(args, output, name, env):
        report["args"] = args
        task = plugin.start_caption_orig(args, output, name, env)
        keep.append(task)
        task.finishedWithResult.connect(guarded(captioned))
    dialog.runRequested.disconnect()
    dialog.runRequested.connect(started)
    dialog.run()


def captioned(layer, message, level, is_env):
    report["steps"].append("captioned")
    report["caption_message"] = message
    if layer is None:
        return finish(f"caption failed: {message}")
    heats = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.source() == HEATMAP]
    if len(heats) != 1:
        sources = [lyr.source() for lyr in QgsProject.instance().mapLayers().values()]
        return finish(f"heat map layer not in the project: {sources}")
    heat = heats[0]
    order = [n.layer().name() for n in QgsProject.instance().layerTreeRoot().findLayers()]
    report["tree"] = order
    report["heat_below_result"] = order.index(heat.name()) == order.index(layer.name()) + 1
    report["heat_renderer"] = heat.renderer().type()
    report["heat_size"] = [heat.width(), heat.height()]
    # The shot shows the heat map over the AFTER image: the result layer's tiles are switched off
    # (still listed above it), the attribute table the plugin opened is closed.
    root = QgsProject.instance().layerTreeRoot()
    root.findLayer(layer.id()).setItemVisibilityChecked(False)
    root.findLayer(QgsProject.instance().mapLayersByName("before (2019)")[0].id()).setItemVisibilityChecked(False)
    for dock in iface.mainWindow().findChildren(QDockWidget):
        if dock.objectName().startswith("AttributeTable") or "Features Total" in dock.windowTitle():
            dock.close()
    canvas = iface.mapCanvas()
    canvas.setExtent(heat.extent().buffered(heat.extent().width() * 0.03))
    canvas.mapCanvasRefreshed.connect(guarded(rendered))
    canvas.refresh()


def rendered():
    canvas = iface.mapCanvas()
    if canvas.isDrawing():
        return
    canvas.mapCanvasRefreshed.disconnect()
    report["steps"].append("rendered")
    QTimer.singleShot(0, guarded(shoot))


def shoot():
    QgsApplication.primaryScreen().grabWindow(0).save(SHOT)
    report["screenshot"] = SHOT
    finish()


QTimer.singleShot(WATCHDOG_MS, lambda: finish("watchdog: QGIS did not finish in time"))
iface.mainWindow().setGeometry(0, 0, 1600, 1000)
QTimer.singleShot(500, start)
