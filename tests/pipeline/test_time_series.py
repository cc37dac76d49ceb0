"""`rsicrc caption D1 D2 D3 ...`: every interval of a time series captioned on the same tiles, one layer.

Each interval must be what a run of its two dates alone gives; the series adds the `interval`,
`before_name`, `after_name` and `most_changed_interval` fields (a pair has them too: interval 0).
"""
import json
import os
import sqlite3

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from pipeline_test_rasters import ORIGIN, uint8_scene, write_raster

from rsicrc.pipeline.caption.run import run_caption
from rsicrc.pipeline.caption_params import MAX_DATES, CaptionParams, ParamError
from rsicrc.pipeline.cli import main
from rsicrc.pipeline.layer.gpkg import read_info, read_metadata, write_metadata
from rsicrc.pipeline.layer.schema import partial_path, written_by_caption
from rsicrc.pipeline.progress import Reporter
from rsicrc.pipeline.raster import grid_reader

TILE = 64
SHAPE = (128, 192)  # 2 x 3 tiles of 64 px
SERIES = ["interval", "before_name", "after_name", "most_changed_interval"]


def layer(path):
    """{field: array} in fid order (the layer's own order) and the geometries as WKB."""
    meta, fids, geoms, values = pyogrio.raw.read(str(path), layer="changes", return_fids=True)
    order = np.argsort(fids)
    table = {k: np.asarray(v)[order] for k, v in zip(meta["fields"], values)}
    return table, np.asarray(geoms, dtype=object)[order]


def embeddings(table):
    return np.stack([np.frombuffer(b, "<f4") for b in table["embedding"]])


def run(dates, out, captioner, **kw):
    params = dict(model=captioner.source, tile_size=TILE, batch_size=4)
    params.update(kw)
    p = CaptionParams(dates[0], dates[1], str(out), later=list(dates[2:]), **params)
    return run_caption(p, Reporter(), captioner=captioner)


@pytest.fixture(scope="module")
def dates(tmp_path_factory):
    d = tmp_path_factory.mktemp("series")
    return [write_raster(d / f"{year}.tif", uint8_scene(SHAPE, seed)) for year, seed in
            ((2019, 41), (2020, 42), (2021, 43))]


@pytest.fixture(scope="module")
def runs(dates, captioner, tmp_path_factory):
    """The series with a heat map and a query, and each of its pairs run on its own (other batching)."""
    d = tmp_path_factory.mktemp("series-out")
    made = {}
    for name, chosen in (("series", dates), ("first", dates[:2]), ("second", dates[1:])):
        out, heat = d / f"{name}.gpkg", d / f"{name}.tif"
        batch = 4 if name == "series" else 2
        run(chosen, out, captioner, batch_size=batch, heatmap=str(heat), heatmap_scale=4, queries=["a road"])
        made[name] = (out, heat)
    return made


def test_one_feature_per_tile_and_interval_in_order(runs, dates):
    table, geoms = layer(runs["series"][0])
    assert len(geoms) == 6 * 2
    # tile by tile, then interval
    assert table["tile_id"].tolist() == [t for t in range(6) for _ in range(2)]
    assert table["interval"].tolist() == [0, 1] * 6
    assert table["before_name"].tolist() == ["2019.tif", "2020.tif"] * 6
    assert table["after_name"].tolist() == ["2020.tif", "2021.tif"] * 6
    polys = shapely.from_wkb(geoms)
    assert all(polys[2 * t].equals(polys[2 * t + 1]) for t in range(6))  # one tile, one footprint
    meta = read_metadata(runs["series"][0])
    assert meta["dates"] == [os.path.abspath(d) for d in dates]
    assert meta["intervals"] == [{"interval": 0, "before": "2019.tif", "after": "2020.tif"},
                                 {"interval": 1, "before": "2020.tif", "after": "2021.tif"}]
    assert meta["params"]["later"] == [os.path.abspath(dates[2])]
    assert [s["path"] for s in meta["run_fingerprint"]["later"]] == [os.path.abspath(dates[2])]
    assert meta["features"] == 12 and meta["complete"] is True


