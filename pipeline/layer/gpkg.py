"""The GeoPackage that `rsicrc caption` writes and `search`/`info` read (docs/interfaces.md).

Written and read through GDAL (pyogrio). Features go in as one Arrow batch per call, which GDAL's
GeoPackage driver inserts in one transaction: a killed run leaves whole batches, so `--resume`
finds exactly the tiles that are done. GDAL keeps the spatial index, extent and feature count.
The run metadata is the layer's GDAL metadata (the GeoPackage metadata extension) rather than a
table of its own, so QGIS sees one layer; one metadata item per key, each value JSON.

Three things GDAL has no call for are plain SQL on the file: the UNIQUE index on (tile_id,
interval) (a tile's interval can never be written twice), the REAL score columns that `rsicrc
search` adds and fills, and the series fields added to a partial layer of an older version that
is resumed (attribute columns only; no geometry or GeoPackage system table is touched).

Only os, json, re and numpy are imported at module level: the QGIS side uses the names and the BLOB
and metadata encodings here without GDAL's Python wheels.
"""
import contextlib
import hashlib
import json
import os
import re
import sqlite3
import warnings

import numpy as np

LAYER = "changes"
GEOMETRY_COLUMN = "geom"
PARTIAL_SUFFIX = ".partial"  # an unfinished run is built in OUT + PARTIAL_SUFFIX
CORE_FIELDS = [
    ("tile_id", "int"),
    ("row", "int"),
    ("col", "int"),
    ("caption", "text"),
    ("changed", "bool"),
    ("change_score", "real"),
    ("nodata_fraction", "real"),
]
# Right after CORE_FIELDS in every caption layer, two dates too: which interval of the series
# (0 for BEFORE -> AFTER) a feature captions, the base names of its two dates, and per tile the
# captioned interval with the highest change_score (the same on every feature of the tile).
SERIES_FIELDS = [
    ("interval", "int"),
    ("before_name", "text"),
    ("after_name", "text"),
    ("most_changed_interval", "int"),
]
# With --heatmap: each tile's attention map, (h, w) float32 LE row-major, top row first (pipeline/caption/heatmap.py).
ATTENTION_FIELD = "attention"
# Layers of `rsicrc caption-batch`: which pair of the CSV a tile is from (its name, or its row).
PAIR_FIELD = "pair"
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class LayerError(Exception):
    """The file is not a readable rsicrc layer, or GDAL refused a write; the message says which."""


def layer_error_reason(exc):
    """GDAL's reason inside a LayerError ("path: doing failed (reason)"), for a message of one's own."""
    text = str(exc)
    start = text.find(" failed (")
    return text[start + len(" failed ("):-1] if start >= 0 and text.endswith(")") else text


class BlobLengthError(ValueError):
    """An embedding BLOB that does not hold `dim` float32 values: `row` is its index among the BLOBs
    given, `detail` what is wrong with it ("has 3 bytes, expected 256 ...")."""

    def __init__(self, row, detail):
        self.row, self.detail = row, detail
        super().__init__(f"embedding of row {row} {detail}")


def date_name(path):
    """What a layer calls a date (before_name, after_name): its file's base name, or the last part
    of a GDAL path or URL (/vsicurl/https://host/2019.tif -> 2019.tif)."""
    path = str(path)
    if path.startswith("/vsi") or "://" in path:
        return re.split(r"[/\\]", path.split("?", 1)[0].rstrip("/\\"))[-1]
    return os.path.basename(os.path.normpath(path))


def partial_path(output):
    return str(output) + PARTIAL_SUFFIX


# --- the one BLOB encoding of embeddings --------------------------------------------------------

def embedding_blob(vector):
    return np.asarray(vector, dtype="<f4").tobytes()


