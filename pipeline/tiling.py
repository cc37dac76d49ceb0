"""Square tiles on the working grid that cover the overlap of the two rasters completely.

Tiles are never padded: when the overlap is not a multiple of the stride, the last tile of a row
or column is moved inward so that it ends on the overlap's edge (it then overlaps its
neighbour). Tile ids are the row-major index in this grid, so a resumed run finds the same ids.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    tile_id: int
    row: int  # pixel offsets of the tile's top-left corner on the working grid
    col: int
    size: int


def axis_offsets(start, length, size, overlap=0):
    """Offsets of tiles of `size` px covering [start, start+length), stride size-overlap."""
    if length < size:
        raise ValueError(f"span of {length} px is smaller than one tile ({size} px)")
    stride = size - overlap
    if stride <= 0:
        raise ValueError("tile overlap must be smaller than the tile size")
    last = start + length - size
    offsets = list(range(start, last + 1, stride))
    if offsets[-1] != last:
        offsets.append(last)
    return offsets


def tile_grid(window, size, overlap=0):
    """Tiles covering `window` = (col_off, row_off, width, height), row-major."""
    col_off, row_off, width, height = window
    rows = axis_offsets(row_off, height, size, overlap)
    cols = axis_offsets(col_off, width, size, overlap)
    return [Tile(i * len(cols) + j, r, c, size) for i, r in enumerate(rows) for j, c in enumerate(cols)]