def test_each_interval_equals_its_pairs_own_run(runs):
    series, series_geoms = layer(runs["series"][0])
    for interval, name in enumerate(("first", "second")):
        pair, pair_geoms = layer(runs[name][0])
        mine = series["interval"] == interval
        assert series["tile_id"][mine].tolist() == pair["tile_id"].tolist()
        assert series["caption"][mine].tolist() == pair["caption"].tolist()
        assert series["changed"][mine].tolist() == pair["changed"].tolist()
        np.testing.assert_allclose(series["change_score"][mine], pair["change_score"], atol=1e-5)
        np.testing.assert_allclose(embeddings(series)[mine], embeddings(pair), atol=1e-5)
        np.testing.assert_allclose(series["q_a_road"][mine], pair["q_a_road"], atol=1e-5)
        np.testing.assert_array_equal(series["nodata_fraction"][mine], pair["nodata_fraction"])
        assert list(series_geoms[mine]) == list(pair_geoms)


def test_most_changed_interval_is_the_argmax_of_the_tiles_scores(runs):
    table, _ = layer(runs["series"][0])
    scores = table["change_score"].reshape(6, 2)
    assert not np.any(scores[:, 0] == scores[:, 1])  # no tie: argmax says it all
    expected = np.argmax(scores, axis=1)
    assert table["most_changed_interval"].reshape(6, 2).tolist() == [[k, k] for k in expected]


def test_a_pair_is_interval_zero_with_the_captioners_values(runs, dates, captioner):
    table, _ = layer(runs["first"][0])
    assert table["interval"].tolist() == [0] * 6 and table["most_changed_interval"].tolist() == [0] * 6
    assert set(table["before_name"]) == {"2019.tif"} and set(table["after_name"]) == {"2020.tif"}
    assert read_metadata(runs["first"][0])["intervals"] == [{"interval": 0, "before": "2019.tif",
                                                                "after": "2020.tif"}]
    with rasterio.open(dates[0]) as b, rasterio.open(dates[1]) as a:
        before, after = b.read(), a.read()
    cut = [(r, c) for r, c in zip(table["row"], table["col"])]
    tb = np.stack([before[:, r:r + TILE, c:c + TILE] for r, c in cut])
    ta = np.stack([after[:, r:r + TILE, c:c + TILE] for r, c in cut])
    result = captioner.describe_pairs(captioner.preprocess(tb), captioner.preprocess(ta))
    assert table["caption"].tolist() == list(result.captions)
    np.testing.assert_allclose(table["change_score"], result.change_scores.numpy(), atol=1e-5)
    np.testing.assert_allclose(embeddings(table), result.embeddings.numpy(), atol=1e-5)


def test_each_date_goes_through_the_image_backbone_once_a_tile(dates, captioner, tmp_path, monkeypatch):
    """3 dates, 6 tiles: 12 pairs, 18 backbone images (not 24), the layer of the series run."""
    backbone = captioner.net.encoder.encoder
    seen = []
    real = backbone.forward
    monkeypatch.setattr(backbone, "forward", lambda x: seen.append(len(x)) or real(x))
    out = tmp_path / "counted.gpkg"
    run(dates, out, captioner, batch_size=4, heatmap=str(tmp_path / "counted.tif"), heatmap_scale=4,
        queries=["a road"])
    assert sum(seen) == 6 * 3
    table, _ = layer(out)
    assert len(table["caption"]) == 12


def test_each_date_is_read_once_a_tile(dates, small_checkpoint, tmp_path, monkeypatch):
    reads = {}
    real = grid_reader.GridReader.read

    def counting(self, window):
        key = (self.plan.path, tuple(window))
        reads[key] = reads.get(key, 0) + 1
        return real(self, window)

    monkeypatch.setattr(grid_reader.GridReader, "read", counting)
    out = tmp_path / "read.gpkg"
    rc = main(["caption", *dates, "-o", str(out), "--model", str(small_checkpoint), "--tile-size", str(TILE),
               "--batch-size", "4", "--device", "cpu", "--progress", "json"])
    assert rc == 0
    windows = {(c, r, TILE, TILE) for r in (0, 64) for c in (0, 64, 128)}
    assert reads == {(d, w): 1 for d in dates for w in windows}
    assert len(layer(out)[1]) == 12


