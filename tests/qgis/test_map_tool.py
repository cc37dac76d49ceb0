"""The "What changed here?" map tool, headless: a click on the canvas reaches the worker off the
main thread, the panel shows the answer and the where-changed map is drawn; clicks outside the
pair or without one give a message; the newest click wins; switching the tool off clears the map."""
import threading

import pytest
from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsPointXY, QgsProject, QgsRasterLayer,
                       QgsVectorLayer)
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapToolPan
from qgis.PyQt.QtCore import QEvent, QPoint, Qt

from rsicrc.rsicrc_qgis import settings
from rsicrc.rsicrc_qgis.click import map_tool, request as click_request
from rsicrc.rsicrc_qgis.click.panel import ClickPanel
from rsicrc.rsicrc_qgis.worker.serve_client import WorkerError

UTM = QgsCoordinateReferenceSystem("EPSG:32632")
HEAT = [[0.0, 0.1, 0.2], [0.3, 0.4, 0.5], [0.6, 0.7, 0.9]]  # row 0 = north


@pytest.fixture
def layers(raster_pair):
    before = QgsRasterLayer(str(raster_pair[0]), "before")
    after = QgsRasterLayer(str(raster_pair[1]), "after")
    assert before.isValid() and after.isValid()
    QgsProject.instance().addMapLayers([before, after])
    yield before, after
    QgsProject.instance().removeMapLayers([before.id(), after.id()])


def show_on(canvas, layer):
    canvas.resize(600, 300)
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())


def press(canvas, tool, x, y, button=Qt.LeftButton):
    """A real mouse press on the canvas at map point (x, y) (canvas CRS), handled by `tool`."""
    pixel = canvas.getCoordinateTransform().transform(QgsPointXY(x, y))
    event = QgsMapMouseEvent(canvas, QEvent.MouseButtonPress, QPoint(round(pixel.x()), round(pixel.y())),
                             button, button, Qt.NoModifier)
    tool.canvasPressEvent(event)


def tile_centre(layer, col, row=0, size=256):
    ext = layer.extent()
    pixel = ext.width() / layer.width()
    return ext.xMinimum() + (col + size / 2) * pixel, ext.yMaximum() - (row + size / 2) * pixel


# --- with the real worker and model ---------------------------------------------------------

def test_click_on_the_canvas_shows_the_tiles_caption_and_its_heat_map(plugin, worker_env, captioned, layers,
                                                                      wait_signal):
    before, after = layers
    out, _ = captioned
    tiles = {f["col"]: f for f in QgsVectorLayer(f"{out}|layername=changes", "c", "ogr").getFeatures()}
    canvas = plugin.iface.mapCanvas()
    show_on(canvas, before)
    plugin.click_panel.set_pair(before, after)
    plugin.click_action.trigger()
    assert canvas.mapTool() is plugin.click.tool and plugin.click_action.isChecked()
    assert not plugin.click_panel.isHidden()
    x, y = tile_centre(before, 256)  # the tile with the new roof
    press(canvas, plugin.click.tool, x, y)
    ok, message = wait_signal(plugin.click.clickFinished, 300)
    assert ok, message
    panel = plugin.click_panel
    assert panel.caption_label.text() == tiles[256]["caption"]
    assert f"{tiles[256]['change_score']:.2f}" in panel.details_label.text()
    assert "column 256, row 0" in panel.details_label.text()
    heat = plugin.click.heat
    scene_items = canvas.scene().items()
    assert heat.bands and all(band in scene_items for band in heat.bands)
    outline = heat.bands[-1].asGeometry().boundingBox()
    assert outline.xMinimum() == pytest.approx(x - 64) and outline.yMaximum() == pytest.approx(y + 64)
    attention = plugin.click.answer["attention"]
    if attention is not None:  # the model package gives the where-changed map: a full grid of cells
        assert heat.cells == len(attention) * len(attention[0]) >= 4 and len(heat.bands) >= 2
    else:
        assert heat.cells == 0 and "not available" in panel.details_label.text()

    # Outside the pair: a message, and the map drawn for the last click is gone.
    press(canvas, plugin.click.tool, x + 10_000, y)
    ok, message = wait_signal(plugin.click.clickFinished, 120)
    assert not ok and "outside the area BEFORE and AFTER share" in message
    assert "outside the area" in panel.status_label.text()
    assert heat.bands == [] and panel.caption_label.text() == ""

    # Another tool takes over: the tool is off and its drawing cleared.
    press(canvas, plugin.click.tool, *tile_centre(before, 0))
    assert wait_signal(plugin.click.clickFinished, 120)[0]
    assert heat.bands
    pan = QgsMapToolPan(canvas)
    canvas.setMapTool(pan)
    assert heat.bands == [] and not plugin.click_action.isChecked()
    canvas.unsetMapTool(pan)


