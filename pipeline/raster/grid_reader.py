"""Reading one date's tiles on the working grid: uint8 RGB and a validity mask per window.

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
import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..errors import BadInput
from .sources import SourceUnreachable, gdal_reason, network_host, open_raster
from .stretch import to_uint8


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
        self._file = open_raster(plan.path)
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
            host = network_host(self.plan.path)  # None for a local file other than a service description
            if host is not None:
                raise SourceUnreachable(f"the server {host} failed on pixels {width} x {height} at column {col}, "
                                        f"row {row} of the working grid ({gdal_reason(exc)})", self.plan.path) from None
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
