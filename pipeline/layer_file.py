"""Open an existing rsicrc GeoPackage for reading or for adding score fields."""
import os
import sqlite3

from . import gpkg_layer as gl
from .errors import BadInput


def open_layer(path):
    """sqlite3 connection to a finished rsicrc layer, or BadInput naming what is wrong."""
    path = str(path)
    if not os.path.exists(path):
        raise BadInput("no such file", path)
    if os.path.isdir(path):
        raise BadInput("is a folder, not a GeoPackage", path)
    try:
        con = gl.connect(path)
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError:
        raise BadInput("is not a GeoPackage (not an SQLite database)", path) from None
    if gl.LAYER not in tables or gl.METADATA_TABLE not in tables:
        con.close()
        raise BadInput(f"is not an rsicrc layer (no '{gl.LAYER}' layer with '{gl.METADATA_TABLE}' table)", path)
    meta = gl.read_metadata(con)
    if not meta.get("complete"):
        con.close()
        raise BadInput("is an unfinished run; finish it with `rsicrc caption ... --resume`", path)
    return con, meta
