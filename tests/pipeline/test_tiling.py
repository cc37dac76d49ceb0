import pytest

from rsicrc.pipeline.tiling import axis_offsets, tile_grid


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
