"""`rsicrc caption --heatmap`: the where-changed GeoTIFF, checked against an independent rebuild
from the layer's attention BLOBs (torch's bilinear resize, as the official plot uses)."""
import glob
import os

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine
from pipeline_test_rasters import uint8_scene, write_raster

from rsicrc.pipeline.caption import heatmap as hm
from rsicrc.pipeline.caption.run import CaptionParams, run_caption
from rsicrc.pipeline.cli import main
from rsicrc.pipeline.errors import BadInput
from rsicrc.pipeline.layer.blobs import blobs_to_matrix
from rsicrc.pipeline.layer.gpkg import read_columns, read_info, read_metadata
from rsicrc.pipeline.layer.schema import ATTENTION_FIELD
from rsicrc.pipeline.progress import Reporter

TILE = 64
SHAPE = (128, 192)  # 2 x 3 tiles of 64 px


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("heat-pair")
    return (write_raster(d / "b.tif", uint8_scene(SHAPE, 31)), write_raster(d / "a.tif", uint8_scene(SHAPE, 32)))


def _run(pair, captioner, out, heat, **kw):
    params = dict(model=captioner.source, tile_size=TILE, batch_size=4, heatmap=str(heat))
    params.update(kw)
    return run_caption(CaptionParams(*pair, str(out), **params), Reporter(), captioner=captioner)


def _tiles(layer):
    cols = read_columns(layer, ["tile_id", "row", "col", ATTENTION_FIELD])
    maps = blobs_to_matrix(list(cols[ATTENTION_FIELD]), 49).reshape(-1, 7, 7)
    return list(zip(cols["row"], cols["col"], maps))