def blobs_to_matrix(blobs, dim):
    """BLOBs (float32 LE) -> (N, dim) float32; a missing BLOB (None/empty) becomes a row of NaN.

    A BLOB of another length raises ValueError naming its row: the layer was tampered with or made
    by another model.
    """
    out = np.full((len(blobs), int(dim)), np.nan, dtype=np.float32)
    for i, blob in enumerate(blobs):
        if blob is None or (isinstance(blob, (bytes, bytearray, memoryview, str)) and len(blob) == 0):
            continue
        if not isinstance(blob, (bytes, bytearray, memoryview)):  # bytes(42) would be 42 zero bytes
            raise BlobLengthError(i, f"is a {type(blob).__name__}, not a BLOB")
        data = bytes(blob)
        if len(data) != 4 * int(dim):
            raise BlobLengthError(i, f"has {len(data)} bytes, expected {4 * int(dim)} ({dim} float32 values)")
        out[i] = np.frombuffer(data, dtype="<f4")
    return out


# --- field names ------------------------------------------------------------------------------------

def slug_field(text, taken, prefix="q_"):
    """A field name for a query text: q_<ASCII words>, unique among `taken`.

    A text with no ASCII letter or digit (新建筑, здания) gets q_<8 hex digits of its SHA-1>: the
    same name for the same text in every run, different for different texts.
    """
    words = re.findall(r"[a-z0-9]+", text.lower())
    base = (prefix + "_".join(words))[:40].rstrip("_") if words else \
        prefix + hashlib.sha1(text.strip().encode("utf-8")).hexdigest()[:8]
    name, n = base, 2
    while name.lower() in {t.lower() for t in taken}:
        name, n = f"{base}_{n}", n + 1
    return name


def written_by_caption(name):
    """Whether `rsicrc caption` wrote a field of this name (a score must never overwrite it)."""
    from ..caption.clip_annotator import CLASS_FIELDS, CLIP_BLOB_FIELDS

    written = [f for f, _ in CORE_FIELDS + SERIES_FIELDS + CLASS_FIELDS] + \
        ["fid", GEOMETRY_COLUMN, "embedding", ATTENTION_FIELD, PAIR_FIELD, *CLIP_BLOB_FIELDS]
    return name.lower() in {f.lower() for f in written}


def check_field_name(name):
    from ..errors import BadInput

    if not _FIELD_NAME.match(name):
        raise BadInput(f"--field {name!r} is not a valid field name (letters, digits, _; not starting with a digit)")
    if written_by_caption(name):
        raise BadInput(f"--field {name!r} would overwrite a field that `rsicrc caption` wrote")
    return name


# --- metadata ---------------------------------------------------------------------------------------

def encode_metadata(values):
    """Run metadata as GDAL layer metadata items: every value JSON-encoded into a string."""
    return {str(k): json.dumps(v, allow_nan=False) for k, v in values.items()}


def decode_metadata(items):
    """GDAL layer metadata items -> values; an item that is not JSON stays the raw string."""
    out = {}
    for key, text in (items or {}).items():
        try:
            out[key] = json.loads(text)
        except (TypeError, ValueError):
            out[key] = text
    return out


