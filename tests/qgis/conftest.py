"""Fixtures for the QGIS tests: a real QgsApplication (pytest-qgis, offscreen), the plugin
loaded through classFactory, a small generated raster pair and one shared caption run."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
QGIS_PLUGINS = "/usr/share/qgis/python/plugins"


def _write_rgb(path, bands, origin=(500000.0, 5000000.0), pixel=0.5, epsg=32632):
    from osgeo import gdal, osr

    _, rows, cols = bands.shape
    ds = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((origin[0], pixel, 0.0, origin[1], 0.0, -pixel))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    for i, interp in enumerate((gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(bands[i])
        band.SetColorInterpretation(interp)
    ds = None
    return path


@pytest.fixture(scope="session")
def raster_pair(tmp_path_factory):
    """BEFORE/AFTER 512 x 256 px (two 256 px tiles); AFTER has a bright block in the 2nd tile."""
    folder = tmp_path_factory.mktemp("pair")
    rng = np.random.default_rng(7)
    before = rng.integers(60, 120, (3, 256, 512)).astype(np.uint8)
    before[1] += 30  # greenish fields
    after = before.copy()
    after[:, 60:150, 300:430] = 225  # a new roof
    after[:, 150:170, 256:512] = 90  # and a road
    return (_write_rgb(folder / "before.tif", before), _write_rgb(folder / "after.tif", after))


@pytest.fixture(scope="session")
def plugin_parent(tmp_path_factory):
    """A folder holding a `rsicrc` link to the repository: what QGIS_PLUGINPATH needs."""
    parent = tmp_path_factory.mktemp("plugins")
    (parent / "rsicrc").symlink_to(REPO, target_is_directory=True)
    return parent


@pytest.fixture(scope="session")
def worker_env(small_checkpoint):
    """Point the plugin at the project's venv and the generated checkpoint, as a user would."""
    if not VENV_PYTHON.is_file():
        pytest.skip(f"{VENV_PYTHON} is missing: run `make setup`")
    saved = {k: os.environ.get(k) for k in ("RSICRC_PYTHON", "RSICRC_MODEL")}
    os.environ["RSICRC_PYTHON"] = str(VENV_PYTHON)
    os.environ["RSICRC_MODEL"] = str(small_checkpoint)
    yield {"RSICRC_PYTHON": str(VENV_PYTHON), "RSICRC_MODEL": str(small_checkpoint)}
    from rsicrc.rsicrc_qgis.worker import serve_client

    serve_client.close_all()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def processing_ready(qgis_processing, qgis_iface):
    if QGIS_PLUGINS not in sys.path:
        sys.path.append(QGIS_PLUGINS)
    # pytest-qgis's iface answers layerTreeView() with a MagicMock, which QGIS 3.44's Processing
    # passes to C++ (QgsProcessingGuiUtils.addResultLayers raises TypeError for it). A real view
    # of the project's tree with nothing selected: results go to the top, as with the mock.
    from qgis.core import QgsLayerTreeModel, QgsProject
    from qgis.gui import QgsLayerTreeView

    view = QgsLayerTreeView()
    view.setModel(QgsLayerTreeModel(QgsProject.instance().layerTreeRoot(), view))
    qgis_iface.layerTreeView = lambda: view
    return True


@pytest.fixture(scope="session")
def plugin(qgis_app, qgis_iface, processing_ready):
    """The plugin as QGIS loads it: the package's classFactory, then initGui."""
    import rsicrc

    # pytest-qgis's stand-in for QGIS's interface has the Plugins menu only.
    for name in ("addPluginToRasterMenu", "removePluginRasterMenu"):
        if not hasattr(qgis_iface, name):
            setattr(qgis_iface, name, lambda menu, action: None)
    instance = rsicrc.classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()


@pytest.fixture(scope="session")
def captioned(plugin, worker_env, raster_pair, tmp_path_factory):
    """One caption run through processing.run, shared by the search tests (returns the .gpkg)."""
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    before, after = raster_pair
    out = tmp_path_factory.mktemp("caption") / "changes.gpkg"
    result = processing.run("rsicrc:captionchanges", {
        "BEFORE": str(before), "AFTER": str(after), "TILE_SIZE": 256,
        "QUERIES": "a new building\nroad", "DEVICE": 0, "OUTPUT": str(out),
    }, context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    return out, result


@pytest.fixture(scope="session")
def wait_signal():
    """wait_signal(signal, timeout_s, trigger=None) -> the signal's arguments; TimeoutError when it
    never fires. `trigger` (a callable) runs once the signal is connected: a slot that answers at
    once (a refusal emitted before the event loop starts) is then caught, not waited for."""
    return _wait_for


def _wait_for(signal, timeout_s, trigger=None):
    """Run the event loop until `signal` fires (returns its arguments) or the timeout passes."""
    from qgis.PyQt.QtCore import QEventLoop, QTimer

    got = []
    loop = QEventLoop()

    def on_signal(*args):
        got.append(args)
        loop.quit()

    signal.connect(on_signal)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(int(timeout_s * 1000))
    if trigger is not None:
        trigger()
    if not got:
        loop.exec_()
    try:
        signal.disconnect(on_signal)
    except TypeError:  # the sender went away (QGIS deletes a QgsTask that has ended): no connection left
        pass
    if not got:
        raise TimeoutError(f"no signal within {timeout_s} s")
    return got[0]
