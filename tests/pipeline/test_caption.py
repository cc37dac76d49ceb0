"""End to end on generated rasters with the generated rn50-small checkpoint (kept to a few tiles:
every tile costs two RN50 passes and a greedy decode on the CPU)."""

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
import torch
from pipeline_test_rasters import ORIGIN, scene, uint8_scene, write_raster

from rsicrc.pipeline.caption.run import CaptionParams, run_caption
from rsicrc.pipeline.layer.gpkg import read_metadata
from rsicrc.pipeline.progress import Reporter
from rsicrc.pipeline.raster.stretch import HIGH_PERCENTILE, LOW_PERCENTILE

TILE = 128


class Collect(Reporter):
    def __init__(self):
        self.warnings, self.events = [], []

    def warning(self, message):
        self.warnings.append(message)

    def advance(self, done, total):
        self.events.append((done, total))


def read_layer(path):
    meta, fids, geoms, fields = pyogrio.raw.read(str(path), layer="changes")
    table = dict(zip(meta["fields"], fields))
    order = np.argsort(table["tile_id"])
    return {k: v[order] for k, v in table.items()}, geoms[order]


@pytest.fixture(scope="module")
def shifted_pair(tmp_path_factory):
    """Odd sizes, AFTER's grid 37 px right and 21 px down of BEFORE's: a 263 x 179 px overlap."""
    d = tmp_path_factory.mktemp("pair")
    before = write_raster(d / "before.tif", uint8_scene((200, 300), 1))
    after = write_raster(d / "after.tif", uint8_scene((211, 293), 2),
                         origin=(ORIGIN[0] + 37 * 0.5, ORIGIN[1] - 21 * 0.5))
    return before, after


