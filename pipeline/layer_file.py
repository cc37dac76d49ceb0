"""Open an existing rsicrc GeoPackage for reading or for adding score fields."""
import os

from . import gpkg_layer as gl
from .errors import BadInput


def open_layer(path):
    """The run metadata of a finished rsicrc layer, or BadInput naming what is wrong."""
    path = str(path)
    if not os.path.exists(path):
        raise BadInput("no such file", path)
    if os.path.isdir(path):
        raise BadInput("is a folder, not a GeoPackage", path)
    try:
        layers = gl.list_layers(path)
    except gl.LayerError:
        raise BadInput("is not a GeoPackage (GDAL cannot open it as vector data)", path) from None
    if gl.LAYER not in layers:
        raise BadInput(f"is not an rsicrc layer (no '{gl.LAYER}' layer)", path)
    try:
        meta = gl.read_metadata(path)
    except gl.LayerError as exc:
        raise BadInput(f"its run metadata cannot be read ({exc})", path) from None
    if not isinstance(meta.get("model_sha256"), str) or not isinstance(meta.get("embedding_dim"), int):
        raise BadInput(f"is not an rsicrc layer (the '{gl.LAYER}' layer has no rsicrc run metadata)", path)
    if meta.get("complete") is not True:
        raise BadInput("is an unfinished run; finish it with `rsicrc caption ... --resume`", path)
    return meta
