"""Open and check a BEFORE/AFTER pair (or a series of dates), and describe the grid the tiles are cut from.

Every check here runs before any model work, so a bad pair fails in a second with a one-line
BadInput naming the file. The working grid is BEFORE's own grid, or BEFORE's extent resampled
to --target-resolution. AFTER is read on that grid either directly (same CRS, same pixel size,
origins a whole number of pixels apart) or through a GDAL warped VRT (--reproject, or when the
grid is resampled). A time series is checked the same way, date by date: every later date
against BEFORE (the first date) exactly as AFTER is, and the tiles cover what all dates share.
"""
import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.warp import transform_bounds

from ..errors import BadInput
from .grid_reader import open_on_grid
from .grid_rules import ALIGN_TOLERANCE_PX, FAR_FACTOR, LEVIR_PIXEL_M, METERS_PER_DEGREE, PIXEL_SIZE_RTOL
from .plan_size import check_plan_size
from .sources import WEB_SERVICE_DRIVERS, open_raster
from .stretch import needs_stretch, sample_limits
from .area import AreaSpec, area_window, read_area, tile_mask
from .tiling import tile_grid



@dataclass
class Grid:
    crs: object
    transform: Affine
    width: int
    height: int

    @property
    def res(self):
        return (self.transform.a, -self.transform.e)

    def tile_bounds(self, row, col, size):
        left, top = self.transform @ (col, row)
        right, bottom = self.transform @ (col + size, row + size)
        return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))


@dataclass
class SourcePlan:
    """How one date is read onto the working grid."""

    path: str
    bands: list
    dtype: str
    warp: bool  # read through a WarpedVRT onto the grid
    offset: tuple = (0, 0)  # (col, row) of the grid origin in this file's pixels, when not warped
    limits: list = None  # stretch limits per band, None for uint8


@dataclass
class PairPlan:
    grid: Grid
    window: tuple  # overlap on the grid: (col_off, row_off, width, height)
    before: SourcePlan
    after: SourcePlan
    warnings: list = field(default_factory=list)
    later: list = field(default_factory=list)  # SourcePlan of each date after AFTER, oldest first
    area: object = None  # area.Area of --extent / --area; the window is then its part of the overlap
    keep: object = None  # with an area: per tile id of the window's grid, whether the tile touches it

    @property
    def dates(self):
        return [self.before, self.after, *self.later]

    def describe(self):
        out = {
            "crs": self.grid.crs.to_string(),
            "transform": list(self.grid.transform)[:6],
            "grid_size": [self.grid.width, self.grid.height],
            "overlap_window": list(self.window),
            "bands": self.before.bands,
            "stretch": {"before": self.before.limits, "after": self.after.limits},
            "after_warped": self.after.warp,
        }
        if self.later:  # only then: a pair's description (and so its run fingerprint) stays as it was
            out["stretch"]["later"] = [sp.limits for sp in self.later]
            out["later_warped"] = [sp.warp for sp in self.later]
        if self.area is not None:  # likewise: a run without an area describes itself as before
            out["area"] = self.area.describe()
        return out

    def tiles(self, tile_size, overlap):
        """The TileGrid of the plan's window, less the tiles outside its area."""
        return tile_grid(self.window, tile_size, overlap, self.keep)


def _choose_bands(src, path, bands):
    if bands is not None:
        if max(bands) > src.count:
            raise BadInput(f"has {src.count} band(s); --bands {','.join(map(str, bands))} asks for band {max(bands)}", path)
        return bands
    colour = [i + 1 for i, ci in enumerate(src.colorinterp) if ci != ColorInterp.alpha]
    if len(colour) == 3:
        return colour
    raise BadInput(
        f"has {len(colour)} non-alpha band(s); RGB needs three: pass --bands (e.g. --bands 4,3,2)", path
    )


def _check_georeferenced(src, path):
    if src.crs is None:
        raise BadInput("has no coordinate reference system (not georeferenced)", path)
    t = src.transform
    if t.b != 0 or t.d != 0:
        raise BadInput("has a rotated geotransform; only north-up rasters are supported", path)
    if t.e >= 0:
        raise BadInput("is not north-up (positive pixel height); only north-up rasters are supported", path)
    if np.dtype(src.dtypes[0]).kind == "c":
        raise BadInput(f"has complex pixels ({src.dtypes[0]}); need integer or real bands", path)


