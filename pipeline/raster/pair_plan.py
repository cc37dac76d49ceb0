"""Open and check a BEFORE/AFTER pair (or a series of dates), and describe the grid the tiles are cut from.

Every check here runs before any model work, so a bad pair fails in a second with a one-line
BadInput naming the file. The working grid is BEFORE's own grid, or BEFORE's extent resampled
to --target-resolution. AFTER is read on that grid either directly (same CRS, same pixel size,
origins a whole number of pixels apart) or through a GDAL warped VRT (--reproject, or when the
grid is resampled). A time series is checked the same way, date by date: every later date
against BEFORE (the first date) exactly as AFTER is, and the tiles cover what all dates share.

A warped read takes its validity from an alpha band filled by GDAL's warper (the source's own
alpha band, else one added to the VRT): the warper folds the source's nodata value, alpha band
and internal or external mask band into it and leaves it at 0 outside the source's footprint, so
grid pixels that a raster's footprint does not cover (e.g. a rotated footprint seen from another
CRS) are nodata instead of black. A float source with neither a nodata value nor a mask is warped
with NaN as its nodata, so its NaNs are left out the same way; any non-finite value still read
makes a pixel invalid, and so does a band equal to the source's nodata value, as on the same
grid. Edge pixels of the bilinear warp are valid when their warped alpha is at
least half of full opacity: GDAL marks a pixel valid exactly when its centre falls on a valid
source pixel and averages only valid neighbours into it, so for an opaque source the alpha is 0
or full and nodata_fraction is the share of a tile's pixel centres outside the footprint (the
rule by which the footprint polygon rasterises); the half only decides semi-transparent alpha.
"""
import contextlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..errors import BadInput
from .plan_size import check_plan_size
from .stretch import needs_stretch, sample_limits, to_uint8
from .tiling import tile_grid

# Origins may differ by this fraction of a pixel and still count as the same grid.
ALIGN_TOLERANCE_PX = 0.05
PIXEL_SIZE_RTOL = 1e-4
LEVIR_PIXEL_M = 0.5
# Pixel sizes outside [LEVIR/FAR, LEVIR*FAR] get a warning.
FAR_FACTOR = 2.0
METERS_PER_DEGREE = 111_320.0


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
        return out


def gdal_reason(exc):
    """GDAL's own message behind a rasterio error ("Read failed. See previous exception" hides it)."""
    messages = []
    while exc is not None:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if text and "See previous exception" not in text:
            messages.append(text)
        exc = exc.__cause__ or exc.__context__
    return messages[-1] if messages else "GDAL gave no reason"


def _open(path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        first_line = str(e).splitlines()[0] if str(e) else "cannot be read"
        reason = "no such file" if "No such file" in first_line else f"cannot be opened as a raster ({first_line})"
        raise BadInput(reason, path) from None


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
              overlap=0, yes_large=False, later=()):
    """Check the pair (with `later`: the series BEFORE, AFTER, *later) and return the PairPlan, or
    raise BadInput (also for a plan beyond the limits of pipeline/raster/plan_size.py without yes_large)."""
    paths = [str(before_path), str(after_path), *(str(p) for p in later)]
    before_path = paths[0]
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(_open(path)) for path in paths]
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
        check_plan_size(len(tile_grid(window, tile_size, overlap)), len(tile_grid(window, tile_size)), pixel_growth,
                        tile_size, yes_large, before_path)

        notes = []
        size_m = _pixel_size_m(grid)
        if size_m is not None and not (LEVIR_PIXEL_M / FAR_FACTOR <= size_m <= LEVIR_PIXEL_M * FAR_FACTOR):
            notes.append(
                f"pixel size is about {size_m:.3g} m, far from LEVIR-CC's {LEVIR_PIXEL_M} m that the model "
                f"was trained on; captions may be less reliable (--target-resolution resamples)"
            )

        def source(src, path, bands_of, warp):
            if warp:
                offset = (0, 0)
            else:
                ox, oy = ~src.transform @ (grid.transform.c, grid.transform.f)
                offset = (int(round(ox)), int(round(oy)))
            return SourcePlan(path, bands_of, src.dtypes[bands_of[0] - 1], warp, offset)

        dates = [source(*args) for args in zip(sources, paths, chosen, warps)]
        plan = PairPlan(grid, window, dates[0], dates[1], notes, dates[2:])

    for sp in plan.dates:
        if any(needs_stretch(d) for d in _dtypes(sp)):
            with open_on_grid(sp, plan.grid) as reader:
                sp.limits = sample_limits(reader.sample_source, sp.bands, reader.window(plan.window), sp.path)
    return plan


def _dtypes(sp):
    with _open(sp.path) as src:
        return [src.dtypes[i - 1] for i in sp.bands]


def _alpha_full(ds, bidx):
    """Full opacity of alpha band `bidx`: GDAL's default for SRC_ALPHA_MAX / DST_ALPHA_MAX."""
    nbits = ds.tags(bidx, ns="IMAGE_STRUCTURE").get("NBITS")
    if nbits:
        return 2 ** int(nbits) - 1
    return {"uint16": 65535, "int16": 32767}.get(ds.dtypes[bidx - 1], 255)