def _expected(tiles, grid_shape, scale):
    """Independent rebuild: each map resized bilinearly to its tile's heat map pixels, then averaged."""
    h, w = (-(-n // scale) for n in grid_shape)
    total, count = np.zeros((h, w)), np.zeros((h, w))
    side = TILE // scale
    for row, col, m in tiles:
        assert row % scale == 0 and col % scale == 0  # tiles start on heat map pixels in these tests
        up = F.interpolate(torch.from_numpy(m)[None, None].double(), size=(side, side), mode="bilinear",
                           align_corners=False)[0, 0].numpy()
        r, c = row // scale, col // scale
        total[r:r + side, c:c + side] += up
        count[r:r + side, c:c + side] += 1
    return np.where(count > 0, total / np.maximum(count, 1), hm.NODATA), count


@pytest.fixture(scope="module")
def made(pair, captioner, tmp_path_factory):
    d = tmp_path_factory.mktemp("heat")
    out, heat = d / "c.gpkg", d / "heat.tif"
    _run(pair, captioner, out, heat, heatmap_scale=1)
    return out, heat


def test_georeferencing_is_the_grid(made, pair):
    out, heat = made
    with rasterio.open(pair[0]) as src, rasterio.open(heat) as ds:
        assert ds.crs == src.crs and ds.transform == src.transform
        assert (ds.height, ds.width) == SHAPE and ds.count == 1 and ds.dtypes == ("float32",)
        assert ds.nodata == hm.NODATA
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.profile["tiled"] and ds.compression.name.lower() == "deflate"
    meta = read_metadata(out)
    assert meta["heatmap"] == str(heat) and meta["heatmap_scale"] == 1
    assert meta["run_fingerprint"]["attention"] is True


def test_values_are_the_resized_maps(made):
    out, heat = made
    tiles = _tiles(out)
    assert len(tiles) == 6
    for _, _, m in tiles:
        assert m.min() >= 0 and abs(m.sum() - 1) < 1e-5
    want, _ = _expected(tiles, SHAPE, 1)
    with rasterio.open(heat) as ds:
        got = ds.read(1)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # The maps are not uniform, so a transposed or misplaced tile would not match.
    assert got.std() > 1e-4


def test_decimated_heatmap_and_overlap_averaging(pair, captioner, tmp_path):
    out, heat = tmp_path / "o.gpkg", tmp_path / "o.tif"
    _run(pair, captioner, out, heat, overlap=32, heatmap_scale=8)
    tiles = _tiles(out)
    assert len(tiles) == 3 * 5  # rows 0, 32, 64; cols 0, 32, ..., 128
    want, count = _expected(tiles, SHAPE, 8)
    assert count.max() == 4  # a quarter of each inner tile is shared by four tiles
    with rasterio.open(heat) as ds, rasterio.open(pair[0]) as src:
        assert ds.transform == src.transform @ Affine.scale(8)
        assert (ds.height, ds.width) == (16, 24)
        np.testing.assert_allclose(ds.read(1), want, atol=1e-6)


def _sampled(m, ys, xs):
    """The map resized bilinearly over its tile, read at tile-relative pixel positions (torch's
    grid_sample: align_corners=False and border padding are the resize's rules)."""
    gy, gx = torch.meshgrid(torch.as_tensor(ys, dtype=torch.float64) * 2 / TILE - 1,
                            torch.as_tensor(xs, dtype=torch.float64) * 2 / TILE - 1, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None]
    return F.grid_sample(torch.from_numpy(m)[None, None].double(), grid, mode="bilinear",
                         padding_mode="border", align_corners=False)[0, 0].numpy()


def test_uneven_decimation_covers_the_grid(pair, captioner, tmp_path):
    """A scale that does not divide the tiles: a heat map pixel takes the mean of the tiles its
    footprint meets, each read at the pixel's centre; the last pixels reach past the grid's edge."""
    out, heat = tmp_path / "u.gpkg", tmp_path / "u.tif"
    _run(pair, captioner, out, heat, heatmap_scale=5)
    with rasterio.open(heat) as ds:
        assert (ds.height, ds.width) == (26, 39)
        got = ds.read(1)
    total, count = np.zeros(got.shape), np.zeros(got.shape)
    rows, cols = np.arange(26), np.arange(39)
    for row, col, m in _tiles(out):
        r = rows[(rows * 5 < row + TILE) & ((rows + 1) * 5 > row)]
        c = cols[(cols * 5 < col + TILE) & ((cols + 1) * 5 > col)]
        total[np.ix_(r, c)] += _sampled(m, (r + 0.5) * 5 - row, (c + 0.5) * 5 - col)
        count[np.ix_(r, c)] += 1
    assert count.min() == 1 and count.max() == 4
    np.testing.assert_allclose(got, total / count, atol=1e-6)


def test_skipped_tiles_are_nodata(tmp_path, captioner):
    before = uint8_scene(SHAPE, 41)
    before[:, 64:, 128:] = 0  # the bottom-right tile is nodata on BEFORE
    pair = (write_raster(tmp_path / "b.tif", before, nodata=0),
            write_raster(tmp_path / "a.tif", uint8_scene(SHAPE, 42)))
    out, heat = tmp_path / "s.gpkg", tmp_path / "s.tif"
    summary = _run(pair, captioner, out, heat, heatmap_scale=4)
    assert summary.skipped == 1
    with rasterio.open(heat) as ds:
        data = ds.read(1)
        masked = ds.read_masks(1)
    assert (data[16:, 32:] == hm.NODATA).all() and (masked[16:, 32:] == 0).all()
    want, _ = _expected(_tiles(out), SHAPE, 4)
    np.testing.assert_allclose(data, want, atol=1e-6)
    assert (data[:16] != hm.NODATA).all() and (data[16:, :32] != hm.NODATA).all()


def test_block_by_block_build_equals_one_block(made, pair, monkeypatch, tmp_path):
    """Small blocks and column chunks (what bounds memory on big rasters) give the same raster."""
    out, heat = made
    from rsicrc.pipeline.raster.pair_plan import plan_pair
    from rsicrc.pipeline.raster.tiling import tile_grid

    plan = plan_pair(*pair, tile_size=TILE)
    tiles = tile_grid(plan.window, TILE)
    monkeypatch.setattr(hm, "BLOCK", 16)
    monkeypatch.setattr(hm, "CHUNK_COLS", 48)
    small = tmp_path / "small.tif"
    hm.build_heatmap(out, plan.grid, tiles, 1, str(small))
    with rasterio.open(heat) as a, rasterio.open(small) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert b.block_shapes == [(16, 16)]


def test_a_big_heatmap_has_overviews(made, pair, tmp_path):
    out, _ = made
    from dataclasses import replace

    from rsicrc.pipeline.raster.pair_plan import plan_pair
    from rsicrc.pipeline.raster.tiling import tile_grid

    plan = plan_pair(*pair, tile_size=TILE)
    big = replace(plan.grid, width=2048, height=1024)  # the layer's tiles cover its top-left corner
    path = tmp_path / "big.tif"
    hm.build_heatmap(out, big, tile_grid(plan.window, TILE), 1, str(path))
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2, 4, 8]
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        data = ds.read(1)
    assert (data[:SHAPE[0], :SHAPE[1]] != hm.NODATA).all()
    assert (data[SHAPE[0]:] == hm.NODATA).all() and (data[:, SHAPE[1]:] == hm.NODATA).all()


def test_a_failed_write_leaves_nothing_and_resume_finishes(pair, captioner, tmp_path, monkeypatch):
    out, heat = tmp_path / "f.gpkg", tmp_path / "f.tif"

    def full_disk(*_a, **_k):
        raise rasterio.errors.RasterioIOError("No space left on device")

    monkeypatch.setattr(rasterio.shutil, "copy", full_disk)
    with pytest.raises(BadInput, match="--resume") as info:
        _run(pair, captioner, out, heat)
    assert str(heat) in str(info.value) and "No space left" in str(info.value)
    assert not heat.exists() and not out.exists()
    assert glob.glob(str(tmp_path / "f.tif.*")) == []  # no temporary file left
    assert read_metadata(str(out) + ".partial")["complete"] is True
    monkeypatch.undo()

    class NoModelWork:
        def __getattr__(self, name):
            if name in ("describe_pairs", "describe_dates"):
                raise AssertionError("a resume of a complete layer needs no model work")
            return getattr(captioner, name)

    run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE, heatmap=str(heat),
                              resume=True), Reporter(), captioner=NoModelWork())
    assert heat.exists() and out.exists()
    with rasterio.open(heat) as ds:
        np.testing.assert_allclose(ds.read(1), _expected(_tiles(out), SHAPE, 8)[0], atol=1e-6)


