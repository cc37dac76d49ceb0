"""Square tiles on the working grid that cover the overlap of the two rasters completely.

Tiles are never padded: when the overlap is not a multiple of the stride, the last tile of a row
or column is moved inward so that it ends on the overlap's edge (it then overlaps its
neighbour). Tile ids are the row-major index in this grid, so a resumed run finds the same ids.

The grid is arithmetic, never a list: its size and any tile are computed on demand, so a plan of
billions of tiles costs nothing until it is walked (and the caller can refuse it first).
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    tile_id: int
    row: int  # pixel offsets of the tile's top-left corner on the working grid
    col: int
    size: int


class AxisOffsets:
    """Offsets of tiles of `size` px covering [start, start+length), stride size-overlap: a
    sequence (len, indexing, iteration) computed on demand."""

    def __init__(self, start, length, size, overlap=0):
        if length < size:
            raise ValueError(f"span of {length} px is smaller than one tile ({size} px)")
        self.stride = size - overlap
        if self.stride <= 0:
            raise ValueError("tile overlap must be smaller than the tile size")
        self.start, self.last = start, start + length - size
        regular = (self.last - start) // self.stride + 1
        self._regular = regular
        self._len = regular + (start + (regular - 1) * self.stride != self.last)

    def __len__(self):
        return self._len

    def __getitem__(self, i):
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        return self.start + i * self.stride if i < self._regular else self.last

    def __iter__(self):
        return (self[i] for i in range(self._len))


def axis_offsets(start, length, size, overlap=0):
    return list(AxisOffsets(start, length, size, overlap))


class TileGrid:
    """Tiles covering `window` = (col_off, row_off, width, height), row-major by tile_id.

    `keep` (a bool per tile id, from an area of interest) leaves the other tiles out of the plan:
    its length and walks count the kept ones, while ids stay the grid's (`n_ids` of them).
    """

    def __init__(self, window, size, overlap=0, keep=None):
        col_off, row_off, width, height = window
        self.size = size
        self.rows = AxisOffsets(row_off, height, size, overlap)
        self.cols = AxisOffsets(col_off, width, size, overlap)
        self.keep = keep
        self._len = self.n_ids if keep is None else int(keep.sum())

    @property
    def n_ids(self):
        return len(self.rows) * len(self.cols)

    def __len__(self):
        return self._len

    def tile(self, tile_id):
        i, j = divmod(tile_id, len(self.cols))
        return Tile(tile_id, self.rows[i], self.cols[j], self.size)

    def __getitem__(self, tile_id):
        if tile_id < 0:
            tile_id += self.n_ids
        if not 0 <= tile_id < self.n_ids:
            raise IndexError(tile_id)
        return self.tile(tile_id)

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, first_id=0, skip=None):
        """Tiles from `first_id` on; `skip`: a sorted array of tile ids to leave out."""
        ncols, k = len(self.cols), 0
        ids = range(first_id, self.n_ids)
        if self.keep is not None:
            ids = (int(i) for i in np.flatnonzero(self.keep[first_id:]) + first_id)
        for tile_id in ids:
            if skip is not None:
                while k < len(skip) and skip[k] < tile_id:
                    k += 1
                if k < len(skip) and skip[k] == tile_id:
                    continue
            i, j = divmod(tile_id, ncols)
            yield Tile(tile_id, self.rows[i], self.cols[j], self.size)


def tile_grid(window, size, overlap=0, keep=None):
    return TileGrid(window, size, overlap, keep)