# --- with a fake worker: threads, superseding, messages -------------------------------------

class FakeWorker:
    """Answers like the serve worker; the first call waits until `release` is set."""

    def __init__(self, error=None):
        self.calls, self.threads = [], []
        self.started, self.release, self.returned = threading.Event(), threading.Event(), threading.Event()
        self.running = False
        self.error = error

    def caption_at(self, is_canceled=None, **request):
        self.calls.append(request)
        self.threads.append(threading.get_ident())
        self.started.set()
        try:
            return self._answer(request)
        finally:
            self.returned.set()

    def _answer(self, request):
        if len(self.calls) == 1 and not self.release.wait(60):
            raise WorkerError("the test never released the worker")
        self.running = True  # it has loaded its model
        if self.error:
            raise WorkerError(self.error)
        x, y = request["x"], request["y"]
        return {"ok": True, "caption": f"caption at {x:.0f}", "changed": True, "change_score": 0.75,
                "nodata_fraction": 0.0, "window": {"col": 0, "row": 0, "size": 256},
                "bounds": [x - 64, y - 64, x + 64, y + 64], "crs": UTM.toWkt(), "crs_name": "EPSG:32632",
                "attention": HEAT, "clip": None, "warnings": []}


@pytest.fixture
def fake_tool(qgis_app, layers):
    canvas = QgsMapCanvas()
    show_on(canvas, layers[0])
    panel = ClickPanel()
    panel.set_pair(*layers)
    fake = FakeWorker()
    controller = map_tool.ClickController(canvas, panel, worker_for=lambda: fake)
    canvas.setMapTool(controller.tool)
    yield controller, fake
    fake.release.set()
    controller.shutdown()


def test_request_runs_off_the_main_thread_and_the_map_stays_usable(fake_tool, layers, wait_signal):
    controller, fake = fake_tool
    x, y = tile_centre(layers[0], 0)
    press(controller.canvas, controller.tool, x, y)
    assert fake.started.wait(30)  # the worker has the click and waits...
    assert not fake.returned.is_set()  # ...while the main thread is back from the click, free
    assert fake.threads[0] != threading.get_ident() and controller.requester.in_flight
    assert click_request.STARTING in controller.panel.status_label.text()
    fake.release.set()
    ok, caption = wait_signal(controller.clickFinished, 30)
    assert ok and caption == f"caption at {x:.0f}"
    assert fake.calls[0]["x"] == pytest.approx(x) and fake.calls[0]["y"] == pytest.approx(y)
    assert fake.calls[0]["crs"] == "EPSG:32632" and fake.calls[0]["tile_size"] == 256
    assert controller.panel.caption_label.text() == caption
    assert "0.75" in controller.panel.details_label.text()
    heat = controller.heat
    steps = {level for row in map_tool.heat_levels(HEAT) for level in row}
    assert heat.cells == 9 and len(heat.bands) == len(steps) + 1  # one band a colour step, the outline
    # The red cell (the largest value) is the south-east one: row 0 of the map is north.
    red = heat.bands[-2].asGeometry().boundingBox()
    assert red.xMaximum() == pytest.approx(x + 64) and red.yMinimum() == pytest.approx(y - 64)
    # Warm now: the next click says it is looking, not starting.
    press(controller.canvas, controller.tool, x + 5, y)
    assert click_request.WORKING in controller.panel.status_label.text()
    assert controller.panel.caption_label.text() == "" and controller.heat.bands == []  # the last answer is gone
    assert wait_signal(controller.clickFinished, 30)[0]