def test_heatmap_has_a_band_an_interval_equal_to_each_pairs_map(runs):
    with rasterio.open(runs["series"][1]) as ds:
        assert ds.count == 2
        assert ds.descriptions == ("2019.tif -> 2020.tif", "2020.tif -> 2021.tif")
        bands = ds.read()
    for interval, name in enumerate(("first", "second")):
        with rasterio.open(runs[name][1]) as ds:
            assert ds.count == 1 and ds.descriptions == ("attention",)
            np.testing.assert_allclose(bands[interval], ds.read(1), atol=1e-5)


def test_info_prints_the_dates_and_intervals(runs, dates, capsys):
    out = runs["series"][0]
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2019.tif, " in text and "interval 1: 2020.tif -> 2021.tif: 6 tiles" in text
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dates"] == [os.path.abspath(d) for d in dates]
    assert [(i["interval"], i["before"], i["after"], i["features"]) for i in info["intervals"]] == \
        [(0, "2019.tif", "2020.tif", 6), (1, "2020.tif", "2021.tif", 6)]


def test_series_fields_are_never_search_score_fields():
    for name in SERIES:
        assert written_by_caption(name)


# --- nodata, interruption and resume ----------------------------------------------------------

@pytest.fixture(scope="module")
def masked_dates(tmp_path_factory):
    """2021 has tile 0 all nodata and half of tile 4: interval 1 of tile 0 is skipped (interval 0
    is not), and tile 4's 2020 image is blanked for interval 1 only."""
    d = tmp_path_factory.mktemp("masked")
    data = [uint8_scene(SHAPE, seed) + 1 for seed in (51, 52, 53)]
    data[2][:, :64, :64] = 0
    data[2][:, 64:, 64:96] = 0
    return [write_raster(d / f"m{k}.tif", x, nodata=0) for k, x in enumerate(data)]


@pytest.fixture(scope="module")
def masked_run(masked_dates, captioner, tmp_path_factory):
    out = tmp_path_factory.mktemp("masked-out") / "whole.gpkg"
    summary = run(masked_dates, out, captioner, batch_size=2)
    return out, summary


def test_skips_are_per_interval(masked_run, masked_dates, captioner, tmp_path):
    out, summary = masked_run
    table, _ = layer(out)
    assert (summary.features, summary.skipped) == (11, 1)
    assert read_metadata(out)["skipped_tiles"] == [
        {"tile_id": 0, "row": 0, "col": 0, "nodata_fraction": 1.0, "interval": 1}]
    assert table["tile_id"][:2].tolist() == [0, 1] and table["interval"][:2].tolist() == [0, 0]
    assert table["most_changed_interval"][0] == 0  # its only captioned interval
    # the blanking of one interval does not leak into the other: each equals its pair's run
    for interval, pair in enumerate((masked_dates[:2], masked_dates[1:])):
        alone, _ = layer(run(pair, tmp_path / f"pair{interval}.gpkg", captioner).output)
        mine = table["interval"] == interval
        assert table["tile_id"][mine].tolist() == alone["tile_id"].tolist()
        assert table["caption"][mine].tolist() == alone["caption"].tolist()
        np.testing.assert_allclose(table["change_score"][mine], alone["change_score"], atol=1e-5)
        np.testing.assert_allclose(embeddings(table)[mine], embeddings(alone), atol=1e-5)
        np.testing.assert_allclose(table["nodata_fraction"][mine], alone["nodata_fraction"])
    np.testing.assert_allclose(table["nodata_fraction"][table["tile_id"] == 4], [0.0, 0.5])