# --- GDAL access ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _gdal(path, doing):
    """GDAL's warnings silenced (it frowns on the .partial suffix), its errors as LayerError."""
    from pyogrio.errors import DataLayerError, DataSourceError, FieldError, GeometryError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            yield
        except (DataSourceError, DataLayerError, FieldError, GeometryError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LayerError(f"{path}: {doing} failed ({first})") from None
        except UnicodeDecodeError:  # a TEXT value GDAL hands over undecoded: a hand edit in SQL
            raise LayerError(f"{path}: {doing} failed (a text value is not valid UTF-8)") from None


def _arrow_schema(fields):
    import pyarrow as pa

    types = {"int": pa.int64(), "text": pa.string(), "real": pa.float64(), "bool": pa.bool_(),
             "blob": pa.binary()}
    return pa.schema([(name, types[kind]) for name, kind in fields] + [(GEOMETRY_COLUMN, pa.binary())])


class LayerWriter:
    """Creates the `changes` layer and appends batches of tiles to it, each batch one transaction."""

    def __init__(self, path, crs_wkt, fields):
        """fields: [(name, kind)] in layer order, CORE_FIELDS first; kind: int, text, real, bool, blob."""
        self.path = str(path)
        self.crs_wkt = crs_wkt
        self.fields = list(fields)
        self.schema = _arrow_schema(self.fields)

    def _write(self, table, doing, append, metadata=None):
        import pyogrio

        with _gdal(self.path, doing):
            pyogrio.write_arrow(table, self.path, layer=LAYER, driver="GPKG", geometry_name=GEOMETRY_COLUMN,
                                geometry_type="Polygon", crs=self.crs_wkt, append=append,
                                layer_metadata=metadata,
                                # 1.2 rather than GDAL's newest: QGIS 3.22's GDAL warns on later versions.
                                dataset_options=None if append else {"VERSION": "1.2"})

    def create(self, metadata):
        """A new file holding the empty layer and its metadata (values JSON-encoded here)."""
        self._write(self.schema.empty_table(), "creating the layer", False, encode_metadata(metadata))
        key = "tile_id, interval" if "interval" in {name for name, _ in self.fields} else "tile_id"
        con = sqlite3.connect(self.path)
        try:
            with con:
                con.execute(f'CREATE UNIQUE INDEX "idx_{LAYER}_tile_id" ON "{LAYER}"({key})')
        finally:
            con.close()

    def append(self, columns, bounds):
        """columns: {field: sequence} for every field; bounds: (N, 4) left, bottom, right, top."""
        import pyarrow as pa
        import shapely

        bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
        if len(bounds) == 0:
            return
        geoms = shapely.to_wkb(shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3]))
        arrays = [pa.array(list(columns[name]), type=self.schema.field(name).type) for name, _ in self.fields]
        arrays.append(pa.array(list(geoms), type=pa.binary()))
        self._write(pa.Table.from_arrays(arrays, schema=self.schema), "writing tiles", True)

    def set_metadata(self, values):
        """Add or replace metadata items (others are kept)."""
        write_metadata(self.path, values)


def write_metadata(path, values):
    """Add or replace metadata items of an existing layer (others are kept).

    pyogrio sets layer metadata when it opens a layer for writing; an append of no rows does just
    that. GDAL replaces the whole set, so the current items are read and merged first.
    """
    import pyarrow as pa
    import pyogrio

    items = dict(read_metadata_items(path))
    items.update(encode_metadata(values))
    with _gdal(path, "writing the run metadata"):
        pyogrio.write_arrow(pa.schema([]).empty_table(), str(path), layer=LAYER, driver="GPKG", append=True,
                            layer_metadata=items)


def layer_info(path):
    import pyogrio

    with _gdal(path, "reading the layer"):
        return pyogrio.read_info(str(path), layer=LAYER)


def list_layers(path):
    import pyogrio

    with _gdal(path, "listing the layers"):
        return [str(name) for name, _ in pyogrio.list_layers(str(path))]


def read_metadata_items(path):
    return layer_info(path).get("layer_metadata") or {}


def read_metadata(path):
    return decode_metadata(read_metadata_items(path))


def read_columns(path, columns, fids=None, geometry=False):
    """{column: numpy array} (plus "fid", and "geom" WKB when asked) of the features, in fid order."""
    import pyogrio.raw

    with _gdal(path, "reading features"):
        meta, fid, geom, values = pyogrio.raw.read(str(path), layer=LAYER, columns=list(columns),
                                                   read_geometry=geometry, return_fids=True,
                                                   fids=None if fids is None else np.asarray(fids, np.int64))
    out = dict(zip(meta["fields"], values))
    out["fid"] = np.asarray(fid, dtype=np.int64)
    if geometry:
        out[GEOMETRY_COLUMN] = geom
    order = np.argsort(out["fid"], kind="stable")
    return {k: np.asarray(v)[order] for k, v in out.items()}


def iter_column_batches(path, columns, batch_size=4096):
    """(fids (n,), {column: list}) chunks of the features, so memory stays flat on big layers."""
    import pyogrio.raw

    with _gdal(path, "reading features"):
        with pyogrio.raw.open_arrow(str(path), layer=LAYER, columns=list(columns), read_geometry=False,
                                    return_fids=True, batch_size=batch_size, use_pyarrow=True) as (meta, reader):
            fid_name = meta.get("fid_column") or "OGC_FID"
            for batch in reader:
                table = batch.to_pydict()
                fids = np.asarray(table.pop(fid_name, table.pop("OGC_FID", [])), dtype=np.int64)
                yield fids, table