def test_newest_click_wins_while_one_is_in_flight(fake_tool, layers, wait_signal):
    controller, fake = fake_tool
    finished = []
    controller.clickFinished.connect(lambda ok, text: finished.append(text))
    x, y = tile_centre(layers[0], 0)
    for dx in (0, 10, 20):
        press(controller.canvas, controller.tool, x + dx, y)
    assert fake.started.wait(30)
    assert click_request.SUPERSEDED in controller.panel.status_label.text()
    fake.release.set()
    ok, caption = wait_signal(controller.clickFinished, 30)
    assert ok and caption == f"caption at {x + 20:.0f}"
    assert [round(c["x"] - x) for c in fake.calls] == [0, 20]  # the middle click was never sent
    assert finished == [caption]  # the first click's answer was dropped, not shown


def test_messages_for_clicks_the_worker_refuses_or_without_a_pair(fake_tool, layers, wait_signal):
    controller, fake = fake_tool
    fake.release.set()
    fake.error = "the 256 px window at this point is 100% nodata (more than the 0.5 allowed)"
    press(controller.canvas, controller.tool, *tile_centre(layers[0], 0))
    ok, message = wait_signal(controller.clickFinished, 30)
    assert not ok and "100% nodata" in controller.panel.status_label.text()
    assert controller.heat.bands == []
    controller.panel.set_pair(None, layers[1])
    calls = len(fake.calls)
    press(controller.canvas, controller.tool, *tile_centre(layers[0], 0))  # answered at once
    assert "Choose the BEFORE and AFTER rasters" in controller.panel.status_label.text()
    assert len(fake.calls) == calls
    controller.panel.set_pair(*layers)
    controller.panel.bands_edit.setText("1,2")
    press(controller.canvas, controller.tool, *tile_centre(layers[0], 0))
    assert "Bands: give three band numbers" in controller.panel.status_label.text()
    assert len(fake.calls) == calls
    controller.panel.bands_edit.clear()
    # A right click is not a request.
    press(controller.canvas, controller.tool, *tile_centre(layers[0], 0), button=Qt.RightButton)
    assert len(fake.calls) == calls and not controller.requester.in_flight


def test_click_is_sent_in_befores_crs_whatever_the_canvas_shows(fake_tool, layers):
    controller, _ = fake_tool
    before = layers[0]
    x, y = tile_centre(before, 256)
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    controller.canvas.setDestinationCrs(wgs84)
    point = QgsCoordinateTransform(UTM, wgs84, QgsProject.instance()).transform(QgsPointXY(x, y))
    controller.panel.bands_edit.setText("3 2 1")
    controller.panel.reproject_check.setChecked(True)
    request = controller.request_for(point)
    assert request["crs"] == "EPSG:32632"
    assert request["bands"] == "3,2,1" and request["reproject"] is True and request["clip"] is False
    assert request["x"] == pytest.approx(x, abs=1e-3) and request["y"] == pytest.approx(y, abs=1e-3)
    assert request["before"] == before.source() and request["after"] == layers[1].source()


def test_panel_offers_the_pair_last_chosen(qgis_app, layers):
    before, after = layers
    settings.save_last_pair(after.id(), before.id())  # as the caption dialog's Run saves it
    panel = ClickPanel()
    assert panel.pair() == (after, before)
    panel.set_pair(before, after)
    assert settings.last_pair() == (before.id(), after.id())
    assert ClickPanel().pair() == (before, after)


def test_caption_dialogs_run_saves_the_pair_for_the_panel(plugin, layers):
    before, after = layers
    settings.save_last_pair("", "")
    dialog = plugin.open_caption_dialog()
    try:
        dialog.runRequested.disconnect(plugin.start_caption)  # no caption job in this test
        dialog.before_combo.setLayer(after)
        dialog.after_combo.setLayer(before)
        dialog.runRequested.emit([], "", "", {})
        assert settings.last_pair() == (after.id(), before.id())
        plugin.click_panel.hide()
        plugin.click_action.trigger()  # the panel opens on the pair just run
        assert plugin.click_panel.pair() == (after, before)
    finally:
        plugin.click_action.trigger()  # off again
        dialog.close()
    assert plugin.iface.mapCanvas().mapTool() is not plugin.click.tool
