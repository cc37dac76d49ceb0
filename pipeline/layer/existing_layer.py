"""Open an existing rsicrc GeoPackage for reading or for adding score fields.

A layer may have been edited by hand (QGIS, SQL) or by other software; what search and info read
is checked here first, so a damaged layer is refused with one line naming the file and what is
wrong (BadInput, exit code 2) instead of failing somewhere inside.
"""
import json
import os
import stat

from ...model import bounded_json
from ..errors import BadInput
from ..output_file import folder_write_problem
from .gpkg import LayerError, layer_error_reason, list_layers, read_info
from .metadata import decode_metadata
from .schema import LAYER
from .sqlite_edits import first_bad_text

MAX_EMBEDDING_DIM = 65536  # far above any model's; a bigger value is damage, not a model
# Fields `rsicrc caption` always writes that search and info read.
REQUIRED_FIELDS = ("tile_id", "caption", "changed", "embedding")


def _is_int(v, low=0, high=None):
    return isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)


def _is_dim(v):
    return _is_int(v, 1, MAX_EMBEDDING_DIM)


def _optional(check):
    return lambda v: v is None or check(v)


def _str_dict(v):
    return isinstance(v, dict) and all(isinstance(t, str) for t in v.values())


def _clip_queries(v):
    return isinstance(v, dict) and all(isinstance(q, dict) for q in v.values())


def _tile_list(v):
    return isinstance(v, list) and all(isinstance(t, dict) for t in v)


# The documented run metadata (docs/interfaces.md) that search and info use: key -> (check, what
# it must be). One table for both commands, so `info` accepts exactly the layers `search` does.
# A value of the wrong type means the metadata was edited by hand or by other software: the
# layer is refused naming the key, since what else was changed cannot be known.
METADATA_CHECKS = {
    "model_sha256": (lambda v: isinstance(v, str) and v != "", "the model's sha256 text"),
    "embedding_dim": (_is_dim, f"a whole number from 1 to {MAX_EMBEDDING_DIM}"),
    "complete": (lambda v: isinstance(v, bool), "true or false"),
    "model_source": (_optional(lambda v: isinstance(v, str)), "a text"),
    "queries": (_optional(_str_dict), "an object of field: text"),
    "clip_queries": (_optional(_clip_queries), "an object of field: {text, when, change}"),
    "params": (_optional(lambda v: isinstance(v, dict)), "an object"),
    "skipped_tiles": (_optional(_tile_list), "a list of {tile_id, row, col, nodata_fraction}"),
    "skipped_count": (_optional(_is_int), "a whole number of at least 0"),
    "features": (_optional(_is_int), "a whole number of at least 0"),
    "created": (_optional(lambda v: isinstance(v, str)), "a date text"),
    "software_version": (_optional(lambda v: isinstance(v, str)), "a text"),
    "clip_model_source": (_optional(lambda v: isinstance(v, str)), "a text"),
    "clip_model_sha256": (_optional(lambda v: isinstance(v, str)), "a sha256 text"),
    "clip_embedding_dim": (_optional(_is_dim), f"a whole number from 1 to {MAX_EMBEDDING_DIM}"),
}
REQUIRED_METADATA = ("model_sha256", "embedding_dim")


def _raise_constant(name):
    raise ValueError(f"{name} is not JSON")


def _short(text, n=40):
    text = str(text)
    return repr(text if len(text) <= n else text[:n] + "...")


def _decode(items, path):
    """The metadata values; a documented key whose value is not JSON is refused."""
    meta = decode_metadata(items)
    for key in METADATA_CHECKS:
        if key in items:
            try:  # strict: NaN and Infinity are not JSON (rsicrc never writes them)
                meta[key] = bounded_json.loads(items[key], parse_constant=_raise_constant)
            except bounded_json.JsonLimit as exc:
                raise BadInput(f"its run metadata item {key} {exc} ({_short(items[key])})", path) from None
            except (TypeError, ValueError):
                raise BadInput(f"its run metadata item {key} is not valid JSON ({_short(items[key])})",
                               path) from None
    return meta


def open_layer(path):
    """The run metadata of a finished rsicrc layer, or BadInput naming what is wrong."""
    path = str(path)
    if not os.path.exists(path):
        raise BadInput("no such file", path)
    if os.path.isdir(path):
        raise BadInput("is a folder, not a GeoPackage", path)
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block or never end
        raise BadInput("is not a regular file (a device or FIFO), not a GeoPackage", path)
    try:
        layers = list_layers(path)
    except LayerError:
        raise BadInput("is not a GeoPackage (GDAL cannot open it as vector data)", path) from None
    if LAYER not in layers:
        raise BadInput(f"is not an rsicrc layer (no '{LAYER}' layer)", path)
    try:
        info = read_info(path)
    except LayerError as exc:
        raise BadInput(f"its run metadata cannot be read ({exc})", path) from None
    items = info.get("layer_metadata") or {}
    if not any(k in items for k in (*REQUIRED_METADATA, "run_fingerprint")):
        raise BadInput(f"is not an rsicrc layer (the '{LAYER}' layer has no rsicrc run metadata)", path)
    meta = _decode(items, path)
    for key in REQUIRED_METADATA:
        if key not in meta:
            raise BadInput(f"its run metadata has no {key}, so its embeddings cannot be used; caption the "
                           f"rasters again", path)
    for key, (check, what) in METADATA_CHECKS.items():
        if key in meta and not check(meta[key]):
            raise BadInput(f"its run metadata item {key} is {_short(json.dumps(meta[key]))}, expected {what}",
                           path)
    if meta.get("complete") is not True:
        raise BadInput("is an unfinished run; finish it with `rsicrc caption ... --resume`", path)
    fields = info.get("fields")
    missing = [f for f in REQUIRED_FIELDS if f not in set(fields if fields is not None else [])]
    if missing:
        raise BadInput(f"has no field {', '.join(missing)} (a layer written by `rsicrc caption` has them)", path)
    return meta


def field_dtypes(path):
    """{field name: pyogrio dtype} of the layer's attribute fields."""
    info = read_info(path)
    return dict(zip((str(f) for f in info["fields"]), (str(d) for d in info["dtypes"])))


def check_writable(path):
    """BadInput unless a score field can be added: the file opens for writing, and a file can be
    made in its folder (SQLite writes its journal next to the database). Tried for real, not by
    permission bits: root may write a 0444 file, and no one may write on a read-only mount."""
    path = str(path)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        raise BadInput(f"cannot be written ({exc.strerror or exc}), so the score field cannot be added; make "
                       f"it writable or search a copy", path) from None
    os.close(fd)
    folder = os.path.dirname(os.path.abspath(path))
    problem = folder_write_problem(folder)
    if problem:
        raise BadInput(f"cannot be written: its folder {folder} is not writable ({problem}) and "
                       f"SQLite needs it for its journal, so the score field cannot be added; search a copy "
                       f"in a writable folder", path)


def read_checked(path, failure, columns, read):
    """Run `read()`; a GDAL error becomes BadInput naming the file and saying `failure` with GDAL's
    reason, or naming the tile whose text in `columns` is not UTF-8 (a hand edit in SQL)."""
    try:
        return read()
    except LayerError as exc:
        if "UTF-8" in str(exc):
            bad = first_bad_text(path, columns)
            if bad is not None:
                fid, tile_id, column = bad
                raise BadInput(f"the {column} of tile {tile_id} (fid {fid}) is not valid UTF-8 text; the "
                               f"layer was edited outside rsicrc", path) from None
        raise BadInput(f"{failure} ({layer_error_reason(exc)})", path) from None
