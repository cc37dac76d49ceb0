"""The where-changed heat map of `rsicrc caption --heatmap`: a float32 GeoTIFF built from the layer.

Each captioned tile keeps its attention map (the decoder's cross-attention over the visual grid,
7 x 7 for RN50, row 0 at the top; model/captioner.py) in the layer's `attention` BLOB, so the
GeoTIFF can be rebuilt from the layer alone: after a resume, by another engine, by the plugin.
Here every map is upsampled bilinearly over its tile (cell centres at the centres of the tile's
h x w cells, clamped at the edges, as torch's bilinear resize of the official plot), sampled at
the pixel centres of BEFORE's grid decimated by `scale`; where tiles overlap their values are
averaged (a pixel across a tile edge takes each tile it meets); pixels that no captioned tile
covers are nodata. A tile's values sum to 1 over its cells: the map says where in a tile the
model looked, not how much changed (change_score says that). A time series gets one band an
interval (band k + 1 is interval k, described "before_name -> after_name"), each built from its
interval's features exactly as a pair's one band is from its layer.

Memory stays bounded whatever the raster size: the output is built block row by block row
(BLOCK output rows), each in column chunks of at most CHUNK_COLS, reading from the layer only the
tiles that cross that block row (tile ids are row-major, so one id range). The blocks go to a
tiled GeoTIFF, which GDAL's COG driver then copies with overviews into the final layout; both
are temporary files next to the output, moved into place only when complete.
"""
import bisect
import math
import os
import sqlite3
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..layer.blobs import BlobLengthError, blobs_to_matrix
from ..layer.schema import ATTENTION_FIELD, LAYER, date_name, partial_path, sql
from ..output_file import ChangedMeanwhile, OutputKind, check_output, identity, replace_checked

NODATA = -1.0  # attention weights are >= 0
TAG = "RSICRC_HEATMAP"  # dataset tag naming what wrote the file: an rsicrc heat map may be replaced
BLOCK = 256
CHUNK_COLS = 16 * BLOCK


def is_rsicrc_heatmap(path):
    import rasterio

    try:
        with rasterio.open(path) as ds:
            return TAG in ds.tags()
    except rasterio.errors.RasterioError:
        return False


HEATMAP_OUTPUT = OutputKind(".tif file name for --heatmap", "--heatmap", "heat map folder",
                            "a heat map written by rsicrc", is_rsicrc_heatmap, ".rsicrc-4194304-cog.tif")


def check_heatmap_output(path, inputs, layer_output, overwrite=False):
    """Refuse, before any work, a heat map path that cannot be written or would destroy something;
    its output_file.identity() now."""
    own = [(layer_output, "the output layer"), (partial_path(layer_output), "the output layer")]
    return check_output(path, HEATMAP_OUTPUT, [(src, "an input raster") for src in inputs] + own,
                        overwrite=overwrite)


def heatmap_shape(grid, scale):
    """(height, width, transform) of the heat map of `grid` decimated by `scale`."""
    from affine import Affine

    return (math.ceil(grid.height / scale), math.ceil(grid.width / scale),
            grid.transform @ Affine.scale(scale))


def _pixel_range(start, size, scale):
    """Heat map pixels [first, stop) whose footprint [i * scale, (i + 1) * scale) meets [start, start + size).

    Where tiles start on heat map pixels (the default tiling at scale 8) a pixel meets one tile per
    axis; else a pixel across a tile edge averages both tiles, each sampled at its centre clamped
    into the tile, and a pixel reaching past the grid's edge still gets the tile it partly covers."""
    return start // scale, -(-(start + size) // scale)


def bilinear_weights(centres, tile_size, side):
    """(n, side) weights that interpolate a map of `side` cells at tile-relative pixel positions
    `centres`: cell k's centre sits at (k + 0.5) * tile_size / side; beyond the outer centres the
    edge value holds (torch's bilinear resize, align_corners=False)."""
    x = np.clip(np.asarray(centres, dtype=np.float64) * side / tile_size - 0.5, 0, side - 1)
    low = np.minimum(np.floor(x).astype(np.int64), side - 1)
    high = np.minimum(low + 1, side - 1)
    frac = x - low
    w = np.zeros((len(x), side))
    rows = np.arange(len(x))
    np.add.at(w, (rows, low), 1 - frac)
    np.add.at(w, (rows, high), frac)
    return w


