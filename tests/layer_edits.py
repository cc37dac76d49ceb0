"""Hand edits of a result layer, as a user would make them in QGIS: through GDAL's own bindings."""
from osgeo import ogr


def set_null(path, field, fid=None):
    """Set `field` to NULL on feature `fid` (default: the first one); returns that fid."""
    ds = ogr.Open(str(path), 1)
    layer = ds.GetLayerByName("changes")
    feature = layer.GetFeature(fid) if fid is not None else layer.GetNextFeature()
    feature.SetFieldNull(field)
    assert layer.SetFeature(feature) == 0
    fid = feature.GetFID()
    ds = None
    return fid