class StopAfter:
    """The captioner, stopping the run (as Ctrl-C does) at its `calls`-th model call."""

    def __init__(self, cap, calls):
        self._cap, self._left = cap, calls

    def __getattr__(self, name):
        return getattr(self._cap, name)

    def describe_dates(self, *args, **kw):
        self._left -= 1
        if self._left == 0:
            raise KeyboardInterrupt
        return self._cap.describe_dates(*args, **kw)


def _interrupted(dates, out, captioner, calls=2):
    with pytest.raises(KeyboardInterrupt):
        run(dates, out, StopAfter(captioner, calls), batch_size=2)
    part = partial_path(out)
    assert not out.exists() and os.path.exists(part)
    return part


def test_resume_mid_series_finishes_without_duplicates(masked_run, masked_dates, captioner, tmp_path):
    out = tmp_path / "resumed.gpkg"
    part = _interrupted(masked_dates, out, captioner)
    first, _ = layer(part)
    # the first batch (tiles 0 and 1) whole: tile 0 has only its interval 0, the other was skipped
    assert list(zip(first["tile_id"], first["interval"])) == [(0, 0), (1, 0), (1, 1)]
    summary = run(masked_dates, out, captioner, batch_size=2, resume=True)
    assert summary.resumed_tiles == 1  # tile 1; tile 0 is read again for its skipped interval
    got, got_geoms = layer(out)
    want, want_geoms = layer(masked_run[0])
    assert list(zip(got["tile_id"], got["interval"])) == list(zip(want["tile_id"], want["interval"]))
    assert got["caption"].tolist() == want["caption"].tolist()
    assert got["most_changed_interval"].tolist() == want["most_changed_interval"].tolist()
    np.testing.assert_allclose(got["change_score"], want["change_score"], atol=1e-5)
    assert list(got_geoms) == list(want_geoms)
    meta, whole = read_metadata(out), read_metadata(masked_run[0])
    assert (meta["skipped_count"], meta["skipped_tiles"]) == (whole["skipped_count"], whole["skipped_tiles"])
    assert summary.skipped == 1


def _sql(path):
    """A connection to the GeoPackage that can compile GDAL's R-tree triggers (their ST_* functions)."""
    con = sqlite3.connect(path)
    for name in ("ST_IsEmpty", "ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY"):
        con.create_function(name, 1, lambda _: 0)
    return con


def test_the_layer_refuses_a_tiles_interval_twice(masked_run, tmp_path):
    copy = tmp_path / "copy.gpkg"
    copy.write_bytes(masked_run[0].read_bytes())
    con = _sql(copy)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            with con:
                con.execute('INSERT INTO changes (tile_id, interval) VALUES (1, 0)')
        with con:  # another interval of the same tile is a feature of its own
            con.execute('INSERT INTO changes (tile_id, interval) VALUES (0, 1)')
    finally:
        con.close()


def test_a_pairs_partial_file_from_before_time_series_resumes(dates, captioner, tmp_path):
    """A partial file made before the series fields existed: no such fields, no `later` in its
    fingerprint, tile_id alone unique. Resumed, it gets the fields, as a new run has them."""
    out = tmp_path / "old.gpkg"
    part = _interrupted(dates[:2], out, captioner)
    con = _sql(part)
    try:
        with con:
            con.execute('DROP INDEX "idx_changes_tile_id"')
            for name in SERIES:
                con.execute(f'ALTER TABLE changes DROP COLUMN "{name}"')
            con.execute('CREATE UNIQUE INDEX "idx_changes_tile_id" ON changes(tile_id)')
    finally:
        con.close()
    meta = read_metadata(part)
    fingerprint = {k: v for k, v in meta["run_fingerprint"].items() if k != "later"}
    write_metadata(part, {"run_fingerprint": fingerprint})
    assert not set(SERIES) & set(read_info(part)["fields"])

    run(dates[:2], out, captioner, batch_size=2, resume=True)
    got, _ = layer(out)
    want, _ = layer(run(dates[:2], tmp_path / "new.gpkg", captioner).output)
    assert got["tile_id"].tolist() == want["tile_id"].tolist()
    for name in SERIES + ["caption"]:
        assert got[name].tolist() == want[name].tolist(), name