class _LayerMaps:
    """The attention maps of a range of tile ids, read straight from the layer (one indexed query)."""

    def __init__(self, layer_path):
        self.path = str(layer_path)
        self.side = None
        try:
            self.con = sqlite3.connect(f"file:{Path(self.path).resolve().as_posix()}?mode=ro", uri=True)
            columns = {r[1] for r in self.con.execute(sql("PRAGMA table_info({})", LAYER))}
        except sqlite3.Error as exc:
            raise BadInput(f"cannot read the attention maps ({exc})", self.path) from None
        if ATTENTION_FIELD not in columns:
            self.con.close()
            raise BadInput(f"has no {ATTENTION_FIELD} field: it was captioned without --heatmap", self.path)
        self.has_interval = "interval" in columns

    def read(self, first, stop, interval=None):
        """(tile ids, maps) of the tiles [first, stop); `interval`: only that interval's features."""
        query = sql("SELECT tile_id, {} FROM {} WHERE tile_id >= ? AND tile_id < ? AND {} IS NOT NULL",
                    ATTENTION_FIELD, LAYER, ATTENTION_FIELD)
        args = (int(first), int(stop))
        if interval is not None and self.has_interval:
            query, args = query + sql(" AND {} = ?", "interval"), args + (int(interval),)
        try:
            rows = self.con.execute(query + " ORDER BY tile_id", args).fetchall()
        except sqlite3.Error as exc:
            raise BadInput(f"cannot read the attention maps ({exc})", self.path) from None
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 1, 1), np.float32)
        if self.side is None:
            first_blob = rows[0][1]
            cells = len(first_blob) // 4 if isinstance(first_blob, bytes) else 0
            self.side = math.isqrt(cells)
            if cells == 0 or self.side ** 2 != cells:
                raise BadInput(f"tile {rows[0][0]}: its attention BLOB is not a square float32 map", self.path)
        try:
            maps = blobs_to_matrix([r[1] for r in rows], self.side ** 2)
        except BlobLengthError as exc:
            raise BadInput(f"tile {rows[exc.row][0]}: attention {exc.detail}", self.path) from None
        if not np.isfinite(maps).all():
            bad = rows[int(np.flatnonzero(~np.isfinite(maps).all(axis=1))[0])][0]
            raise BadInput(f"tile {bad}: its attention map holds non-finite values", self.path)
        return np.array([r[0] for r in rows], dtype=np.int64), maps.reshape(-1, self.side, self.side)

    def close(self):
        self.con.close()


def _accumulate(tile_grid, ids, maps, scale, rows, cols):
    """(sum, count) over heat map pixels rows x cols ([start, stop) pairs) of the given tiles."""
    (r0, r1), (c0, c1) = rows, cols
    total = np.zeros((r1 - r0, c1 - c0))
    count = np.zeros((r1 - r0, c1 - c0), dtype=np.int32)
    size = tile_grid.size
    for tile_id, m in zip(ids, maps):
        tile = tile_grid.tile(int(tile_id))
        tr0, tr1 = _pixel_range(tile.row, size, scale)
        tc0, tc1 = _pixel_range(tile.col, size, scale)
        tr0, tr1, tc0, tc1 = max(tr0, r0), min(tr1, r1), max(tc0, c0), min(tc1, c1)
        if tr0 >= tr1 or tc0 >= tc1:
            continue
        wy = bilinear_weights((np.arange(tr0, tr1) + 0.5) * scale - tile.row, size, m.shape[0])
        wx = bilinear_weights((np.arange(tc0, tc1) + 0.5) * scale - tile.col, size, m.shape[1])
        total[tr0 - r0:tr1 - r0, tc0 - c0:tc1 - c0] += wy @ m.astype(np.float64) @ wx.T
        count[tr0 - r0:tr1 - r0, tc0 - c0:tc1 - c0] += 1
    return total, count


def _block_rows_tiles(tile_grid, scale, r0, r1):
    """Tile ids [first, stop) of the tile rows whose tiles cross heat map rows [r0, r1)."""
    offsets, size = tile_grid.rows, tile_grid.size
    first_row = bisect.bisect_right(offsets, r0 * scale - size)  # tiles ending after the block's top
    stop_row = bisect.bisect_left(offsets, r1 * scale)  # and starting above its bottom
    ncols = len(tile_grid.cols)
    return first_row * ncols, stop_row * ncols


