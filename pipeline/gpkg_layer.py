"""The GeoPackage that `rsicrc caption` writes and `search`/`info` read (docs/interfaces.md).

GDAL (through pyogrio) creates the empty layer, so the file carries exactly the GeoPackage
tables, spatial index and triggers that GDAL and QGIS expect. Features are then written with
sqlite3 directly, one transaction per batch: a killed run leaves a file whose committed batches
are whole and whose last, uncommitted batch is rolled back by SQLite on the next open. That is
what makes `--resume` safe. GDAL's R-tree triggers call ST_* SQL functions that only GDAL
registers; `connect` registers equivalents reading the envelope of our geometry blobs.
"""
import json
import re
import sqlite3
import struct

import numpy as np

LAYER = "changes"
METADATA_TABLE = "rsicrc_metadata"
PARTIAL_SUFFIX = ".partial"  # an unfinished run is built in OUT + PARTIAL_SUFFIX
CORE_FIELDS = [
    ("tile_id", "INTEGER"),
    ("row", "INTEGER"),
    ("col", "INTEGER"),
    ("caption", "TEXT"),
    ("changed", "BOOLEAN"),
    ("change_score", "REAL"),
    ("nodata_fraction", "REAL"),
]
SQL_TYPES = {"blob": "BLOB", "text": "TEXT", "real": "REAL", "bool": "BOOLEAN", "int": "INTEGER"}
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# GeoPackage binary header: magic, version 0, flags (little endian, [minx,maxx,miny,maxy] envelope).
_GP_FLAGS = 0b0000_0011
_HEADER = struct.Struct("<2sBBi4d")


def polygon_blob(bounds, srs_id):
    """GeoPackage geometry blob of the rectangle (left, bottom, right, top)."""
    left, bottom, right, top = bounds
    ring = [(left, top), (right, top), (right, bottom), (left, bottom), (left, top)]
    wkb = struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<2d", x, y) for x, y in ring)
    return _HEADER.pack(b"GP", 0, _GP_FLAGS, srs_id, left, right, bottom, top) + wkb


def blob_envelope(blob):
    """(minx, maxx, miny, maxy) from a GeoPackage geometry blob, None when it has no envelope."""
    if blob is None or len(blob) < 8:
        return None
    flags = blob[3]
    if (flags >> 1) & 0b111 == 0:
        return None
    order = "<" if flags & 1 else ">"
    return struct.unpack_from(order + "4d", blob, 8)


def partial_path(output):
    return str(output) + PARTIAL_SUFFIX


def embedding_blob(vector):
    return np.asarray(vector, dtype="<f4").tobytes()


def blob_embedding(blob):
    return np.frombuffer(blob, dtype="<f4")