@pytest.fixture(scope="module")
def shifted_run(shifted_pair, captioner, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "changes.gpkg"
    reporter = Collect()
    params = CaptionParams(*shifted_pair, str(out), model=captioner.source, tile_size=TILE, batch_size=4,
                           queries=["many buildings have been built", "a road"])
    summary = run_caption(params, reporter, captioner=captioner)
    return out, summary, reporter


def test_features_cover_the_overlap(shifted_run):
    out, summary, _ = shifted_run
    table, geoms = read_layer(out)
    assert summary.features == len(geoms) == 3 * 2
    polys = shapely.from_wkb(geoms)
    union = shapely.union_all(polys)
    x0, y1 = ORIGIN[0] + 37 * 0.5, ORIGIN[1] - 21 * 0.5
    overlap = shapely.box(x0, y1 - 179 * 0.5, x0 + 263 * 0.5, y1)
    assert union.symmetric_difference(overlap).area < 1e-6
    for poly, row, col in zip(polys, table["row"], table["col"]):
        assert poly.equals(shapely.box(ORIGIN[0] + col * 0.5, ORIGIN[1] - (row + TILE) * 0.5,
                                       ORIGIN[0] + (col + TILE) * 0.5, ORIGIN[1] - row * 0.5))
    info = pyogrio.read_info(str(out), layer="changes")
    assert info["crs"] == "EPSG:32632" and info["geometry_type"] == "Polygon"


def test_fields_and_metadata(shifted_run, captioner):
    out, _, _ = shifted_run
    table, _ = read_layer(out)
    for name in ("tile_id", "row", "col", "caption", "changed", "change_score", "nodata_fraction",
                 "q_many_buildings_have_been_built", "q_a_road", "embedding"):
        assert name in table
    meta = read_metadata(out)
    assert meta["complete"] is True and meta["features"] == 6
    assert meta["model_sha256"] == captioner.sha256 and meta["embedding_dim"] == captioner.embedding_dim
    assert meta["queries"] == {"q_many_buildings_have_been_built": "many buildings have been built",
                               "q_a_road": "a road"}
    assert meta["params"]["tile_size"] == TILE and meta["model_config"]["d_model"] == 64
    for key in ("model_source", "software_version", "created", "skipped_tiles"):
        assert key in meta
    emb = np.stack([np.frombuffer(b, "<f4") for b in table["embedding"]])
    assert emb.shape == (6, captioner.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.all((table["change_score"] >= 0) & (table["change_score"] <= 1))
    assert list(table["changed"]) == [not captioner.is_no_change(c) for c in table["caption"]]
    q = captioner.embed_text(["many buildings have been built"]).numpy()[0]
    np.testing.assert_allclose(table["q_many_buildings_have_been_built"], emb @ q, atol=1e-5)


def test_captions_equal_captioner_on_the_same_tiles(shifted_pair, shifted_run, captioner):
    out, _, _ = shifted_run
    table, _ = read_layer(out)
    with rasterio.open(shifted_pair[0]) as b, rasterio.open(shifted_pair[1]) as a:
        before, after = b.read(), a.read()
    tb = np.stack([before[:, r:r + TILE, c:c + TILE] for r, c in zip(table["row"], table["col"])])
    # AFTER's pixel (r, c) sits at BEFORE's (r + 21, c + 37)
    ta = np.stack([after[:, r - 21:r - 21 + TILE, c - 37:c - 37 + TILE] for r, c in zip(table["row"], table["col"])])
    expected = captioner.caption(captioner.preprocess(tb), captioner.preprocess(ta))
    assert list(table["caption"]) == expected
    np.testing.assert_array_equal(table["nodata_fraction"], 0.0)


def test_uint16_nodata_stretch_and_skips(tmp_path, captioner):
    """uint16 with a nodata corner: the fully-nodata tile is skipped and recorded, the half-covered
    one is kept with its fraction, and pixels follow the documented percentile stretch."""
    rng_scale = np.array([3000, 5000, 9000])[:, None, None]
    b16 = (scene((256, 256), 3) * rng_scale).astype(np.uint16) + 1
    a16 = (scene((256, 256), 4) * rng_scale).astype(np.uint16) + 1
    b16[:, :128, :128] = 0  # tile 0 all nodata
    a16[:, 128:, :64] = 0  # tile 2 half nodata (in AFTER only)
    before = write_raster(tmp_path / "b.tif", b16, nodata=0)
    after = write_raster(tmp_path / "a.tif", a16, nodata=0)
    out = tmp_path / "o.gpkg"
    summary = run_caption(CaptionParams(before, after, str(out), model=captioner.source, tile_size=TILE,
                                        batch_size=4, max_nodata=0.6), Collect(), captioner=captioner)
    assert (summary.features, summary.skipped) == (3, 1)
    meta = read_metadata(out)
    assert meta["skipped_tiles"] == [{"tile_id": 0, "row": 0, "col": 0, "nodata_fraction": 1.0, "interval": 0}]
    table, _ = read_layer(out)
    assert list(table["tile_id"]) == [1, 2, 3]
    np.testing.assert_allclose(table["nodata_fraction"], [0.0, 0.5, 0.0])

    def stretch(img):
        out8 = np.empty(img.shape, np.uint8)
        for k, band in enumerate(img):
            lo, hi = np.percentile(band[band != 0], [LOW_PERCENTILE, HIGH_PERCENTILE])
            out8[k] = np.clip((band.astype(np.float64) - lo) * 255 / (hi - lo) + 0.5, 0, 255).astype(np.uint8)
        out8[:, np.any(img == 0, axis=0)] = 0
        return out8

    sb, sa = stretch(b16), stretch(a16)
    tiles = [(0, 128), (128, 0), (128, 128)]
    tb = np.stack([sb[:, r:r + TILE, c:c + TILE] for r, c in tiles])
    ta = np.stack([sa[:, r:r + TILE, c:c + TILE] for r, c in tiles])
    ta[1][:, :, :64] = 0
    tb[1][:, :, :64] = 0  # invalid in either date -> black in both
    assert list(table["caption"]) == captioner.caption(captioner.preprocess(tb), captioner.preprocess(ta))


def test_reprojected_after_is_warped_onto_before_grid(tmp_path, captioner):
    before = write_raster(tmp_path / "b.tif", uint8_scene((128, 256), 5))
    with rasterio.open(before) as src:
        from rasterio.warp import calculate_default_transform, reproject

        transform, w, h = calculate_default_transform(src.crs, "EPSG:3857", src.width + 40, src.height + 40,
                                                      *rasterio.transform.array_bounds(
                                                          src.height + 40, src.width + 40,
                                                          src.transform * rasterio.Affine.translation(-20, -20)))
        data = np.zeros((3, h, w), np.uint8)
        reproject(uint8_scene((168, 296), 6), data, src_transform=src.transform * rasterio.Affine.translation(-20, -20),
                  src_crs=src.crs, dst_transform=transform, dst_crs="EPSG:3857")
    after = tmp_path / "a.tif"
    with rasterio.open(after, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:3857",
                       transform=transform) as dst:
        dst.write(data)
    out = tmp_path / "o.gpkg"
    summary = run_caption(CaptionParams(before, str(after), str(out), model=captioner.source, tile_size=TILE,
                                        reproject=True), Collect(), captioner=captioner)
    assert summary.features == 2
    assert pyogrio.read_info(str(out), layer="changes")["crs"] == "EPSG:32632"


def test_cli_default_models_are_the_model_packages_defaults():
    from rsicrc.model import DEFAULT_SOURCE
    from rsicrc.model.clip import DEFAULT_CLIP_SOURCE
    from rsicrc.pipeline.caption_params import DEFAULT_CLIP_MODEL, DEFAULT_MODEL

    assert (DEFAULT_MODEL, DEFAULT_CLIP_MODEL) == (DEFAULT_SOURCE, DEFAULT_CLIP_SOURCE)


def test_a_model_whose_numbers_overflow_stops_the_run_before_writing_them(shifted_pair, small_checkpoint, tmp_path):
    from rsicrc.model import load_model
    from rsicrc.pipeline.errors import PipelineFailure

    cap = load_model(str(small_checkpoint), device="cpu")
    with torch.no_grad():
        next(cap.net.parameters()).view(-1)[0] = float("inf")  # what an fp16 overflow leaves behind
    out = tmp_path / "changes.gpkg"
    with pytest.raises(PipelineFailure, match="not finite numbers .overflow in fp32.") as err:
        run_caption(CaptionParams(*shifted_pair, str(out), model=cap.source, tile_size=TILE, batch_size=4),
                    Reporter(), captioner=cap)
    assert "\n" not in str(err.value)
    assert not out.exists()
    partial = tmp_path / "changes.gpkg.partial"  # kept as after any stop: it holds no feature of the batch
    assert len(read_layer(partial)[0]["tile_id"]) == 0
