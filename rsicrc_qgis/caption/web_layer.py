"""A project's web raster layer (provider `wms`: XYZ, WMS, WMTS) as the GDAL source the worker
reads (pipeline/raster/web_services.py), at the zoom level or pixel that fits the model, and the
login of its QGIS authentication configuration as the worker's environment (GDAL's HTTP options):
never in a description file, an argument or a message."""
from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsCoordinateReferenceSystem, QgsProviderRegistry

from ...pipeline.raster.web_services import (TRAINING_PIXEL_M, WebSourceError, description_file, wms_description,
                                             wmts_connection, xyz_description, xyz_zoom)

METRES_PER_DEGREE = 111_320.0


def web_layer_source(layer, target_resolution=None):
    """The GDAL source of a `wms`-provider layer; WebSourceError saying why one cannot be made."""
    parts = QgsProviderRegistry.instance().decodeUri("wms", layer.source())
    url = parts.get("url")
    if not url:
        raise WebSourceError(f"layer \"{layer.name()}\" names no service URL")
    if parts.get("type") == "xyz":
        zoom = xyz_zoom(target_resolution, int(parts.get("zmin") or 0), int(parts.get("zmax") or 19))
        return description_file(xyz_description(url, zoom))
    if parts.get("tileMatrixSet"):
        return wmts_connection(url, parts.get("layers", ""), parts["tileMatrixSet"], parts.get("styles") or None)
    crs = QgsCoordinateReferenceSystem(parts.get("crs", ""))
    if not crs.isValid():
        raise WebSourceError(f"layer \"{layer.name()}\" has no CRS rsicrc can read ({parts.get('crs')})")
    pixel = target_resolution or TRAINING_PIXEL_M
    if crs.isGeographic():
        pixel /= METRES_PER_DEGREE
    extent = layer.extent()
    if crs != layer.crs():
        from qgis.core import QgsCoordinateTransform, QgsProject

        extent = QgsCoordinateTransform(layer.crs(), crs, QgsProject.instance()).transformBoundingBox(extent)
    bounds = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
    return description_file(wms_description(url, parts.get("layers", ""), parts.get("styles", ""), crs.authid(),
                                            parts.get("format"), bounds, pixel))


def web_layer_login(layer):
    """{GDAL_HTTP_AUTH, GDAL_HTTP_USERPWD} of a web layer's Basic authentication configuration, or {}
    (no configuration, or not a web layer); WebSourceError for one rsicrc cannot pass on."""
    if layer is None or layer.providerType() != "wms":
        return {}
    authcfg = QgsProviderRegistry.instance().decodeUri("wms", layer.source()).get("authcfg")
    if not authcfg:
        return {}
    loaded = QgsApplication.authManager().loadAuthenticationConfig(authcfg, QgsAuthMethodConfig(), True)
    ok, config = loaded if isinstance(loaded, tuple) else (loaded, None)
    if not ok or config is None or not config.isValid():
        raise WebSourceError(f"layer \"{layer.name()}\": its authentication configuration {authcfg} cannot be read "
                             "(is the QGIS master password entered?)")
    if config.method() != "Basic":
        raise WebSourceError(f"layer \"{layer.name()}\" authenticates by {config.method()}; rsicrc can pass a "
                             "Basic (user name and password) login to its worker")
    return {"GDAL_HTTP_AUTH": "BASIC",
            "GDAL_HTTP_USERPWD": f"{config.config('username')}:{config.config('password')}"}
