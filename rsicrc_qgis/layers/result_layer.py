"""What a result GeoPackage holds besides its features: the run metadata, the embedding BLOBs.

The run metadata is the `changes` layer's GDAL metadata (docs/interfaces.md), read with the
osgeo bindings QGIS itself ships, so the plugin needs no torch to know which model made a layer
and whether it can be searched with RS-M-CLIP. GDAL takes a plain file path: no URI to build,
so any character a folder name may hold is fine. The decoding is the pipeline's own.
"""
import functools
import os
import re
import tempfile
from pathlib import Path

from qgis.core import QgsProviderRegistry

from ...pipeline.layer.metadata import decode_metadata
from ...pipeline.layer.schema import LAYER
from ..qgis_enums import NO_GEOMETRY

# A time series (`caption D1 D2 D3 ...`): every feature is one (tile, interval); the fields and
# the `intervals` metadata key are those of docs/interfaces.md.
INTERVAL_FIELD, MOST_CHANGED_FIELD = "interval", "most_changed_interval"
BEFORE_NAME_FIELD, AFTER_NAME_FIELD = "before_name", "after_name"


class NotAResultLayer(Exception):
    """The layer was not written by `rsicrc caption`, or its file cannot be read."""


_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


@functools.lru_cache(maxsize=None)
def gdal_decodes_percent_escapes():
    """Whether QGIS's GDAL reads "%41" in a GeoPackage path as "A", so it cannot open the file.

    GDAL 3.6 opens a GeoPackage read-only with NOLOCK (as QGIS does first) through an SQLite URI
    in which it escapes "?" and "#" but not "%". Asked of the GDAL at hand, once, on a scratch file.
    Inside QGIS 3.40+ gdal.UseExceptions() is on for the whole process (the Processing plugin
    turns it on at import), so a failed open raises instead of returning None: both count.
    """
    from osgeo import gdal, ogr

    with tempfile.TemporaryDirectory(prefix="rsicrc-gdal-probe-") as tmp:
        path = os.path.join(tmp, "probe%41.gpkg")
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
        ds.CreateLayer("probe")
        ds = None
        gdal.PushErrorHandler("CPLQuietErrorHandler")
        try:
            opened = gdal.OpenEx(path, gdal.OF_VECTOR | gdal.OF_READONLY, open_options=["NOLOCK=YES"])
        except RuntimeError:  # gdal.UseExceptions() is on
            opened = None
        finally:
            gdal.PopErrorHandler()
        broken = opened is None
        opened = None
    return broken


def unopenable_path_reason(path):
    """Why QGIS could not open a GeoPackage at `path` (None when it can)."""
    if "|" in str(path):
        return "its path holds \"|\", which QGIS layer sources use as a separator"
    escape = _PERCENT_ESCAPE.search(str(path))
    if escape and gdal_decodes_percent_escapes():
        from osgeo import gdal

        return (f"its path holds \"{escape.group(0)}\" (\"%\" and two hex digits), which this QGIS's GDAL "
                f"{gdal.__version__} misreads when it opens a GeoPackage")
    return None


def layer_file(layer):
    """(file path, layer name) behind an OGR vector layer, else None."""
    if layer is None or layer.providerType() != "ogr":
        return None
    parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    path = parts.get("path") or ""
    if not Path(path).is_file():
        return None
    return path, parts.get("layerName") or LAYER


def gpkg_path(layer):
    """File path behind an OGR vector layer ("path|layername=changes" -> path), else None."""
    found = layer_file(layer)
    return found[0] if found else None


def read_result_metadata(path, layer_name=LAYER):
    """Key -> decoded value of the layer's run metadata; NotAResultLayer when it has none."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")  # the reason goes into our message instead
    try:
        gdal.ErrorReset()
        try:
            ds = gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_READONLY)
        except RuntimeError:  # gdal.UseExceptions() is on (QGIS 3.40+): the same error, raised
            ds = None
        if ds is None:
            raise NotAResultLayer(f"{path} cannot be opened: "
                                  f"{gdal.GetLastErrorMsg() or 'not a vector file GDAL can read'}")
        lyr = ds.GetLayerByName(layer_name)
        items = lyr.GetMetadata_Dict() if lyr is not None else {}
    finally:
        gdal.PopErrorHandler()
    meta = decode_metadata(items)
    if lyr is None or "model_source" not in meta:
        what = f"no layer \"{layer_name}\"" if lyr is None else \
            f"no rsicrc run metadata on layer \"{layer_name}\""
        raise NotAResultLayer(f"{path} has {what}, so it was not written by rsicrc caption.")
    return meta


def layer_metadata(layer):
    found = layer_file(layer)
    if found is None:
        raise NotAResultLayer(f"Layer \"{layer.name() if layer else '?'}\" is not a GeoPackage "
                              "written by rsicrc caption.")
    return read_result_metadata(*found)


def has_clip(meta):
    return bool(meta.get("clip_model_source"))


def layer_intervals(layer):
    """[(interval, before name, after name)] of a caption layer, oldest first; [] without intervals.

    From the run metadata, else (a copy of the layer, say) from the features themselves.
    """
    if layer is None or layer.fields().indexOf(INTERVAL_FIELD) < 0:
        return []
    try:
        listed = layer_metadata(layer).get("intervals")
    except NotAResultLayer:
        listed = None
    if isinstance(listed, list) and listed:
        try:
            return sorted((int(i["interval"]), str(i["before"]), str(i["after"])) for i in listed)
        except (KeyError, TypeError, ValueError):
            pass  # a hand-edited item: the features still say
    return _intervals_from_features(layer)


def _intervals_from_features(layer):
    from qgis.core import QgsFeatureRequest

    names = [n for n in (BEFORE_NAME_FIELD, AFTER_NAME_FIELD) if layer.fields().indexOf(n) >= 0]
    out = []
    for interval in sorted(v for v in layer.uniqueValues(layer.fields().indexOf(INTERVAL_FIELD))
                           if isinstance(v, int)):
        request = QgsFeatureRequest().setFilterExpression(f'"{INTERVAL_FIELD}" = {interval}').setLimit(1)
        request.setFlags(NO_GEOMETRY)
        request.setSubsetOfAttributes([INTERVAL_FIELD, *names], layer.fields())
        feature = next(layer.getFeatures(request), None)
        pair = [str(feature[n]) if feature is not None and n in names else "?"
                for n in (BEFORE_NAME_FIELD, AFTER_NAME_FIELD)]
        out.append((interval, *pair))
    return out
