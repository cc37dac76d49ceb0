"""The area of interest and web layers in QGIS: Processing's EXTENT and AREA (selected features
only), the dialog's Area chooser, and a project XYZ layer served on 127.0.0.1 captioned through
rsicrc:captionchanges."""
import os

import numpy as np
import pyogrio.raw
import pytest
from qgis.core import (QgsFeature, QgsGeometry, QgsProcessingContext, QgsProcessingFeatureSourceDefinition,
                       QgsProcessingFeedback, QgsProject, QgsRasterLayer, QgsRectangle, QgsVectorLayer)

from rsicrc.pipeline import caption_params as cp

ORIGIN = (500000.0, 5000000.0)  # conftest's raster_pair: 512 x 256 px at 0.5 m, two 256 px tiles


def _parcels(selected):
    """A memory layer of two parcels, one over each tile of raster_pair; `selected` of them selected."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:32632", "parcels", "memory")
    features = []
    for k, x in enumerate((ORIGIN[0] + 20, ORIGIN[0] + 150)):
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, ORIGIN[1] - 100, x + 60, ORIGIN[1] - 20)))
        features.append(f)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    layer.selectByIds([f.id() for f in layer.getFeatures()][:selected])
    return layer


def _run(parameters):
    import processing

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())  # the project's layers, by id
    return processing.run("rsicrc:captionchanges", parameters, context=context, feedback=QgsProcessingFeedback())


def _layer(path):
    meta, _, _, fields = pyogrio.raw.read(str(path), layer="changes")
    return dict(zip(meta["fields"], fields))


def test_processing_area_takes_the_selected_features(plugin, worker_env, raster_pair, tmp_path):
    parcels = _parcels(selected=1)
    try:
        out = tmp_path / "selected.gpkg"
        _run({"BEFORE": str(raster_pair[0]), "AFTER": str(raster_pair[1]), "TILE_SIZE": 256, "DEVICE": 0,
              "AREA": QgsProcessingFeatureSourceDefinition(parcels.id(), True), "OUTPUT": str(out)})
        table = _layer(out)
        assert list(table["col"]) == [0]  # only the first parcel's tile
        assert table["area_fraction"][0] == pytest.approx(60 * 80 / 128 ** 2)
    finally:
        QgsProject.instance().removeMapLayer(parcels.id())


def test_processing_extent_in_its_own_crs(plugin, worker_env, raster_pair, tmp_path):
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform

    # The second tile's middle, given in EPSG:4326 as a map canvas in degrees would give it.
    rect = QgsRectangle(ORIGIN[0] + 160, ORIGIN[1] - 100, ORIGIN[0] + 200, ORIGIN[1] - 40)
    wgs = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32632"),
                                 QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    box = wgs.transformBoundingBox(rect)
    out = tmp_path / "extent.gpkg"
    _run({"BEFORE": str(raster_pair[0]), "AFTER": str(raster_pair[1]), "TILE_SIZE": 256, "DEVICE": 0,
          "EXTENT": f"{box.xMinimum()},{box.xMaximum()},{box.yMinimum()},{box.yMaximum()} [EPSG:4326]",
          "OUTPUT": str(out)})
    table = _layer(out)
    assert list(table["col"]) == [256] and 40 * 60 / 128 ** 2 <= table["area_fraction"][0] < 0.25


def test_the_dialog_area_chooser(plugin, raster_pair, tmp_path, qgis_iface):
    from rsicrc.rsicrc_qgis.caption.area_chooser import FEATURES, VIEW

    before, after = QgsRasterLayer(str(raster_pair[0]), "before"), QgsRasterLayer(str(raster_pair[1]), "after")
    QgsProject.instance().addMapLayers([before, after])
    parcels = _parcels(selected=0)
    dialog = plugin.open_caption_dialog()
    try:
        dialog.before_combo.setLayer(before)
        dialog.after_combo.setLayer(after)
        dialog.output_widget.setFilePath(str(tmp_path / "o.gpkg"))
        canvas = qgis_iface.mapCanvas()
        canvas.setDestinationCrs(before.crs())
        canvas.setExtent(QgsRectangle(ORIGIN[0], ORIGIN[1] - 100, ORIGIN[0] + 100, ORIGIN[1]))
        dialog.area_chooser.choice.setCurrentIndex(VIEW)
        params = cp.from_args(__import__("rsicrc.pipeline.cli", fromlist=["build_parser"]).build_parser()
                              .parse_args(dialog.build_args()[0])).check()
        (x0, y0, x1, y1), crs = cp.parse_extent(params.extent)
        view = canvas.extent()
        assert np.allclose((x0, y0, x1, y1), (view.xMinimum(), view.yMinimum(), view.xMaximum(), view.yMaximum()))
        assert crs == "EPSG:32632"

        dialog.area_chooser.choice.setCurrentIndex(FEATURES)
        dialog.area_chooser.layer_combo.setLayer(parcels)
        with pytest.raises(Exception, match="no selected feature"):
            dialog.build_args()
        parcels.selectByIds([next(parcels.getFeatures()).id()])
        args = dialog.build_args()[0]
        area = args[args.index("--area") + 1]
        assert os.path.isfile(area) and len(pyogrio.raw.read(area)[2]) == 1  # the selected parcel only
    finally:
        dialog.close()
        QgsProject.instance().removeMapLayers([before.id(), after.id(), parcels.id()])


def _xyz_tiles(folder):
    """XYZ trees before/ and after/ (level 18) of a generated 384 px pair at ORIGIN."""
    import rasterio
    from tile_server import make_xyz

    rng = np.random.default_rng(3)
    for name in ("before", "after"):
        with rasterio.open(folder / f"{name}.tif", "w", driver="GTiff", width=384, height=384, count=3,
                           dtype="uint8", crs="EPSG:32632",
                           transform=rasterio.transform.from_origin(*ORIGIN, 0.5, 0.5)) as dst:
            dst.write(rng.integers(0, 255, (3, 384, 384), dtype=np.uint8))
        make_xyz(folder / f"{name}.tif", folder / "tiles" / name, 18)
    return folder / "tiles"


WEB_EXTENT = f"{ORIGIN[0] + 40},{ORIGIN[0] + 140},{ORIGIN[1] - 120},{ORIGIN[1] - 40} [EPSG:32632]"


def test_a_project_xyz_layer_is_captioned_through_processing(plugin, worker_env, tmp_path, monkeypatch):
    from tile_server import TileServer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the description and tile caches
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with TileServer(_xyz_tiles(tmp_path)) as server:
        layers = [QgsRasterLayer(f"type=xyz&url={server.url}/{name}/%7Bz%7D/%7Bx%7D/%7By%7D.png&zmin=0&zmax=19",
                                 name, "wms") for name in ("before", "after")]
        assert all(layer.isValid() for layer in layers)
        QgsProject.instance().addMapLayers(layers)
        try:
            out = tmp_path / "xyz.gpkg"
            result = _run({"BEFORE": layers[0].id(), "AFTER": layers[1].id(), "TILE_SIZE": 128, "DEVICE": 0,
                           "EXTENT": WEB_EXTENT, "OUTPUT": str(out)})
            with pytest.raises(Exception, match="web service"):  # the world, without an area
                _run({"BEFORE": layers[0].id(), "AFTER": layers[1].id(), "TILE_SIZE": 128, "DEVICE": 0,
                      "OUTPUT": str(tmp_path / "world.gpkg")})
        finally:
            QgsProject.instance().removeMapLayers([layer.id() for layer in layers])
        assert server.requests  # the tiles came from the server
    table = _layer(out)
    assert result["FEATURES"] == len(table["caption"]) >= 4
    assert set(table["before_name"]) != {""}
    descriptions = list((tmp_path / "cache" / "rsicrc" / "web-sources").glob("*.xml"))
    assert len(descriptions) == 2 and all("TileLevel>18<" in p.read_text() for p in descriptions)


def test_a_web_layer_login_reaches_the_worker_and_no_file(plugin, worker_env, tmp_path, monkeypatch):
    from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsProcessingException
    from tile_server import TileServer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    auth = QgsApplication.authManager()
    assert auth.setMasterPassword("rsicrc-tests", True)
    config = QgsAuthMethodConfig("Basic")
    config.setName("tiles")
    config.setConfig("username", "ana")
    config.setConfig("password", "s3cret-pw")
    stored = auth.storeAuthenticationConfig(config)
    authcfg = (stored[1] if isinstance(stored, tuple) else config).id()
    with TileServer(_xyz_tiles(tmp_path)) as server:
        server.login = "ana:s3cret-pw"
        uri = f"type=xyz&url={server.url}/{{name}}/%7Bz%7D/%7Bx%7D/%7By%7D.png&zmin=0&zmax=19"
        logged = [QgsRasterLayer(uri.format(name=n) + f"&authcfg={authcfg}", n, "wms") for n in ("before", "after")]
        anonymous = [QgsRasterLayer(uri.format(name=n), n, "wms") for n in ("before", "after")]
        QgsProject.instance().addMapLayers(logged + anonymous)
        try:
            out = tmp_path / "logged.gpkg"
            _run({"BEFORE": logged[0].id(), "AFTER": logged[1].id(), "TILE_SIZE": 128, "DEVICE": 0,
                  "EXTENT": WEB_EXTENT, "OUTPUT": str(out)})
            # A cache of its own: the logged run's tiles are in the first one.
            monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-anonymous"))
            with pytest.raises(QgsProcessingException, match=f"127.0.0.1:{server.url.rsplit(':', 1)[1]}"):
                _run({"BEFORE": anonymous[0].id(), "AFTER": anonymous[1].id(), "TILE_SIZE": 128, "DEVICE": 0,
                      "EXTENT": WEB_EXTENT, "OUTPUT": str(tmp_path / "anonymous.gpkg")})
        finally:
            QgsProject.instance().removeMapLayers([layer.id() for layer in logged + anonymous])
            auth.removeAuthenticationConfig(authcfg)
    assert len(_layer(out)["caption"]) >= 4 and any(code == 200 for _, _, code in server.requests)
    for path in tmp_path.glob("cache*/**/*.xml"):
        assert "s3cret" not in path.read_text()


def test_a_project_wmts_layer_becomes_a_wmts_connection(plugin, worker_env, tmp_path, monkeypatch):
    from tile_server import TileServer, wmts_capabilities

    from rsicrc.rsicrc_qgis.caption import job as caption_job

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    tiles = _xyz_tiles(tmp_path)
    with TileServer(tiles) as server:
        (tiles / "wmts.xml").write_text(wmts_capabilities(server.url, ("before", "after"), 18))
        layers = [QgsRasterLayer(f"crs=EPSG:3857&format=image/png&layers={name}&styles=default&tileMatrixSet=g"
                                 f"&url={server.url}/wmts.xml", name, "wms") for name in ("before", "after")]
        assert all(layer.isValid() for layer in layers), [layer.error().summary() for layer in layers]
        assert caption_job.raster_path(layers[0], "BEFORE") == \
            f"WMTS:{server.url}/wmts.xml,layer=before,tilematrixset=g,style=default"
        QgsProject.instance().addMapLayers(layers)
        try:
            out = tmp_path / "wmts.gpkg"
            result = _run({"BEFORE": layers[0].id(), "AFTER": layers[1].id(), "TILE_SIZE": 128, "DEVICE": 0,
                           "EXTENT": WEB_EXTENT, "OUTPUT": str(out)})
        finally:
            QgsProject.instance().removeMapLayers([layer.id() for layer in layers])
    assert result["FEATURES"] == len(_layer(out)["caption"]) >= 4