def _pixel_size_m(grid):
    xres = grid.res[0]
    if grid.crs.is_geographic:
        return xres * METERS_PER_DEGREE
    try:
        return xres * grid.crs.linear_units_factor[1]
    except Exception:  # a CRS without a linear unit: cannot compare, keep quiet
        return None


def _same_grid_problem(b, a):
    """None when AFTER's grid equals BEFORE's up to whole-pixel shifts, else what differs."""
    if b.crs != a.crs:
        return f"CRS {a.crs.to_string()} differs from BEFORE's {b.crs.to_string()}"
    bx, by = b.res
    ax, ay = a.res
    if not (math.isclose(ax, bx, rel_tol=PIXEL_SIZE_RTOL) and math.isclose(ay, by, rel_tol=PIXEL_SIZE_RTOL)):
        return f"pixel size {ax:g} x {ay:g} differs from BEFORE's {bx:g} x {by:g}"
    dx = (a.transform.c - b.transform.c) / bx
    dy = (b.transform.f - a.transform.f) / by
    shift = max(abs(dx - round(dx)), abs(dy - round(dy)))
    if shift > ALIGN_TOLERANCE_PX:
        return f"grid is shifted by {shift:.2f} px against BEFORE's (more than {ALIGN_TOLERANCE_PX} px)"
    return None


def _overlap_window(grid, bounds):
    """Whole grid pixels inside both the grid and `bounds` (in grid CRS): (col, row, w, h)."""
    inv = ~grid.transform
    left, bottom, right, top = bounds
    c0, r0 = inv @ (left, top)
    c1, r1 = inv @ (right, bottom)
    eps = ALIGN_TOLERANCE_PX
    col0 = max(0, math.ceil(min(c0, c1) - eps))
    row0 = max(0, math.ceil(min(r0, r1) - eps))
    col1 = min(grid.width, math.floor(max(c0, c1) + eps))
    row1 = min(grid.height, math.floor(max(r0, r1) + eps))
    return col0, row0, col1 - col0, row1 - row0


def _intersect(a, b):
    col0, row0 = max(a[0], b[0]), max(a[1], b[1])
    col1, row1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return col0, row0, col1 - col0, row1 - row0


def _shared_window(grid, sources, paths, tile_size):
    """The grid window every date covers; BadInput names the date that leaves less than a tile."""
    window = (0, 0, grid.width, grid.height)
    for src, path in zip(sources[1:], paths[1:]):
        bounds = src.bounds
        if src.crs != grid.crs:
            bounds = transform_bounds(src.crs, grid.crs, *src.bounds, densify_pts=21)
        own = _overlap_window(grid, bounds)
        if own[2] <= 0 or own[3] <= 0:
            raise BadInput(f"does not overlap BEFORE ({paths[0]})", path)
        if own[2] < tile_size or own[3] < tile_size:
            raise BadInput(f"overlaps BEFORE by only {own[2]} x {own[3]} px, smaller than one {tile_size} px tile",
                           path)
        window = _intersect(window, own)
        if window[2] <= 0 or window[3] <= 0:
            raise BadInput("shares no pixel with the area the earlier dates all cover", path)
        if window[2] < tile_size or window[3] < tile_size:
            raise BadInput(f"shares only {window[2]} x {window[3]} px with the area the earlier dates all cover, "
                           f"smaller than one {tile_size} px tile", path)
    return window


