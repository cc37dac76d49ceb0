"""What a caption layer is made of: its name, its fields and how names are made (docs/interfaces.md).

Every field name of the layer is defined here once; the writer, the readers, `search`, the Ray
engine's part files and the QGIS side take them from here. Standard library only, so that QGIS's
own Python imports it. An identifier goes into SQL only through `sql`, which quotes it.
"""
import hashlib
import os
import re

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
# The L2-normalised pair embedding, float32 LE (pipeline/layer/blobs.py), after the query scores.
EMBEDDING_FIELD = "embedding"
# With --heatmap: each tile's attention map, (h, w) float32 LE row-major, top row first
# (pipeline/caption/heatmap.py).
ATTENTION_FIELD = "attention"
# With --extent / --area: the fraction of the tile's square inside the area (pipeline/raster/area.py).
AREA_FRACTION_FIELD = "area_fraction"
# Layers of `rsicrc caption-batch`: which pair of the CSV a tile is from (its name, or its row).
PAIR_FIELD = "pair"
# With --clip: the RS-M-CLIP image embeddings of both dates, and with classes the zero-shot land cover.
CLIP_BLOB_FIELDS = ("clip_before", "clip_after")
CLASS_FIELDS = [("before_class", "text"), ("after_class", "text"), ("class_changed", "bool"),
                ("before_class_prob", "real"), ("after_class_prob", "real")]
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def date_name(path):
    """What a layer calls a date (before_name, after_name): its file's base name, or the last part
    of a GDAL path or URL (/vsicurl/https://host/2019.tif -> 2019.tif)."""
    path = str(path)
    if path.startswith("<"):  # an inline service description: its kind (GDAL_WMS)
        return re.match(r"<\s*([A-Za-z_]*)", path).group(1) or "inline"
    if path.startswith("/vsi") or "://" in path:
        return re.split(r"[/\\]", path.split("?", 1)[0].rstrip("/\\"))[-1]
    return os.path.basename(os.path.normpath(path))


def partial_path(output):
    return str(output) + PARTIAL_SUFFIX


def slug_field(text, taken, prefix="q_"):
    """A field name for a query text: q_<ASCII words>, unique among `taken`.

    A text with no ASCII letter or digit (新建筑, здания) gets q_<8 hex digits of its SHA-1>: the
    same name for the same text in every run, different for different texts.
    """
    words = re.findall(r"[a-z0-9]+", text.lower())
    base = (prefix + "_".join(words))[:40].rstrip("_") if words else \
        prefix + hashlib.sha1(text.strip().encode("utf-8"), usedforsecurity=False).hexdigest()[:8]
    name, n = base, 2
    while name.lower() in {t.lower() for t in taken}:
        name, n = f"{base}_{n}", n + 1
    return name


def written_by_caption(name):
    """Whether `rsicrc caption` wrote a field of this name (a score must never overwrite it)."""
    written = [f for f, _ in CORE_FIELDS + SERIES_FIELDS + CLASS_FIELDS] + \
        ["fid", GEOMETRY_COLUMN, EMBEDDING_FIELD, ATTENTION_FIELD, PAIR_FIELD, *CLIP_BLOB_FIELDS]
    return name.lower() in {f.lower() for f in written}


def check_field_name(name):
    from ..errors import BadInput

    if not _FIELD_NAME.match(name):
        raise BadInput(f"--field {name!r} is not a valid field name (letters, digits, _; not starting with a digit)")
    if written_by_caption(name):
        raise BadInput(f"--field {name!r} would overwrite a field that `rsicrc caption` wrote")
    return name


def quote_identifier(name):
    """`name` as an SQL identifier between double quotes; ValueError for a name that could end them
    (the CLI holds score names to check_field_name, the QGIS side passes the user's setting)."""
    if not isinstance(name, str) or not name or '"' in name or "\0" in name:
        raise ValueError(f"{name!r} cannot be a field or table name")
    return f'"{name}"'


def sql(template, *identifiers):
    """An SQL statement: `template` with each {} replaced by the quoted identifier (values go as
    parameters, never into the text)."""
    return template.format(*(quote_identifier(name) for name in identifiers))