def _alpha_valid(alpha, full):
    """Valid where the warped alpha is at least half of full opacity."""
    return alpha.astype(np.float64) * 2 >= full


def _warp_onto(src, grid):
    """WarpedVRT of `src` on `grid`, the VRT band that carries validity and its full opacity."""
    kwargs = dict(crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                  resampling=Resampling.bilinear)
    alpha = 0
    for i, ci in enumerate(src.colorinterp, start=1):  # the last alpha band, as rasterio picks it
        if ci == ColorInterp.alpha:
            alpha = i
    if alpha:
        # rasterio warps the source's alpha band as a band of the VRT (it refuses to add a second
        # one); with no destination nodata the uncovered grid is 0 in it.
        kwargs["nodata"] = None
    else:
        kwargs["add_alpha"] = True
        alpha = src.count + 1
        if (np.dtype(src.dtypes[0]).kind == "f" and src.nodata is None
                and all(flags == [MaskFlags.all_valid] for flags in src.mask_flag_enums)):
            # The warper then leaves NaNs out of the alpha and out of the bilinear sums, instead
            # of smearing them over their neighbours. Only without a mask band: a source nodata
            # value makes the warper ignore the mask band.
            kwargs["src_nodata"] = float("nan")
    vrt = WarpedVRT(src, **kwargs)
    try:
        return vrt, alpha, _alpha_full(vrt, alpha)
    except BaseException:
        vrt.close()
        raise


class _AlphaMasked:
    """The `read(..., masked=True)` that stretch.sample_limits makes, on a warped VRT, with the
    mask taken from the VRT's alpha band (GDAL uses only a Byte or UInt16 alpha band as a mask)
    and, per band, from the source's nodata value."""

    def __init__(self, vrt, band, full, nodata):
        self._vrt, self._band, self._full, self._nodata = vrt, band, full, nodata

    def read(self, indexes, window=None, out_shape=None, masked=False):
        indexes = list(indexes)
        shape = None if out_shape is None else (len(indexes) + 1,) + tuple(out_shape[-2:])
        data = self._vrt.read(indexes + [self._band], window=window, out_shape=shape)
        data, alpha = data[:-1], data[-1]
        if not masked:
            return data
        mask = np.broadcast_to(~_alpha_valid(alpha, self._full), data.shape).copy()
        if self._nodata is not None:
            mask |= data == self._nodata
        return np.ma.MaskedArray(data, mask=mask)


class GridReader:
    """Reads one date's tiles on the working grid: uint8 RGB plus a validity mask."""

    def __init__(self, plan, grid):
        self.plan = plan
        self._file = _open(plan.path)
        self.src = self._file
        self._alpha = None  # (VRT band, full opacity, source nodata) when warped
        if plan.warp:
            try:
                self.src, band, full = _warp_onto(self._file, grid)
            except BaseException:  # do not leave the file open until garbage collection
                self._file.close()
                raise
            self._alpha = (band, full, self._file.nodata)

    @property
    def sample_source(self):
        """What the stretch limits are sampled from: masked reads see the same validity as read()."""
        if self._alpha is None:
            return self.src
        return _AlphaMasked(self.src, *self._alpha)

    def window(self, grid_window):
        col, row, width, height = grid_window
        dc, dr = self.plan.offset
        return Window(col + dc, row + dr, width, height)

    def read(self, grid_window):
        """(rgb uint8 (3,H,W), valid bool (H,W)); invalid pixels are set to black.

        A block GDAL cannot read (a truncated or corrupt file) is BadInput naming the file and
        the window, with GDAL's own reason.
        """
        try:
            return self._read(grid_window)
        except rasterio.errors.RasterioError as exc:
            col, row, width, height = grid_window
            raise BadInput(f"pixels {width} x {height} at column {col}, row {row} of the working grid cannot be "
                           f"read ({gdal_reason(exc)}); the file is truncated or corrupt", self.plan.path) from None

    def _read(self, grid_window):
        win = self.window(grid_window)
        if self._alpha is None:
            data = self.src.read(self.plan.bands, window=win)
            masks = self.src.read_masks(self.plan.bands, window=win)
            valid = np.all(masks > 0, axis=0)
        else:
            band, full, nodata = self._alpha
            data = self.src.read(list(self.plan.bands) + [band], window=win)
            data, alpha = data[:-1], data[-1]
            valid = _alpha_valid(alpha, full)
            if nodata is not None:  # per band, as GDAL's nodata mask on the same grid
                valid &= np.all(data != nodata, axis=0)
        if data.dtype.kind == "f":
            valid &= np.all(np.isfinite(data), axis=0)
        rgb = to_uint8(data, self.plan.limits)
        rgb[:, ~valid] = 0
        return rgb, valid

    def close(self):
        if self.src is not self._file:
            self.src.close()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_on_grid(plan, grid):
    return GridReader(plan, grid)
