"""A project's web raster layer (provider `wms`: XYZ, WMS, WMTS) as the GDAL source the worker
reads (pipeline/raster/web_services.py), at the zoom level or pixel that fits the model."""
from qgis.core import QgsCoordinateReferenceSystem, QgsProviderRegistry

from ...pipeline.raster.web_services import (TRAINING_PIXEL_M, WebSourceError, description_file, wms_description,
                                             wmts_connection, xyz_description, xyz_zoom)

METRES_PER_DEGREE = 111_320.0


def web_layer_source(layer, target_resolution=None):
    """The GDAL source of a `wms`-provider layer; WebSourceError saying why one cannot be made."""
    parts = QgsProviderRegistry.instance().decodeUri("wms", layer.source())
    if parts.get("authcfg"):
        # The worker would need the credentials; they are never written into a description file.
        raise WebSourceError(f"layer \"{layer.name()}\" uses a QGIS authentication configuration, which rsicrc "
                             "cannot pass to its worker yet; use a service that needs none, or a GeoTIFF export")
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
