"""Driven inside desktop QGIS by test_xvfb_screenshot.py (`qgis --code this.py`).

Uses the loaded plugin as an analyst would: loads the pair, opens the toolbar dialog, presses
Run, waits for the QgsTask, searches the result in the dock, then saves a screenshot of the
main window and a JSON report. Every step is driven by signals; a watchdog ends QGIS if
something never happens, so the test fails instead of hanging.
"""
import json
import os
import traceback

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

BEFORE = os.environ["RSICRC_TEST_BEFORE"]
AFTER = os.environ["RSICRC_TEST_AFTER"]
OUTPUT = os.environ["RSICRC_TEST_OUTPUT"]
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
    # Skip QGIS's shutdown (save-project prompts, exit-time crashes with layers around).
    os._exit(0 if not error else 3)


def guarded(fn):
    def wrapper(*args):
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - put it in the report rather than a dialog
            finish(traceback.format_exc())
    return wrapper


@guarded
def start():
    plugin = plugins.get("rsicrc")
    if plugin is None:
        return finish("plugin rsicrc is not loaded")
    report["toolbar_actions"] = [a.objectName() for a in plugin.toolbar.actions()]
    menu = [a for a in iface.pluginMenu().actions() if a.text().replace("&", "") == "RSICRC"]
    report["plugin_menu"] = [a.text() for a in menu[0].menu().actions()] if menu else []
    before = QgsRasterLayer(BEFORE, "before (2019)")
    after = QgsRasterLayer(AFTER, "after (2023)")
    QgsProject.instance().addMapLayers([before, after])
    dialog = plugin.open_caption_dialog()
    dialog.before_combo.setLayer(before)
    dialog.after_combo.setLayer(after)
    dialog.output_widget.setFilePath(OUTPUT)
    dialog.options["queries"].set_value(["new buildings"])
    report["pair_checks"] = [(c.level, c.text) for c in dialog.update_checks()]
    report["steps"].append("dialog")
    plugin.start_caption_orig = plugin.start_caption

    def started(args, output, name, env):
        task = plugin.start_caption_orig(args, output, name, env)
        keep.append(task)
        task.finishedWithResult.connect(guarded(lambda *a: captioned(plugin, *a)))
    dialog.runRequested.disconnect()
    dialog.runRequested.connect(started)
    dialog.run()


def captioned(plugin, layer, message, level, is_env):
    report["steps"].append("captioned")
    report["caption_message"] = message
    if layer is None:
        return finish(f"caption failed: {message}")
    report["features"] = layer.featureCount()
    report["renderer"] = layer.renderer().type()
    # The plugin's own handler (connected by start_caption) has added the layer, opened its
    # attribute table and pointed the dock at it.
    plugin.search_action.trigger()  # open the dock
    dock = plugin.dock
    dock.set_layer(layer)
    dock.top_spin.setValue(3)
    dock.query_edit.setText("new buildings")
    dock.searchFinished.connect(guarded(lambda ok, msg: searched(layer, ok, msg)))
    dock.query_edit.returnPressed.emit()


def searched(layer, ok, message):
    report["steps"].append("searched")
    report["search_ok"], report["search_message"] = ok, message
    report["selected"] = len(layer.selectedFeatureIds())
    canvas = iface.mapCanvas()
    canvas.setExtent(layer.extent().buffered(layer.extent().width() * 0.04))
    report["layer_id"] = layer.id()
    canvas.mapCanvasRefreshed.connect(guarded(rendered))
    canvas.refresh()  # refreshAllLayers() would reload the layer and drop its selection


def rendered():
    canvas = iface.mapCanvas()
    if canvas.isDrawing():  # a later render (selection, labels) is still on its way
        return
    canvas.mapCanvasRefreshed.disconnect()
    report["steps"].append("rendered")
    # One more turn of the event loop so the finished render is on screen, not just in memory.
    QTimer.singleShot(0, guarded(shoot))


def shoot():
    # The whole screen: the main window with its docks (attribute table docked at the bottom).
    layer = QgsProject.instance().mapLayer(report["layer_id"])
    report["selected_at_shot"] = layer.selectedFeatureCount() if layer else None
    QgsApplication.primaryScreen().grabWindow(0).save(SHOT)
    report["screenshot"] = SHOT
    finish()


QTimer.singleShot(WATCHDOG_MS, lambda: finish("watchdog: QGIS did not finish in time"))
iface.mainWindow().setGeometry(0, 0, 1600, 1000)
QTimer.singleShot(500, start)