# --- refused before any work ------------------------------------------------------------------

def _bad_third(d, kind, dates):
    """A third date that cannot join the series, and the words its error must hold."""
    path = str(d / f"{kind}.tif")
    if kind == "crs":
        return write_raster(path, uint8_scene(SHAPE, 7), crs="EPSG:32633"), ("CRS", "--reproject")
    if kind == "shifted":
        origin = (ORIGIN[0] + 0.3 * 0.5, ORIGIN[1])
        return write_raster(path, uint8_scene(SHAPE, 7), origin=origin), ("shifted", "--reproject")
    if kind == "bands":
        return write_raster(path, uint8_scene(SHAPE, 7)[:1]), ("band", "--bands")
    if kind == "missing":
        return path, ("no such file",)
    if kind == "twice":
        return dates[1], ("twice in a row", "dates 2 and 3")
    if kind == "apart":  # overlaps 2019 by two tiles, but only half a tile of what 2019 and 2020 share
        return write_raster(path, uint8_scene(SHAPE, 7), origin=(ORIGIN[0] + 64 * 0.5, ORIGIN[1])), \
            ("shares only 32 x 128 px", "earlier dates")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["crs", "shifted", "bands", "missing", "twice", "apart"])
def test_a_bad_date_is_named_and_nothing_is_left(kind, dates, small_checkpoint, tmp_path, capsys):
    series = dates[:2]
    if kind == "apart":  # 2020 covers only the left half of 2019
        series = [dates[0], write_raster(tmp_path / "left.tif", uint8_scene((128, 96), 8))]
    third, words = _bad_third(tmp_path, kind, series)
    out = tmp_path / "bad.gpkg"
    rc = main(["caption", *series, third, "-o", str(out), "--model", str(small_checkpoint),
               "--tile-size", str(TILE), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert third in err and all(w in err for w in words), err
    assert not [n for n in os.listdir(tmp_path) if n.startswith("bad.gpkg")]


def test_more_than_the_most_dates_is_refused(dates, tmp_path):
    later = [dates[k % 3] for k in range(MAX_DATES - 1)]  # 101 dates, none twice in a row
    with pytest.raises(ParamError, match=f"at most {MAX_DATES} dates, got {MAX_DATES + 1}"):
        CaptionParams(dates[0], dates[1], str(tmp_path / "o.gpkg"), later=later).check()
    # 100 dates of 256 px tiles: at most 40 tiles a batch
    CaptionParams(dates[0], dates[1], str(tmp_path / "o.gpkg"), later=later[:-1], batch_size=16).check()


def test_a_pair_of_one_file_stays_valid_but_not_in_a_series(dates, tmp_path):
    CaptionParams(dates[0], dates[0], str(tmp_path / "o.gpkg")).check()
    with pytest.raises(ParamError, match="twice in a row"):
        CaptionParams(dates[0], dates[1], str(tmp_path / "o.gpkg"), later=[dates[1]]).check()


def test_batch_memory_bound_scales_with_the_dates(dates, tmp_path):
    kw = dict(tile_size=4096, batch_size=8)
    CaptionParams(dates[0], dates[1], str(tmp_path / "o.gpkg"), **kw).check()  # a pair: as before
    with pytest.raises(ParamError, match="of 3 dates .* use --batch-size 5 or less"):
        CaptionParams(dates[0], dates[1], str(tmp_path / "o.gpkg"), later=[dates[2]], **kw).check()
    CaptionParams(dates[0], dates[1], str(tmp_path / "o.gpkg"), later=[dates[2]], tile_size=4096,
                  batch_size=5).check()


def test_ray_takes_two_dates(dates, tmp_path, capsys):
    rc = main(["caption", *dates, "-o", str(tmp_path / "o.gpkg"), "--engine", "ray"])
    err = capsys.readouterr().err
    assert rc == 2 and "--engine ray takes two dates for now" in err
    assert not os.listdir(tmp_path)
