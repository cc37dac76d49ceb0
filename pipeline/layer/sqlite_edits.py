"""What GDAL has no call for, done in SQLite on the GeoPackage: finding a tile's broken text, adding
fields to a layer and writing scores into them. Only attribute columns are touched, never a
geometry or a GeoPackage system table; every identifier goes into SQL through schema.sql."""
import sqlite3

import numpy as np

from .gpkg import LayerError
from .schema import LAYER, sql

# Declared types of a column a score may go into: the numeric ones (the QGIS side accepts Int
# fields too). A TEXT, BLOB, BOOLEAN or date column is the user's data and is never overwritten.
SCORE_TYPES = ("REAL", "FLOAT", "DOUBLE", "INTEGER", "INT", "BIGINT", "MEDIUMINT", "SMALLINT", "TINYINT")
_SQL_TYPES = {"int": "INTEGER", "text": "TEXT", "real": "REAL"}


def first_bad_text(path, columns):
    """(fid, tile_id, column) of the first feature whose text in `columns` is not valid UTF-8, or None.

    GDAL hands such values over undecoded and pyogrio then fails on the whole batch without
    saying where; this finds the feature to name (a read-only query on attribute columns).
    """
    con = sqlite3.connect(str(path))
    try:
        names = _column_types(con)
        for column in [c for c in columns if c.lower() in names]:
            rows = con.execute(sql("SELECT fid, CAST(tile_id AS INTEGER), CAST({} AS BLOB) FROM {} "
                                   "WHERE typeof({}) IN ('text', 'blob') ORDER BY fid", column, LAYER, column))
            for fid, tile_id, value in rows:
                try:
                    bytes(value).decode("utf-8")
                except UnicodeDecodeError:
                    return fid, tile_id, column
    finally:
        con.close()
    return None


def _column_types(con):
    """{lower-case column name: declared type, upper case} of the layer's table."""
    return {r[1].lower(): str(r[2] or "").upper() for r in con.execute(sql("PRAGMA table_info({})", LAYER))}


def _never_called(*_):
    raise sqlite3.OperationalError("a score update must not change a tile's geometry or fid")


def _attribute_update_connection(path, timeout):
    con = sqlite3.connect(str(path), timeout=timeout)
    # GDAL's R-tree triggers name its ST_* SQL functions in clauses that SQLite compiles for every
    # UPDATE of the table; they only run when a geometry or fid changes, which an attribute update
    # never does. The names must exist to compile; calling one would be a bug, so it raises.
    for name in ("ST_IsEmpty", "ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY"):
        con.create_function(name, 1, _never_called)
    return con


def add_fields(path, values, timeout=30):
    """Add the fields of `values` ([(name, kind, value)], kind int, text or real) that the layer
    lacks, each set to its value on every feature, in one transaction; the names are ours."""
    con = _attribute_update_connection(path, timeout)
    try:
        with con:
            have = _column_types(con)
            for name, kind, value in values:
                if name.lower() not in have:
                    con.execute(sql("ALTER TABLE {} ADD COLUMN {} ", LAYER, name) + _SQL_TYPES[kind])
                    con.execute(sql("UPDATE {} SET {} = ?", LAYER, name), (value,))
    except sqlite3.Error as exc:
        raise LayerError(f"{path}: adding the fields {', '.join(v[0] for v in values)} failed ({exc})") from None
    finally:
        con.close()


def write_scores(path, field, fids, scores, timeout=30):
    """Add the REAL column `field` when missing and set it for `fids` (NaN -> NULL), one transaction."""
    try:
        sql("{}", field)
    except ValueError:
        raise LayerError(f"{path}: {field!r} cannot be a score field name") from None
    con = _attribute_update_connection(path, timeout)
    try:
        with con:
            types = _column_types(con)
            if field.lower() not in types:
                con.execute(sql("ALTER TABLE {} ADD COLUMN {} REAL", LAYER, field))
            elif types[field.lower()] not in SCORE_TYPES:  # a field of the user's: never overwritten
                raise LayerError(f"{path}: field {field} exists and holds {types[field.lower()] or 'untyped'} "
                                 f"values, not scores; choose another score field")
            values = [(None if not np.isfinite(s) else float(s), int(f)) for f, s in zip(fids, scores)]
            con.executemany(sql("UPDATE {} SET {} = ? WHERE fid = ?", LAYER, field), values)
            con.execute("UPDATE gpkg_contents SET last_change = strftime('%Y-%m-%dT%H:%M:%fZ','now') "
                        "WHERE table_name = ?", (LAYER,))
    finally:
        con.close()
