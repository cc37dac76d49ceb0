"""Plans beyond the size limits are refused before any work, saying how many tiles and how long;
--yes-large runs them. The tile grid is never a list, so even a plan of 10^12 tiles costs nothing."""
import numpy as np
import pytest
import rasterio
from pipeline_test_rasters import ORIGIN, uint8_scene, write_raster
from rasterio.transform import from_origin

from rsicrc.pipeline.cli import main
from rsicrc.pipeline.errors import BadInput
from rsicrc.pipeline.raster import plan_size
from rsicrc.pipeline.raster.pair_plan import plan_pair
from rsicrc.pipeline.raster.tiling import tile_grid

NO_MODEL = "/nonexistent/model"  # the refusal comes before any model is looked for


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    return (write_raster(d / "b.tif", uint8_scene((128, 128), 1)), write_raster(d / "a.tif", uint8_scene((128, 128), 2)))


def _caption(pair, out, *extra):
    return main(["caption", *pair, "-o", str(out), "--model", NO_MODEL, "--tile-size", "64", *extra])


def test_a_tiny_target_resolution_is_refused_at_once(small_pair, tmp_path, capsys):
    """The case that took 23.7 GB before the OOM killer stopped it: 10^12 tiles."""
    assert _caption(small_pair, tmp_path / "o.gpkg", "--target-resolution", "1e-6") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert small_pair[0] in err and "1,000,000,000,000 tiles of 64 px" in err and "years" in err
    assert "multiplies the pixels" in err and "--yes-large" in err
    assert not list(tmp_path.iterdir())


def test_a_dense_overlap_on_a_big_pair_is_refused(tmp_path, capsys):
    zeros = np.full((3, 2048, 2048), 7, np.uint8)
    pair = (write_raster(tmp_path / "b.tif", zeros), write_raster(tmp_path / "a.tif", zeros))
    assert main(["caption", *pair, "-o", str(tmp_path / "o.gpkg"), "--model", NO_MODEL, "--overlap", "255"]) == 2
    err = capsys.readouterr().err
    assert f"{1793 ** 2:,} tiles of 256 px" in err and "--overlap multiplies the tiles" in err
    # A small job with the same overlap is only slow: not refused for it.
    plan_pair(*pair, tile_size=256, overlap=255, target_resolution=4.0)


def test_a_sparse_million_pixel_mosaic_is_counted_and_refused(tmp_path, capsys):
    """1,000,000 x 1,000,000 px, sparse (no block written): 15 M tiles of 256 px."""
    path = tmp_path / "sparse.tif"
    with rasterio.open(path, "w", driver="GTiff", width=10 ** 6, height=10 ** 6, count=3, dtype="uint8",
                       crs="EPSG:32632", transform=from_origin(*ORIGIN, 0.5, 0.5), nodata=0, tiled=True,
                       blockxsize=512, blockysize=512, sparse_ok=True, BIGTIFF="YES"):
        pass
    assert main(["caption", str(path), str(path), "-o", str(tmp_path / "o.gpkg"), "--model", NO_MODEL]) == 2
    assert f"{3907 ** 2:,} tiles of 256 px" in capsys.readouterr().err
    plan = plan_pair(path, path, yes_large=True)
    assert len(tile_grid(plan.window, 256)) == 3907 ** 2


def test_yes_large_lifts_every_limit(small_pair):
    plan = plan_pair(*small_pair, tile_size=64, target_resolution=1e-6, yes_large=True)
    assert len(tile_grid(plan.window, 64)) == 10 ** 12
    with pytest.raises(BadInput):
        plan_size.check_plan_size(plan_size.MAX_TILES + 1, plan_size.MAX_TILES + 1, 1.0, 256, False, "x.tif")
    plan_size.check_plan_size(plan_size.MAX_TILES + 1, plan_size.MAX_TILES + 1, 1.0, 256, True, "x.tif")
    plan_size.check_plan_size(plan_size.MAX_TILES, plan_size.MAX_TILES, 1.0, 256, False, "x.tif")  # at the limit
