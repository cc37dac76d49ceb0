"""--reproject and --target-resolution: grid pixels outside a raster's own footprint are nodata.

BEFORE is a UTM (EPSG:32632) raster at 13.5 E, 46 N, 4.5 degrees east of the zone's central
meridian, where grid north and true north are 3.2 degrees apart. AFTER is an EPSG:4326 raster
whose lon/lat rectangle, seen on BEFORE's grid, is that much rotated: its north-east corner lies
inside BEFORE, so a strip between its east edge and the overlap window's right side (the window
is the bounding box of AFTER's footprint) is outside AFTER although it is inside the window, and
its north edge cuts the top row of tiles at a slant.

The expected nodata fraction of every tile comes from AFTER's footprint, a densified lon/lat
polygon transformed to BEFORE's CRS and rasterised onto the grid at pixel centres (minus a hole
of nodata / transparent / NaN source pixels where a case has one), not from GDAL's warper.
No model runs here.
"""
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pipeline_test_rasters import write_raster
from rasterio.enums import ColorInterp
from rasterio.features import rasterize
from rasterio.warp import transform_geom

from rsicrc.pipeline.raster import grid_reader
from rsicrc.pipeline.raster.grid_reader import open_on_grid
from rsicrc.pipeline.raster.pair_plan import plan_pair
from rsicrc.pipeline.raster.tile_reader import TileReader
from rsicrc.pipeline.raster.tiling import tile_grid

TILE = 64
TOLERANCE = 0.01

B_ORIGIN = (848750.0, 5103936.0)  # EPSG:32632, about 13.5 E, 46 N
B_RES = 0.5
B_SHAPE = (288, 400)  # rows, cols

A_ORIGIN = (13.5, 46.0)  # lon, lat of AFTER's north-west corner
A_RES = 1.5e-5  # degrees: about 1.16 m east-west, 1.67 m north-south
A_SHAPE = (900, 360)  # 1.5 km north-south, so that the strip east of its east edge is 85 m wide
HOLE = (30, 60, 300, 330)  # AFTER rows 30:60, cols 300:330: inside the part of AFTER over BEFORE
RGBA = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]


def before_image():
    """uint8 RGB with no all-zero pixel, so that a pixel is black in all bands only when masked."""
    rng = np.random.default_rng(11)
    return rng.integers(1, 256, (3,) + B_SHAPE, dtype=np.uint8)


def after_values(dtype):
    rng = np.random.default_rng(12)
    if np.dtype(dtype).kind == "f":
        return rng.uniform(100.0, 1000.0, (3,) + A_SHAPE).astype(dtype)
    high = 256 if dtype == "uint8" else 4000
    return rng.integers(1, high, (3,) + A_SHAPE).astype(dtype)


def write_before(d):
    return write_raster(d / "before.tif", before_image(), origin=B_ORIGIN, res=B_RES)


def write_after(d, kind="plain"):
    """kind: plain (uint8 RGB, no nodata, no alpha), nodata_uint8 / nodata_uint16 (nodata 0 in
    the hole), rgba / rgba_float32 (alpha 0 in the hole, else 255), mask (uint8 RGB with an
    internal mask band, 0 in the hole), nan (float32, NaN in the hole, no nodata value)."""
    r0, r1, c0, c1 = HOLE
    kw = dict(crs="EPSG:4326", origin=A_ORIGIN, res=A_RES)
    if kind == "plain":
        return write_raster(d / "after.tif", after_values("uint8"), **kw)
    if kind.startswith("nodata_"):
        data = after_values(kind.split("_")[1])
        data[:, r0:r1, c0:c1] = 0
        return write_raster(d / f"after_{kind}.tif", data, nodata=0, **kw)
    if kind.startswith("rgba"):
        dtype = "float32" if kind == "rgba_float32" else "uint8"
        alpha = np.full((1,) + A_SHAPE, 255, dtype)
        alpha[:, r0:r1, c0:c1] = 0
        data = np.concatenate([after_values(dtype), alpha])
        return write_raster(d / f"after_{kind}.tif", data, colorinterp=RGBA, **kw)
    if kind == "mask":
        path = write_raster(d / "after_mask.tif", after_values("uint8"), **kw)
        mask = np.full(A_SHAPE, 255, np.uint8)
        mask[r0:r1, c0:c1] = 0
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
            dst.write_mask(mask)
        return path
    if kind == "nan":
        data = after_values("float32")
        data[:, r0:r1, c0:c1] = np.nan
        return write_raster(d / "after_nan.tif", data, **kw)
    raise ValueError(kind)


def lonlat_box(row0, row1, col0, col1):
    """AFTER's pixels rows row0:row1, cols col0:col1 as a polygon in EPSG:4326, densified."""
    lon, lat = A_ORIGIN
    box = shapely.box(lon + col0 * A_RES, lat - row1 * A_RES, lon + col1 * A_RES, lat - row0 * A_RES)
    return shapely.segmentize(box, A_RES)


def expected_valid(grid_transform, shape, hole):
    """Grid pixels whose centre lies inside AFTER's footprint (and outside the hole)."""
    def burn(poly):
        geom = transform_geom("EPSG:4326", "EPSG:32632", shapely.geometry.mapping(poly))
        return rasterize([geom], out_shape=shape, transform=grid_transform, all_touched=False).astype(bool)

    valid = burn(lonlat_box(0, A_SHAPE[0], 0, A_SHAPE[1]))
    if hole:
        valid &= ~burn(lonlat_box(*HOLE))
    return valid


