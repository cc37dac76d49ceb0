"""`caption_at`: what changed in the tile-sized window centred on a map point (the map tool).

The serve worker answers one click at a time with its warm model. The pair is checked once
(`open_pair`, the checks of `rsicrc caption`) and the plan is kept, with both dates' readers
open, per (files as they are on disk, options): a click then costs one windowed read of each
date and one model call. The window is the tile of `tile_size` px centred on the point, moved
inward to lie inside the overlap (as `rsicrc caption` moves edge tiles, never padding); a click
at the centre of a tile of `rsicrc caption`'s grid reads exactly that tile. The tile is then
described by describe.BatchDescriber, the very code that writes a layer's row, so the
caption, change score, nodata rule (--max-nodata) and RS-M-CLIP classes are those of the layer.

The where-changed map comes from `Captioner.describe_pairs(..., attention=True)`; a model
package without it gives attention null and says so in the answer's warnings.
"""
import inspect
import math
import os
from collections import OrderedDict

from ..caption_params import CaptionParams, ParamError, check_value
from ..errors import BadInput
from ..layer.schema import CLASS_FIELDS
from ..raster.grid_reader import open_on_grid
from ..raster.sources import file_stamp
from ..raster.tile_reader import read_batch
from ..raster.tiling import Tile
from .clip_annotator import ClipTileAnnotator, parse_classes
from .describe import BatchDescriber
from .steps import open_pair

MAX_PATH_CHARS = 4096
MAX_CRS_CHARS = 20_000  # a WKT2 string of a projected CRS is a few KB
MAX_PLANS = 4  # pairs kept checked and open; the map tool uses one
ATTENTION_MISSING = ("the where-changed map is not available: this model package's describe_pairs "
                     "has no attention output")


def _stamp(path):
    try:
        return tuple(file_stamp(path).values())
    except OSError:
        return None  # open_pair names the file and the problem


def _text(request, name, limit, required=True):
    value = request.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"'{name}' must be a non-empty string")
    if len(value) > limit:
        raise BadInput(f"'{name}' has {len(value):,} characters; at most {limit:,}")
    if "\x00" in value:
        raise BadInput(f"'{name}' holds a NUL character")
    return value


def _flag(request, name):
    value = request.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadInput(f"'{name}' must be true or false")
    return value


def _coordinate(request, name):
    value = request.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"'{name}' must be a number (the point's coordinate in 'crs')")
    try:
        value = float(value)
    except OverflowError:  # a JSON integer of hundreds of digits
        value = math.inf
    if not math.isfinite(value):
        raise BadInput(f"'{name}' must be a finite number")
    return value


def _option(request, name, default):
    """An option of `rsicrc caption`, with that option's own bounds (pipeline/caption_params.py)."""
    value = request.get(name, default)
    if isinstance(value, bool):
        raise BadInput(f"'{name}' must not be true/false")
    if name == "bands" and isinstance(value, list):
        value = ",".join(str(v) for v in value)
    try:
        return check_value(name, value)
    except ParamError as exc:
        raise BadInput(f"'{name}': {exc}") from None


