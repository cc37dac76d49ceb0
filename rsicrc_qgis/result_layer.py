"""What a result GeoPackage holds besides its features: the rsicrc_metadata table, the blobs.

Read with sqlite3 (standard library), so the plugin needs no torch to know which model made a
layer and whether it can be searched with RS-M-CLIP. The table name comes from the pipeline's layer
module, which imports only numpy.
"""
import json
import sqlite3
from pathlib import Path

import numpy as np

from ..pipeline.gpkg_layer import METADATA_TABLE

EMBEDDING_FIELD = "embedding"


class NotAResultLayer(Exception):
    """The layer was not written by `rsicrc caption`, or its file cannot be read."""


def gpkg_path(layer):
    """File path behind an OGR vector layer ("path|layername=changes" -> path), else None."""
    if layer is None or layer.providerType() != "ogr":
        return None
    path = layer.source().split("|")[0]
    return path if Path(path).is_file() else None


def read_metadata(path):
    """Key -> decoded JSON value of the rsicrc_metadata table; NotAResultLayer when absent."""
    try:
        con = sqlite3.connect(f"file:{Path(path).as_posix()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise NotAResultLayer(f"{path} cannot be opened: {exc}") from exc
    try:
        rows = con.execute(f'SELECT key, value FROM "{METADATA_TABLE}"').fetchall()
    except sqlite3.Error as exc:
        raise NotAResultLayer(f"{path} has no {METADATA_TABLE} table, so it was not written by "
                              "rsicrc caption") from exc
    finally:
        con.close()
    meta = {}
    for key, value in rows:
        try:
            meta[key] = json.loads(value)
        except (TypeError, ValueError):
            meta[key] = value
    return meta


def layer_metadata(layer):
    path = gpkg_path(layer)
    if path is None:
        raise NotAResultLayer(f"Layer \"{layer.name() if layer else '?'}\" is not a GeoPackage "
                              "written by rsicrc caption.")
    return read_metadata(path)


def has_clip(meta):
    return bool(meta.get("clip_model_source"))


def blob_vector(value, dim=None):
    """A BLOB attribute (QByteArray/bytes) -> float32 vector; None when empty or malformed."""
    if value is None:
        return None
    data = bytes(value)
    if not data or len(data) % 4:
        return None
    vec = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if dim is not None and vec.shape[0] != int(dim):
        return None
    return vec