def test_interrupted_run_resumes_to_the_same_heatmap(pair, captioner, made, tmp_path):
    out, heat = tmp_path / "r.gpkg", tmp_path / "r.tif"

    class StopsAfterOneBatch:
        calls = 0

        def __getattr__(self, name):
            return getattr(captioner, name)

        def describe_dates(self, *args, **kw):
            StopsAfterOneBatch.calls += 1
            if StopsAfterOneBatch.calls > 1:
                raise KeyboardInterrupt
            return captioner.describe_dates(*args, **kw)

    with pytest.raises(KeyboardInterrupt):
        _run(pair, StopsAfterOneBatch(), out, heat, heatmap_scale=1, batch_size=2)
    assert not heat.exists() and len(read_columns(str(out) + ".partial", ["tile_id"])["tile_id"]) == 2
    # Without --heatmap the partial file is another job: its tiles hold attention maps.
    with pytest.raises(BadInput, match="attention"):
        run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE, resume=True),
                    Reporter(), captioner=captioner)
    _run(pair, captioner, out, heat, heatmap_scale=1, batch_size=2, resume=True)
    with rasterio.open(heat) as a, rasterio.open(made[1]) as b:
        np.testing.assert_allclose(a.read(1), b.read(1), atol=1e-5)


def test_a_partial_file_without_maps_is_not_resumed_with_heatmap(pair, captioner, tmp_path):
    out = tmp_path / "n.gpkg"
    run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE), Reporter(),
                captioner=captioner)
    assert ATTENTION_FIELD not in read_info(out)["fields"]
    os.replace(out, str(out) + ".partial")
    with pytest.raises(BadInput, match="differs in: attention"):
        _run(pair, captioner, out, tmp_path / "n.tif", resume=True)


class NoModel:
    def __getattr__(self, name):
        raise AssertionError(f"model work ({name}) before the paths were checked")


@pytest.mark.parametrize("case", ["input", "layer", "foreign", "folder", "missing_folder", "unwritable",
                                  "not_tif"])