def _crs(text):
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(text)
    except (CRSError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise BadInput(f"'crs' {text[:80]!r} is not a coordinate reference system ({reason})") from None


def _to_grid(x, y, crs_text, grid_crs):
    """The point in the grid's CRS."""
    if crs_text is None:
        return x, y
    crs = _crs(crs_text)
    if crs == grid_crs:
        return x, y
    from rasterio.warp import transform

    try:
        xs, ys = transform(crs, grid_crs, [x], [y])
    except Exception as exc:  # noqa: BLE001 - PROJ's own reason, one line
        raise BadInput(f"the point ({x:g}, {y:g}) cannot be transformed from {crs.to_string()} to the rasters' "
                       f"CRS {grid_crs.to_string()} ({str(exc).splitlines()[0][:200]})") from None
    gx, gy = float(xs[0]), float(ys[0])
    if not (math.isfinite(gx) and math.isfinite(gy)):
        raise BadInput(f"the point ({x:g}, {y:g}) in {crs.to_string()} has no position in the rasters' CRS "
                       f"{grid_crs.to_string()}")
    return gx, gy


def window_at(plan, gx, gy, size):
    """(col, row) of the size x size window centred on grid point (gx, gy), inside the overlap;
    BadInput when the point lies outside the overlap."""
    col_f, row_f = ~plan.grid.transform @ (gx, gy)
    c0, r0, width, height = plan.window
    if not (c0 <= col_f <= c0 + width and r0 <= row_f <= r0 + height):
        x0, y0 = plan.grid.transform @ (c0, r0)
        x1, y1 = plan.grid.transform @ (c0 + width, r0 + height)
        raise BadInput(f"the point ({gx:.10g}, {gy:.10g}) is outside the area BEFORE and AFTER share "
                       f"(x {min(x0, x1):.10g} to {max(x0, x1):.10g}, y {min(y0, y1):.10g} to {max(y0, y1):.10g} "
                       f"in {plan.grid.crs.to_string()})")

    def clamp(centre, start, length):
        return min(max(math.floor(centre - size / 2 + 0.5), start), start + length - size)

    return clamp(col_f, c0, width), clamp(row_f, r0, height)


class _OpenPair:
    """A checked pair with both dates open on the working grid."""

    def __init__(self, plan):
        self.plan = plan
        self.before = open_on_grid(plan.before, plan.grid)
        try:
            self.after = open_on_grid(plan.after, plan.grid)
        except BaseException:
            self.before.close()
            raise

    def read(self, col, row, size):
        """The TileBatch of one tile, read and masked as `rsicrc caption` reads its tiles."""
        return read_batch([Tile(0, row, col, size)], [self.before, self.after])

    def close(self):
        self.before.close()
        self.after.close()


def supports_attention(cap):
    try:
        return "attention" in inspect.signature(cap.describe_pairs).parameters
    except (TypeError, ValueError):
        return False


def _attention_rows(result):
    """The (h, w) map of the one pair as lists of floats, row 0 = north; None when absent."""
    maps = getattr(result, "attention", None)
    if maps is None:
        return None
    import numpy as np

    values = np.asarray(maps.float().cpu().numpy() if hasattr(maps, "cpu") else maps, dtype=np.float64)
    if values.ndim != 3 or values.shape[0] != 1:
        raise ValueError(f"the model's attention map has shape {values.shape}, expected (1, h, w)")
    if not np.all(np.isfinite(values)):
        raise ValueError("the model's attention map is not finite (NaN or infinite values)")
    return values[0].tolist()


def _read_request(request, default_model, default_clip):
    """The caption_at request's values, each checked (BadInput naming the first bad one)."""
    crs = request.get("crs")
    if isinstance(crs, int) and not isinstance(crs, bool):
        crs = f"EPSG:{crs}"
    return {
        "before": _text(request, "before", MAX_PATH_CHARS),
        "after": _text(request, "after", MAX_PATH_CHARS),
        "x": _coordinate(request, "x"), "y": _coordinate(request, "y"),
        "crs": _text({"crs": crs}, "crs", MAX_CRS_CHARS, required=False),
        "tile_size": _option(request, "tile_size", 256),
        "bands": _option(request, "bands", None),
        "max_nodata": _option(request, "max_nodata", 0.5),
        "reproject": _flag(request, "reproject"),
        "clip": _flag(request, "clip"),
        "classes": _text(request, "classes", 2000, required=False),
        "model": _text(request, "model", MAX_PATH_CHARS, required=False) or default_model,
        "clip_model": _text(request, "clip_model", MAX_PATH_CHARS, required=False) or default_clip,
    }


def _class_labels(columns, annotator):
    """The window's RS-M-CLIP classes of both dates (None without classes)."""
    if annotator is None or not annotator.classes:
        return None
    labels = {name: columns[name][0] for name, _ in CLASS_FIELDS}
    labels.update(class_changed=bool(labels["class_changed"]), before_class_prob=float(labels["before_class_prob"]),
                  after_class_prob=float(labels["after_class_prob"]), model_source=annotator.clip.source)
    return labels


class PointCaptioner:
    """Answers caption_at requests; `model_for(source, clip)` is the worker's model cache."""

    def __init__(self, model_for, default_model, default_clip):
        self._model_for = model_for
        self._default_model = default_model
        self._default_clip = default_clip
        self._pairs = OrderedDict()
        self._annotators = OrderedDict()

    def _pair(self, before, after, bands, tile_size, reproject):
        key = (os.path.abspath(before), os.path.abspath(after), _stamp(before), _stamp(after), bands, tile_size,
               reproject)
        pair = self._pairs.get(key)
        if pair is not None:
            self._pairs.move_to_end(key)
            return pair
        # One window is read whatever the plan's size, so no limit on the number of tiles.
        plan = open_pair(CaptionParams(before, after, None, bands=bands, tile_size=tile_size, reproject=reproject),
                         yes_large=True, windows_only=True)
        pair = _OpenPair(plan)
        for old in [k for k in self._pairs if k[:2] == key[:2]]:  # the files changed on disk
            self._pairs.pop(old).close()
        self._pairs[key] = pair
        while len(self._pairs) > MAX_PLANS:
            self._pairs.popitem(last=False)[1].close()
        return pair

    def _annotator(self, source, classes):
        try:
            names = parse_classes(classes)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        key = (source, tuple(names))
        if key not in self._annotators:
            self._annotators[key] = ClipTileAnnotator(self._model_for(source, True), names)
            while len(self._annotators) > MAX_PLANS:  # each holds its class embeddings
                self._annotators.popitem(last=False)
        self._annotators.move_to_end(key)
        return self._annotators[key]

    def caption_at(self, request):
        r = _read_request(request, self._default_model, self._default_clip)
        pair = self._pair(r["before"], r["after"], r["bands"], r["tile_size"], r["reproject"])
        plan = pair.plan
        gx, gy = _to_grid(r["x"], r["y"], r["crs"], plan.grid.crs)
        col, row = window_at(plan, gx, gy, r["tile_size"])
        batch = pair.read(col, row, r["tile_size"])

        cap = self._model_for(r["model"], False)
        annotator = self._annotator(r["clip_model"], r["classes"]) if r["clip"] else None
        attention = supports_attention(cap)
        described = BatchDescriber(cap, plan, r["max_nodata"], clip_annotator=annotator,
                                   attention=attention).describe(batch)
        if described.skips:
            fraction = described.skips[0]["nodata_fraction"]
            raise BadInput(f"the {r['tile_size']} px window at this point is {fraction:.0%} nodata (more than the "
                           f"{r['max_nodata']:g} allowed); `rsicrc caption` skips such tiles")
        warnings = list(plan.warnings)
        heat = _attention_rows(described.result) if attention else None
        if heat is None:
            warnings.append(ATTENTION_MISSING)
        columns = described.columns
        return {
            "ok": True,
            "caption": columns["caption"][0],
            "changed": bool(columns["changed"][0]),
            "change_score": float(columns["change_score"][0]),
            "nodata_fraction": float(columns["nodata_fraction"][0]),
            "window": {"col": int(col), "row": int(row), "size": int(r["tile_size"])},
            "bounds": [float(v) for v in described.bounds[0]],
            "crs": plan.grid.crs.to_wkt(),
            "crs_name": plan.grid.crs.to_string(),
            "attention": heat,
            "clip": _class_labels(columns, annotator),
            "model_source": cap.source,
            "model_sha256": cap.sha256,
            "warnings": warnings,
        }

    def close(self):
        while self._pairs:
            self._pairs.popitem()[1].close()
