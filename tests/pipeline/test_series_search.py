"""`rsicrc search` on a time-series layer: a tile is a hit once per interval, and each hit says
which (interval, before_name, after_name); a pair's hits say interval 0, and a layer from before
time series (no such fields) searches as it always did."""
import json
import shutil
import sqlite3

import numpy as np
import pyogrio.raw
import pytest
from pipeline_test_rasters import uint8_scene, write_raster

from rsicrc.pipeline.caption.run import run_caption
from rsicrc.pipeline.caption_params import CaptionParams
from rsicrc.pipeline.cli import main
from rsicrc.pipeline.progress import Reporter

TILE = 64
SHAPE = (128, 192)  # 2 x 3 tiles of 64 px
TEXT = "a road"
NAMES = ["2019.tif", "2020.tif", "2021.tif"]
SERIES = ["interval", "before_name", "after_name", "most_changed_interval"]


@pytest.fixture(scope="module")
def dates(tmp_path_factory):
    d = tmp_path_factory.mktemp("series-search")
    return [write_raster(d / name, uint8_scene(SHAPE, seed)) for name, seed in zip(NAMES, (41, 42, 43))]


def _run(dates, out, captioner):
    run_caption(CaptionParams(dates[0], dates[1], str(out), later=list(dates[2:]), model=captioner.source,
                              tile_size=TILE, batch_size=4), Reporter(), captioner=captioner)
    return out


@pytest.fixture(scope="module")
def series_layer(dates, captioner, tmp_path_factory):
    return _run(dates, tmp_path_factory.mktemp("series-search-out") / "series.gpkg", captioner)


@pytest.fixture(scope="module")
def pair_layer(dates, captioner, tmp_path_factory):
    return _run(dates[:2], tmp_path_factory.mktemp("pair-search-out") / "pair.gpkg", captioner)


@pytest.fixture
def copy_of(tmp_path):
    def copy(path):
        target = tmp_path / path.name
        shutil.copyfile(path, target)
        return target
    return copy


def _features(path):
    """{(tile_id, interval): {field: value}} of the layer, the expected score of TEXT included."""
    meta, _, _, values = pyogrio.raw.read(str(path), layer="changes")
    table = dict(zip(meta["fields"], values))
    return {(int(t), int(k)): {"caption": c, "before_name": b, "after_name": a, "embedding": e}
            for t, k, c, b, a, e in zip(table["tile_id"], table["interval"], table["caption"],
                                        table["before_name"], table["after_name"], table["embedding"])}


def _search(path, captioner, capsys, *extra):
    rc = main(["search", str(path), TEXT, "--model", captioner.source, "--device", "cpu", *extra])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out


def _sql(path, *statements):
    con = sqlite3.connect(str(path))
    for name in ("ST_IsEmpty", "ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY"):  # GDAL's R-tree triggers
        con.create_function(name, 1, lambda g: 0)
    with con:
        for statement in statements:
            con.execute(statement)
    con.close()


def test_every_interval_of_a_tile_is_a_hit_of_its_own(series_layer, copy_of, captioner, capsys):
    layer = copy_of(series_layer)
    want = _features(layer)
    assert len(want) == 6 * 2
    result = json.loads(_search(layer, captioner, capsys, "--json", "--top", "12"))
    hits = result["hits"]
    got = {(h["tile_id"], h["interval"]): h for h in hits}
    assert set(got) == set(want)  # each tile twice, once per interval, told apart by interval
    query = captioner.embed_text([TEXT]).numpy()[0]
    for key, hit in got.items():
        feature = want[key]
        assert (hit["before_name"], hit["after_name"]) == (feature["before_name"], feature["after_name"])
        assert (hit["before_name"], hit["after_name"]) == (NAMES[key[1]], NAMES[key[1] + 1])
        assert hit["caption"] == feature["caption"]
        assert hit["score"] == pytest.approx(float(np.frombuffer(feature["embedding"], "<f4") @ query), abs=1e-5)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_printed_hits_name_their_interval(series_layer, copy_of, captioner, capsys):
    layer = copy_of(series_layer)
    best = json.loads(_search(layer, captioner, capsys, "--json", "--top", "5"))["hits"]
    lines = _search(layer, captioner, capsys, "--top", "5").splitlines()
    assert lines[1].split() == ["tile_id", "score", "centroid", "x", "centroid", "y", "interval", "dates",
                                "caption"]
    assert len(lines) == 2 + 5
    for line, hit in zip(lines[2:], best):
        cells = line.split()
        assert cells[0] == str(hit["tile_id"]) and float(cells[1]) == pytest.approx(hit["score"], abs=1e-4)
        assert [float(v) for v in cells[2:4]] == pytest.approx(hit["centroid"], abs=0.01)
        assert cells[4:8] == [str(hit["interval"]), hit["before_name"], "->", hit["after_name"]]
        assert " ".join(cells[8:]) == " ".join(hit["caption"].split())
    # The captions start in one column whatever the dates' names.
    assert len({line.index("  " + " ".join(hit["caption"].split())) for line, hit in zip(lines[2:], best)}) == 1


def test_a_pairs_hits_say_interval_zero(pair_layer, copy_of, captioner, capsys):
    layer = copy_of(pair_layer)
    hits = json.loads(_search(layer, captioner, capsys, "--json", "--top", "6"))["hits"]
    assert len(hits) == 6 and sorted(h["tile_id"] for h in hits) == list(range(6))
    assert {(h["interval"], h["before_name"], h["after_name"]) for h in hits} == {(0, NAMES[0], NAMES[1])}
    lines = _search(layer, captioner, capsys, "--top", "6").splitlines()
    assert all(line.split()[4:8] == ["0", NAMES[0], "->", NAMES[1]] for line in lines[2:])


def test_a_layer_from_before_time_series_searches_as_before(pair_layer, copy_of, captioner, capsys):
    layer = copy_of(pair_layer)
    _sql(layer, 'DROP INDEX "idx_changes_tile_id"',
         *(f'ALTER TABLE changes DROP COLUMN "{name}"' for name in SERIES),
         'CREATE UNIQUE INDEX "idx_changes_tile_id" ON changes(tile_id)')
    hits = json.loads(_search(layer, captioner, capsys, "--json", "--top", "6"))["hits"]
    assert len(hits) == 6
    assert all(set(h) == {"tile_id", "score", "caption", "centroid"} for h in hits)
    lines = _search(layer, captioner, capsys, "--top", "6").splitlines()
    assert lines[1].split() == ["tile_id", "score", "centroid", "x", "centroid", "y", "caption"]
    assert all("->" not in line for line in lines)


def test_emptied_interval_fields_are_null_and_dashes(series_layer, copy_of, captioner, capsys):
    layer = copy_of(series_layer)
    _sql(layer, "UPDATE changes SET interval = NULL, before_name = NULL, after_name = 'x\ny' WHERE fid = 3")
    hits = json.loads(_search(layer, captioner, capsys, "--json", "--top", "12"))["hits"]
    emptied = [h for h in hits if h["interval"] is None]
    assert len(emptied) == 1 and emptied[0]["before_name"] is None and emptied[0]["after_name"] == "x\ny"
    lines = _search(layer, captioner, capsys, "--top", "12").splitlines()
    assert len(lines) == 2 + 12  # the name's line break stays out of the table
    row = next(line.split() for line in lines[2:] if line.split()[4] == "-")
    assert row[5:8] == ["?", "->", "x"] and row[8] == "y"