def test_bad_paths_are_refused_before_model_work(pair, tmp_path, case, capsys):
    out = tmp_path / "o.gpkg"
    heat = {"input": pair[0], "layer": str(out), "foreign": str(tmp_path / "mine.tif"),
            "folder": str(tmp_path / "maps.tif"), "missing_folder": str(tmp_path / "nope" / "h.tif"),
            "unwritable": "/proc/heat.tif", "not_tif": str(tmp_path / "h.png")}[case]
    if case == "foreign":
        (tmp_path / "mine.tif").write_bytes(b"someone's file")
    if case == "folder":
        (tmp_path / "maps.tif").mkdir()
    if case == "layer":
        out = tmp_path / "o.tif"
        heat = str(out)
    with pytest.raises(BadInput) as info:
        run_caption(CaptionParams(*pair, str(out), tile_size=TILE, heatmap=heat), Reporter(), captioner=NoModel())
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert {"input": "input raster", "layer": "output layer", "foreign": "--overwrite", "folder": "folder",
            "missing_folder": "does not exist", "unwritable": "not writable", "not_tif": ".tif"}[case] in message
    if case == "foreign":
        assert (tmp_path / "mine.tif").read_bytes() == b"someone's file"
    assert not out.exists() or case == "layer"
    # The command line says it in one line, exit code 2.
    rc = main(["caption", *pair, "-o", str(out), "--tile-size", str(TILE), "--heatmap", heat,
               "--model", "/nonexistent/model"])
    assert rc == 2


def test_an_rsicrc_heatmap_is_replaced_a_foreign_one_only_with_overwrite(made, pair, captioner, tmp_path):
    out, heat = tmp_path / "w.gpkg", tmp_path / "w.tif"
    with rasterio.open(made[1]) as src:
        profile = src.profile
        data = src.read()
    profile.update(driver="GTiff")
    with rasterio.open(heat, "w", **profile) as dst:  # a GeoTIFF that rsicrc did not write
        dst.write(data)
    with pytest.raises(BadInput, match="--overwrite"):
        _run(pair, captioner, out, heat)
    _run(pair, captioner, out, heat, overwrite=True)
    assert hm.is_rsicrc_heatmap(heat)
    _run(pair, captioner, out, heat, heatmap_scale=2)  # the rerun replaces its own heat map
    with rasterio.open(heat) as ds:
        assert ds.width == SHAPE[1] // 2


def test_without_heatmap_nothing_changes(made, pair, captioner, tmp_path):
    out = tmp_path / "plain.gpkg"
    run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE, batch_size=4), Reporter(),
                captioner=captioner)
    fields = read_info(out)["fields"]
    assert ATTENTION_FIELD not in fields and "heatmap" not in read_metadata(out)
    plain = read_columns(out, ["caption", "change_score", "embedding"])
    with_maps = read_columns(made[0], ["caption", "change_score", "embedding"])
    assert list(plain["caption"]) == list(with_maps["caption"])
    np.testing.assert_allclose(plain["change_score"], with_maps["change_score"], atol=1e-6)


@pytest.mark.parametrize("argv,message", [(["--heatmap-scale", "0"], "heatmap-scale"),
                                          (["--heatmap-scale", "65"], "tile size")])
def test_bad_scales(pair, tmp_path, argv, message, capsys):
    rc = main(["caption", *pair, "-o", str(tmp_path / "o.gpkg"), "--tile-size", str(TILE),
               "--heatmap", str(tmp_path / "h.tif"), *argv])
    assert rc == 2 and message in capsys.readouterr().err


def test_layers_without_or_with_bad_maps_are_refused(made, pair, captioner, tmp_path):
    import shutil

    from osgeo import ogr

    from rsicrc.pipeline.raster.pair_plan import plan_pair
    from rsicrc.pipeline.raster.tiling import tile_grid

    plan = plan_pair(*pair, tile_size=TILE)
    tiles = tile_grid(plan.window, TILE)
    plain = tmp_path / "plain.gpkg"
    run_caption(CaptionParams(*pair, str(plain), model=captioner.source, tile_size=TILE), Reporter(),
                captioner=captioner)
    with pytest.raises(BadInput, match="no attention field"):
        hm.build_heatmap(plain, plan.grid, tiles, 8, str(tmp_path / "p.tif"))
    tampered = tmp_path / "tampered.gpkg"
    shutil.copy(made[0], tampered)
    ds = ogr.Open(str(tampered), 1)  # a hand edit through GDAL, as QGIS would make it
    layer = ds.GetLayerByName("changes")
    layer.SetAttributeFilter("tile_id = 4")
    feature = layer.GetNextFeature()
    feature.SetFieldBinaryFromHexString("attention", "00000000")
    assert layer.SetFeature(feature) == 0
    ds = layer = feature = None
    with pytest.raises(BadInput, match="tile 4: attention has 4 bytes"):
        hm.build_heatmap(tampered, plan.grid, tiles, 8, str(tmp_path / "t.tif"))
    assert not list(tmp_path.glob("*.tif*"))
