import pytest

from rsicrc.pipeline.raster.tiling import axis_offsets, tile_grid


@pytest.mark.parametrize("start,length,size,overlap", [(0, 256, 256, 0), (5, 700, 256, 0), (3, 1000, 256, 32),
                                                       (0, 257, 256, 0), (11, 511, 128, 0)])
def test_axis_offsets_cover_the_span_without_padding(start, length, size, overlap):
    offsets = axis_offsets(start, length, size, overlap)
    assert offsets[0] == start
    assert offsets[-1] + size == start + length  # last tile moved inward onto the edge
    covered = set()
    for o in offsets:
        assert start <= o and o + size <= start + length  # never beyond the span: no padding
        covered.update(range(o, o + size))
    assert covered == set(range(start, start + length))
    assert all(b - a <= size - overlap for a, b in zip(offsets, offsets[1:]))


def test_span_smaller_than_a_tile_is_refused():
    with pytest.raises(ValueError):
        axis_offsets(0, 255, 256)


def test_tile_grid_is_row_major_with_stable_ids():
    tiles = tile_grid((10, 20, 300, 200), 128)
    assert [t.tile_id for t in tiles] == list(range(len(tiles)))
    assert len(tiles) == 3 * 2
    assert (tiles[0].row, tiles[0].col) == (20, 10)
    assert (tiles[2].row, tiles[2].col) == (20, 10 + 300 - 128)
    assert (tiles[-1].row, tiles[-1].col) == (20 + 200 - 128, 10 + 300 - 128)


@pytest.mark.parametrize("start,length,size,overlap", [(0, 256, 256, 0), (5, 700, 256, 0), (3, 1000, 256, 32),
                                                       (0, 257, 256, 0), (11, 511, 128, 0), (0, 2048, 256, 255)])
def test_offsets_are_the_stride_walk_plus_the_edge_tile(start, length, size, overlap):
    stride, last = size - overlap, start + length - size
    walk = list(range(start, last + 1, stride))
    assert axis_offsets(start, length, size, overlap) == walk + ([last] if walk[-1] != last else [])


def test_a_huge_grid_costs_nothing_until_walked():
    """10^12 tiles: counted and indexed without building a list (a plan is refused by its size
    before any work, see the plan-size tests)."""
    grid = tile_grid((0, 0, 256 * 10 ** 6, 256 * 10 ** 6), 256)
    assert len(grid) == 10 ** 12
    last = grid[-1]
    assert (last.tile_id, last.row, last.col) == (10 ** 12 - 1, 256 * (10 ** 6 - 1), 256 * (10 ** 6 - 1))
    first = next(iter(grid))
    assert (first.tile_id, first.row, first.col) == (0, 0, 0)


def test_iteration_skips_the_done_tiles():
    import numpy as np

    grid = tile_grid((0, 0, 640, 384), 128)  # 5 x 3
    done = np.array([0, 1, 4, 7, 14], dtype=np.int64)
    assert [t.tile_id for t in grid.iter_from(0, done)] == [2, 3, 5, 6, 8, 9, 10, 11, 12, 13]
    assert [t.tile_id for t in grid.iter_from(0, np.array([], dtype=np.int64))] == list(range(15))
    assert [(t.row, t.col) for t in grid.iter_from(0, done)][:2] == [(0, 256), (0, 384)]