def slug_field(text, taken, prefix="q_"):
    """A field name for a query text: q_<words>, unique among `taken`."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    base = (prefix + "_".join(words))[:40].rstrip("_") or prefix + "query"
    name, n = base, 2
    while name.lower() in {t.lower() for t in taken}:
        name, n = f"{base}_{n}", n + 1
    return name


def written_by_caption(name):
    """Whether `rsicrc caption` wrote a field of this name (a score must never overwrite it)."""
    from .clip_fields import CLASS_FIELDS, CLIP_BLOB_FIELDS

    written = [f for f, _ in CORE_FIELDS] + ["fid", "geom", "embedding", *CLIP_BLOB_FIELDS] + \
        [f for f, _ in CLASS_FIELDS]
    return name.lower() in {f.lower() for f in written}


def check_field_name(name):
    from .errors import BadInput

    if not _FIELD_NAME.match(name):
        raise BadInput(f"--field {name!r} is not a valid field name (letters, digits, _; not starting with a digit)")
    if written_by_caption(name):
        raise BadInput(f"--field {name!r} would overwrite a field that `rsicrc caption` wrote")
    return name


def _env(i):
    def f(blob):
        env = blob_envelope(blob)
        return None if env is None else env[i]
    return f


def connect(path):
    con = sqlite3.connect(str(path), timeout=30)
    con.create_function("ST_IsEmpty", 1, lambda b: 1 if b is None or (len(b) > 3 and b[3] & 0b1_0000) else 0,
                        deterministic=True)
    for i, name in enumerate(("ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY")):
        con.create_function(name, 1, _env(i), deterministic=True)
    return con


def create_layer(path, crs_wkt, extra_fields):
    """An empty `changes` polygon layer plus the metadata table. extra_fields: [(name, kind)]."""
    import warnings

    import pyogrio.raw

    with warnings.catch_warnings():  # GDAL frowns on the .partial suffix of the file being built
        warnings.simplefilter("ignore", RuntimeWarning)
        pyogrio.raw.write(str(path), np.array([], dtype=object), [np.array([], dtype=np.int64)], ["tile_id"],
                          layer=LAYER, driver="GPKG", geometry_type="Polygon", crs=crs_wkt,
                          # 1.2 rather than GDAL's newest: QGIS 3.22's GDAL warns on later versions.
                          dataset_options={"VERSION": "1.2"})
    con = connect(path)
    with con:
        for name, sql_type in CORE_FIELDS[1:] + [(n, SQL_TYPES[k]) for n, k in extra_fields]:
            con.execute(f'ALTER TABLE "{LAYER}" ADD COLUMN "{name}" {sql_type}')
        con.execute(f'CREATE UNIQUE INDEX "idx_{LAYER}_tile_id" ON "{LAYER}"(tile_id)')
        con.execute(f'CREATE TABLE "{METADATA_TABLE}" (key TEXT PRIMARY KEY, value TEXT)')
    con.close()


def srs_id(con):
    row = con.execute("SELECT srs_id FROM gpkg_geometry_columns WHERE table_name = ?", (LAYER,)).fetchone()
    return row[0]


def columns(con, table=LAYER):
    return [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]


def read_metadata(con):
    try:
        rows = con.execute(f'SELECT key, value FROM "{METADATA_TABLE}"').fetchall()
    except sqlite3.OperationalError:
        return None
    return {k: json.loads(v) for k, v in rows}


def write_metadata(con, values):
    con.executemany(f'INSERT OR REPLACE INTO "{METADATA_TABLE}"(key, value) VALUES (?, ?)',
                    [(k, json.dumps(v)) for k, v in values.items()])


def insert_features(con, rows):
    """rows: dicts with geom (blob) and field values; one INSERT per row, caller commits."""
    if not rows:
        return
    names = list(rows[0])
    sql = 'INSERT INTO "{}" ({}) VALUES ({})'.format(
        LAYER, ", ".join(f'"{n}"' for n in names), ", ".join("?" * len(names)))
    con.executemany(sql, [tuple(r[n] for n in names) for r in rows])


def update_extent(con):
    env = con.execute(f'SELECT min(minx), min(miny), max(maxx), max(maxy) FROM "rtree_{LAYER}_geom"').fetchone()
    con.execute(
        "UPDATE gpkg_contents SET min_x=?, min_y=?, max_x=?, max_y=?, "
        "last_change=strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE table_name=?", (*env, LAYER))


def add_real_field(con, name):
    if name.lower() not in {c.lower() for c in columns(con)}:
        con.execute(f'ALTER TABLE "{LAYER}" ADD COLUMN "{name}" REAL')


def iter_blobs(con, column, chunk=4096):
    """(fids (n,), float32 matrix (n, d)) chunks of a BLOB embedding column, in fid order."""
    cur = con.execute(f'SELECT fid, "{column}" FROM "{LAYER}" ORDER BY fid')
    while True:
        rows = cur.fetchmany(chunk)
        if not rows:
            return
        fids = np.array([r[0] for r in rows], dtype=np.int64)
        yield fids, np.stack([blob_embedding(r[1]) for r in rows])