def plan_pair(before_path, after_path, bands=None, tile_size=256, reproject=False, target_resolution=None,
              overlap=0, yes_large=False, later=(), area=AreaSpec(), windows_only=False):
    """Check the pair (with `later`: the series BEFORE, AFTER, *later) and return the PairPlan, or
    raise BadInput (also for a plan beyond the limits of pipeline/raster/plan_size.py without yes_large).
    `area`: an AreaSpec; only the tiles touching it are planned. `windows_only`: the plan is for
    reading single windows (a click), so a web service needs no area."""
    paths = [str(before_path), str(after_path), *(str(p) for p in later)]
    before_path = paths[0]
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(open_raster(path)) for path in paths]
        for src, path in zip(sources, paths):
            _check_georeferenced(src, path)
        chosen = [_choose_bands(src, path, bands) for src, path in zip(sources, paths)]
        b = sources[0]

        if target_resolution is not None:
            if target_resolution <= 0:
                raise BadInput(f"--target-resolution must be positive, got {target_resolution}")
            # Metres, as the pixel-size warning speaks; degrees on a geographic CRS.
            step = target_resolution / METERS_PER_DEGREE if b.crs.is_geographic else target_resolution
            width = int(b.width * b.res[0] / step)
            height = int(b.height * b.res[1] / step)
            if min(width, height) < 1:
                raise BadInput(f"--target-resolution {target_resolution} m leaves less than one pixel", before_path)
            transform = Affine(step, 0, b.transform.c, 0, -step, b.transform.f)
            grid = Grid(b.crs, transform, width, height)
            pixel_growth = b.res[0] * b.res[1] / step ** 2
            warps = [True] * len(sources)
        else:
            grid = Grid(b.crs, b.transform, b.width, b.height)
            pixel_growth = 1.0
            warps = [False]
            for src, path in zip(sources[1:], paths[1:]):
                problem = _same_grid_problem(b, src)
                if problem and not reproject:
                    raise BadInput(f"{problem}; resample it onto BEFORE's grid or pass --reproject", path)
                warps.append(problem is not None)

        window = _shared_window(grid, sources, paths, tile_size)
        if not windows_only:
            _check_web_sources(sources, paths, area)
        window, chosen_area, keep = _area_plan(grid, window, area, tile_size, overlap)
        planned = tile_grid(window, tile_size, overlap, keep)
        unlapped = len(planned) if not overlap else len(tile_grid(window, tile_size, 0, _mask_or_none(
            grid, window, tile_size, chosen_area)))
        check_plan_size(len(planned), unlapped, pixel_growth, tile_size, yes_large, before_path)

        notes = _pixel_notes(grid)

        def source(src, path, bands_of, warp):
            if warp:
                offset = (0, 0)
            else:
                ox, oy = ~src.transform @ (grid.transform.c, grid.transform.f)
                offset = (int(round(ox)), int(round(oy)))
            return SourcePlan(path, bands_of, src.dtypes[bands_of[0] - 1], warp, offset)

        dates = [source(*args) for args in zip(sources, paths, chosen, warps)]
        plan = PairPlan(grid, window, dates[0], dates[1], notes, dates[2:], chosen_area, keep)

    for sp in plan.dates:
        if any(needs_stretch(d) for d in _dtypes(sp)):
            with open_on_grid(sp, plan.grid) as reader:
                sp.limits = sample_limits(reader.sample_source, sp.bands, reader.window(plan.window), sp.path)
    return plan


def _pixel_notes(grid):
    size_m = _pixel_size_m(grid)
    if size_m is not None and not (LEVIR_PIXEL_M / FAR_FACTOR <= size_m <= LEVIR_PIXEL_M * FAR_FACTOR):
        return [f"pixel size is about {size_m:.3g} m, far from LEVIR-CC's {LEVIR_PIXEL_M} m that the model "
                f"was trained on; captions may be less reliable (--target-resolution resamples)"]
    return []


def _area_plan(grid, window, spec, tile_size, overlap):
    """(window, Area, keep mask) of an AreaSpec on the shared window; (window, None, None) without one."""
    if not spec:
        return window, None, None
    area = read_area(spec, grid.crs)
    window = area_window(grid, window, area, tile_size, overlap, spec.area or f"--extent {spec.extent}")
    return window, area, tile_mask(grid, tile_grid(window, tile_size, overlap), area)


def _mask_or_none(grid, window, tile_size, area):
    return None if area is None else tile_mask(grid, tile_grid(window, tile_size), area)


def _check_web_sources(sources, paths, area):
    """A web service's raster (an XYZ/TMS, WMS or WMTS description) is the world at its finest
    level: without an area the run would be every tile on the planet."""
    if area:
        return
    for src, path in zip(sources, paths):
        if src.driver in WEB_SERVICE_DRIVERS:
            raise BadInput(f"is a web service ({src.driver}, {src.width:,} x {src.height:,} px); give the area to "
                           f"caption with --extent XMIN,YMIN,XMAX,YMAX[,CRS] or --area FILE", path)


def _dtypes(sp):
    with open_raster(sp.path) as src:
        return [src.dtypes[i - 1] for i in sp.bands]