def _write_block_row(dst, band, tile_grid, ids, maps, scale, rows, width):
    """Heat map rows [r0, r1) of one band from the maps of the tiles crossing them."""
    from rasterio.windows import Window

    r0, r1 = rows
    col_of = np.array([tile_grid.tile(int(t)).col for t in ids], dtype=np.int64)
    for c0 in range(0, width, CHUNK_COLS):
        c1 = min(c0 + CHUNK_COLS, width)
        near = (col_of < c1 * scale) & (col_of + tile_grid.size > c0 * scale)
        total, count = _accumulate(tile_grid, ids[near], maps[near], scale, (r0, r1), (c0, c1))
        values = np.full(total.shape, NODATA, dtype=np.float32)
        np.divide(total, count, out=values, where=count > 0, casting="unsafe")
        dst.write(values, band, window=Window(c0, r0, c1 - c0, r1 - r0))


def build_heatmap(layer_path, grid, tile_grid, scale, output, tags=None, bands=None, found=...):
    """Write the heat map of the layer's attention maps to `output` (temp files, then a move).

    bands: [(interval, description)], one band each from that interval's features; None: one
    band "attention" from every feature (a pair's layer)."""
    if found is ...:  # the caller checked nothing: the file as it is now is the one to replace
        found = identity(output)
    import rasterio
    import rasterio.shutil

    height, width, transform = heatmap_shape(grid, scale)
    stem = f"{output}.rsicrc-{os.getpid()}"
    tiled, cog = stem + ".tif", stem + "-cog.tif"
    bands = bands or [(None, "attention")]
    profile = dict(driver="GTiff", width=width, height=height, count=len(bands), dtype="float32", crs=grid.crs,
                   transform=transform, nodata=NODATA, tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
                   compress="deflate", predictor=3, interleave="band", BIGTIFF="IF_SAFER")
    maps = _LayerMaps(layer_path)
    try:
        with rasterio.open(tiled, "w", **profile) as dst:
            dst.update_tags(**{TAG: "1", **(tags or {})})
            for band, (_, description) in enumerate(bands, start=1):
                dst.set_band_description(band, description)
            for r0 in range(0, height, BLOCK):
                r1 = min(r0 + BLOCK, height)
                for band, (interval, _) in enumerate(bands, start=1):
                    ids, block_maps = maps.read(*_block_rows_tiles(tile_grid, scale, r0, r1), interval=interval)
                    _write_block_row(dst, band, tile_grid, ids, block_maps, scale, (r0, r1), width)
        rasterio.shutil.copy(tiled, cog, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES", BLOCKSIZE=BLOCK,
                             RESAMPLING="AVERAGE", OVERVIEWS="AUTO", BIGTIFF="IF_SAFER")
        replace_checked(cog, output, found)
    except rasterio.errors.RasterioError as exc:
        from ..raster.sources import gdal_reason

        raise OSError(gdal_reason(exc)) from None
    finally:
        maps.close()
        for temp in (tiled, cog):
            if os.path.exists(temp):
                os.remove(temp)


def write_run_heatmap(p, plan, tiles, part, out, found):
    """The --heatmap GeoTIFF of a run from its finished partial layer `part`; its absolute path.
    A pair keeps its one "attention" band; a series gets a band an interval."""
    target = os.path.abspath(p.heatmap)
    names = [date_name(d) for d in p.dates]
    bands = None if len(names) == 2 else [(k, f"{names[k]} -> {names[k + 1]}") for k in range(len(names) - 1)]
    try:
        build_heatmap(part, plan.grid, tiles, p.heatmap_scale, target, bands=bands,
                      tags={"RSICRC_LAYER": os.path.abspath(out), "RSICRC_SCALE": str(p.heatmap_scale)}, found=found)
    except ChangedMeanwhile as exc:
        raise BadInput(f"{exc} (another program?) and is left as it is; {part} keeps every tile: move it away and "
                       f"rerun with --resume", p.heatmap) from None
    except OSError as exc:
        # Every tile is in the partial file: a resume writes the heat map without model work.
        raise BadInput(f"cannot be written ({exc.strerror or exc}; is the disk full?); {part} keeps every tile: "
                       f"make room and rerun with --resume", p.heatmap) from None
    return target