def first_bad_text(path, columns):
    """(fid, tile_id, column) of the first feature whose text in `columns` is not valid UTF-8, or None.

    GDAL hands such values over undecoded and pyogrio then fails on the whole batch without
    saying where; this finds the feature to name (a read-only query on attribute columns).
    """
    con = sqlite3.connect(str(path))
    try:
        names = {r[1] for r in con.execute(f'PRAGMA table_info("{LAYER}")')}
        for column in [c for c in columns if c in names]:
            rows = con.execute(f'SELECT fid, CAST(tile_id AS INTEGER), CAST("{column}" AS BLOB) FROM "{LAYER}" '
                               f"WHERE typeof(\"{column}\") IN ('text', 'blob') ORDER BY fid")
            for fid, tile_id, value in rows:
                try:
                    bytes(value).decode("utf-8")
                except UnicodeDecodeError:
                    return fid, tile_id, column
    finally:
        con.close()
    return None


# Declared types of a column a score may go into: the numeric ones (the QGIS side accepts Int
# fields too). A TEXT, BLOB, BOOLEAN or date column is the user's data and is never overwritten.
SCORE_TYPES = ("REAL", "FLOAT", "DOUBLE", "INTEGER", "INT", "BIGINT", "MEDIUMINT", "SMALLINT", "TINYINT")


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


_SQL_TYPES = {"int": "INTEGER", "text": "TEXT", "real": "REAL"}


def add_fields(path, values, timeout=30):
    """Add the fields of `values` ([(name, kind, value)], kind int, text or real) that the layer
    lacks, each set to its value on every feature, in one transaction; the names are ours."""
    con = _attribute_update_connection(path, timeout)
    try:
        with con:
            have = {r[1].lower() for r in con.execute(f'PRAGMA table_info("{LAYER}")')}
            for name, kind, value in values:
                if name.lower() not in have:
                    con.execute(f'ALTER TABLE "{LAYER}" ADD COLUMN "{name}" {_SQL_TYPES[kind]}')
                    con.execute(f'UPDATE "{LAYER}" SET "{name}" = ?', (value,))
    except sqlite3.Error as exc:
        raise LayerError(f"{path}: adding the fields {', '.join(v[0] for v in values)} failed ({exc})") from None
    finally:
        con.close()


def write_scores(path, field, fids, scores, timeout=30):
    """Add the REAL column `field` when missing and set it for `fids` (NaN -> NULL), one transaction."""
    con = _attribute_update_connection(path, timeout)
    try:
        with con:
            # The name is put in SQL between double quotes: one that could end them is refused here
            # (the CLI holds names to check_field_name; the QGIS side passes the user's setting).
            if not isinstance(field, str) or not field or '"' in field or "\0" in field:
                raise LayerError(f"{path}: {field!r} cannot be a score field name")
            types = {r[1].lower(): str(r[2] or "").upper()
                     for r in con.execute(f'PRAGMA table_info("{LAYER}")')}
            if field.lower() not in types:
                con.execute(f'ALTER TABLE "{LAYER}" ADD COLUMN "{field}" REAL')
            elif types[field.lower()] not in SCORE_TYPES:  # a field of the user's: never overwritten
                raise LayerError(f"{path}: field {field} exists and holds {types[field.lower()] or 'untyped'} "
                                 f"values, not scores; choose another score field")
            values = [(None if not np.isfinite(s) else float(s), int(f)) for f, s in zip(fids, scores)]
            con.executemany(f'UPDATE "{LAYER}" SET "{field}" = ? WHERE fid = ?', values)
            con.execute("UPDATE gpkg_contents SET last_change = strftime('%Y-%m-%dT%H:%M:%fZ','now') "
                        "WHERE table_name = ?", (LAYER,))
    finally:
        con.close()