def run_tiles(plan):
    tiles = tile_grid(plan.window, TILE)
    out = []
    with TileReader(plan, tiles, batch_size=8) as reader:
        for batch in reader:
            before, after = batch.pair(0)
            for i, t in enumerate(batch.tiles):
                out.append((t, before[i], after[i], float(batch.nodata_fractions[i, 0])))
    assert len(out) == len(tiles)
    return out


def check_tiles(plan, hole):
    """Per-tile fractions against the footprint mask; returns (max |difference|, classes seen)."""
    g = plan.grid
    exp = expected_valid(g.transform, (g.height, g.width), hole)
    worst, seen = 0.0, set()
    for t, before, after, fraction in run_tiles(plan):
        tile_exp = exp[t.row:t.row + t.size, t.col:t.col + t.size]
        expected = 1.0 - tile_exp.mean()
        worst = max(worst, abs(fraction - expected))
        assert abs(fraction - expected) <= TOLERANCE, (t, fraction, expected)
        if not tile_exp.any():
            assert fraction == 1.0, (t, fraction)
            seen.add("outside")
        elif tile_exp.all():
            assert fraction == 0.0, (t, fraction)
            seen.add("inside")
        else:
            seen.add("partial")
        # Masked pixels are black in both dates (BEFORE has no all-black pixel of its own).
        masked = np.all(before == 0, axis=0)
        assert masked.mean() == pytest.approx(fraction, abs=1e-12)
        assert not after[:, masked].any()
        assert (masked != ~tile_exp).mean() <= TOLERANCE
    return worst, seen


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("footprints")
    write_before(d)
    return d


def test_reproject_masks_pixels_outside_a_rotated_footprint(folder):
    plan = plan_pair(folder / "before.tif", write_after(folder), tile_size=TILE, reproject=True)
    assert plan.after.warp and not plan.before.warp and plan.grid.res == (B_RES, B_RES)
    worst, seen = check_tiles(plan, hole=False)
    assert seen == {"outside", "partial", "inside"}, seen


def test_target_resolution_masks_pixels_outside_a_rotated_footprint(folder):
    plan = plan_pair(folder / "before.tif", write_after(folder), tile_size=TILE, target_resolution=1.0)
    assert plan.before.warp and plan.after.warp
    assert plan.grid.transform == Affine(1.0, 0, B_ORIGIN[0], 0, -1.0, B_ORIGIN[1])
    assert (plan.grid.width, plan.grid.height) == (B_SHAPE[1] // 2, B_SHAPE[0] // 2)
    worst, seen = check_tiles(plan, hole=False)
    assert seen == {"outside", "partial", "inside"}, seen


@pytest.mark.parametrize("kind", ["nodata_uint8", "nodata_uint16", "rgba", "rgba_float32", "mask", "nan"])
def test_source_masks_are_kept_inside_the_footprint(folder, kind):
    plan = plan_pair(folder / "before.tif", write_after(folder, kind), tile_size=TILE, reproject=True)
    worst, seen = check_tiles(plan, hole=True)
    assert seen == {"outside", "partial", "inside"}, seen


def test_stretch_limits_ignore_the_grid_outside_the_footprint(folder):
    """A float AFTER is stretched from its own valid values (100..1000), not from the black fill
    that covers a third of the overlap window."""
    plan = plan_pair(folder / "before.tif", write_after(folder, "nan"), tile_size=TILE, reproject=True)
    for low, high in plan.after.limits:
        assert 100.0 <= low < high <= 1000.0


def test_grid_reader_read_follows_the_footprint(folder):
    """GridReader.read on its own: valid follows the footprint, invalid pixels are black."""
    plan = plan_pair(folder / "before.tif", write_after(folder), tile_size=TILE, reproject=True)
    g = plan.grid
    exp = expected_valid(g.transform, (g.height, g.width), hole=False)
    col, row, width, height = plan.window
    with open_on_grid(plan.after, g) as reader:
        rgb, valid = reader.read(plan.window)
    assert rgb.shape == (3, height, width) and rgb.dtype == np.uint8
    assert not rgb[:, ~valid].any()
    assert (valid != exp[row:row + height, col:col + width]).mean() <= 0.001


def test_warped_vrt_that_fails_to_open_closes_the_file(folder, monkeypatch):
    plan = plan_pair(folder / "before.tif", write_after(folder), tile_size=TILE, reproject=True)
    opened = []

    def recording_open(path):
        opened.append(real_open(path))
        return opened[-1]

    def failing_vrt(*args, **kwargs):
        raise rasterio.errors.WarpOptionsError("cannot warp")

    real_open = grid_reader.open_raster
    monkeypatch.setattr(grid_reader, "open_raster", recording_open)
    monkeypatch.setattr(grid_reader, "WarpedVRT", failing_vrt)
    with pytest.raises(rasterio.errors.WarpOptionsError):
        open_on_grid(plan.after, plan.grid)
    assert len(opened) == 1 and opened[0].closed
