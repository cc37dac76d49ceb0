"""The tile reader: batches read by several threads are the batches one thread reads, in order;
a failure in a reading thread reaches the consumer."""
import numpy as np
import pytest
from pipeline_test_rasters import ORIGIN, uint8_scene, write_raster

from rsicrc.pipeline.raster import tile_reader
from rsicrc.pipeline.raster.pair_plan import plan_pair
from rsicrc.pipeline.raster.tile_reader import TileReader, read_workers
from rsicrc.pipeline.raster.tiling import tile_grid

TILE = 64


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Three dates, AFTER shifted and the last with a nodata hole: masks differ between intervals."""
    d = tmp_path_factory.mktemp("reader")
    before = write_raster(d / "a.tif", uint8_scene((200, 330), 1))
    after = write_raster(d / "b.tif", uint8_scene((210, 320), 2), origin=(ORIGIN[0] + 5, ORIGIN[1] - 3))
    last = uint8_scene((200, 330), 3)
    last[:, 40:90, 100:200] = 0
    later = write_raster(d / "c.tif", last, nodata=0)
    return plan_pair(before, after, tile_size=TILE, later=[later])


def batches(plan, workers, batch_size=7):
    with TileReader(plan, tile_grid(plan.window, TILE), batch_size, workers=workers) as reader:
        return list(reader)


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_several_threads_read_what_one_reads(series, workers):
    one, many = batches(series, 1), batches(series, workers)
    assert len(one) == len(many) > 1
    for a, b in zip(one, many):
        assert [t.tile_id for t in a.tiles] == [t.tile_id for t in b.tiles]
        for d in range(3):
            assert np.array_equal(a.dates[d], b.dates[d]) and np.array_equal(a.valid[d], b.valid[d])
        assert np.array_equal(a.nodata_fractions, b.nodata_fractions)
    assert any(f.max() > 0 for f in (b.nodata_fractions for b in many))  # the hole is seen


def test_a_failing_read_reaches_the_consumer(series, monkeypatch):
    calls = []

    def failing(tiles, readers):
        calls.append(len(tiles))
        raise OSError("disk gone")

    monkeypatch.setattr(tile_reader, "read_batch", failing)
    with pytest.raises(OSError, match="disk gone"):
        batches(series, 3)
    assert calls


def test_read_workers_is_bounded():
    assert 1 <= read_workers() <= 4
