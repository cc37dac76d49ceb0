"""`rsicrc caption-batch`: the pairs of a CSV into one layer with a `pair` field; a bad pair is
reported, listed in the metadata and skipped while the others are captioned."""
import json
import os

import numpy as np
import pytest
from pipeline_test_rasters import ORIGIN, uint8_scene, write_raster

from rsicrc.pipeline.cli import main
from rsicrc.pipeline.layer.gpkg import read_columns, read_metadata
from rsicrc.pipeline.layer.schema import GEOMETRY_COLUMN, PAIR_FIELD, partial_path

TILE = 64
FIELDS = ["tile_id", "row", "col", "caption", "change_score", "q_a_road", "embedding"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    east = (ORIGIN[0] + 5000, ORIGIN[1])
    r = {"a1": write_raster(d / "a1.tif", uint8_scene((128, 192), 1)),
         "b1": write_raster(d / "b1.tif", uint8_scene((128, 192), 2)),
         "a2": write_raster(d / "a2.tif", uint8_scene((128, 128), 3), origin=east),
         "b2": write_raster(d / "b2.tif", uint8_scene((128, 128), 4), origin=east),
         "utm33": write_raster(d / "utm33.tif", uint8_scene((128, 128), 5), crs="EPSG:32633")}
    csv = d / "pairs.csv"
    # Row 2: AFTER missing; row 4: another CRS than the layer's (row 1's). Paths relative to the CSV.
    csv.write_text("before,after,name\n"
                   "a1.tif,b1.tif,north\n"
                   f"{r['a2']},missing.tif,\n"
                   f"{r['a2']},{r['b2']},\n"
                   "utm33.tif,utm33.tif,other-crs\n")
    return d, r, csv


def _layer(path):
    return read_columns(path, FIELDS + [PAIR_FIELD], geometry=True)


def test_bad_pairs_are_skipped_and_listed_and_the_others_captioned(pairs, small_checkpoint, tmp_path, capsys):
    d, r, csv = pairs
    out = tmp_path / "all.gpkg"
    common = ["--model", str(small_checkpoint), "--tile-size", str(TILE), "--query", "a road"]
    rc = main(["caption-batch", str(csv), "-o", str(out), "--progress", "json"] + common)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("pair 2 (row 2) skipped" in w and "missing.tif: no such file" in w for w in warnings), warnings
    assert any("pair other-crs (row 4) skipped" in w and "CRS" in w for w in warnings), warnings
    progress = [(e["done"], e["total"]) for e in events if e["event"] == "progress"]
    assert progress[-1] == (10, 10) and all(a[0] <= b[0] for a, b in zip(progress, progress[1:]))

    layer = _layer(out)
    assert layer[PAIR_FIELD].tolist() == ["north"] * 6 + ["3"] * 4
    assert layer["tile_id"].tolist() == list(range(10))  # unique over the layer
    meta = read_metadata(out)
    assert [b["row"] for b in meta["bad_pairs"]] == [2, 4] and "no such file" in meta["bad_pairs"][0]["error"]
    assert [(p["pair"], p["tiles"], p["tile_id_offset"]) for p in meta["pairs"]] == [("north", 6, 0), ("3", 4, 6)]
    assert meta["complete"] is True and meta["features"] == 10
    assert not os.path.exists(str(out) + ".pairs") and not os.path.exists(partial_path(out))

    # Each pair's tiles are what `caption` makes of that pair alone.
    for name, before, after, offset in (("north", r["a1"], r["b1"], 0), ("3", r["a2"], r["b2"], 6)):
        single = tmp_path / f"{name}.gpkg"
        assert main(["caption", before, after, "-o", str(single)] + common) == 0
        want, mine = _layer(single), layer[PAIR_FIELD] == name
        assert (layer["tile_id"][mine] - offset).tolist() == want["tile_id"].tolist()
        for field in ("row", "col", "caption", "embedding", GEOMETRY_COLUMN):
            assert list(layer[field][mine]) == list(want[field]), field
        np.testing.assert_allclose(layer["q_a_road"][mine], want["q_a_road"], atol=1e-6)
    assert main(["info", str(out)]) == 0  # the other commands read it as any caption layer


@pytest.mark.parametrize("text,words", [
    ("before;after\nx;y\n", "needs a header with the columns before,after"),
    ("before,after\n", "holds no pairs"),
    ("before,after,name\na.tif,b.tif,x\nc.tif,d.tif,x\n", "on rows 1 and 2"),
])
def test_an_unusable_csv_exits_2_naming_it(tmp_path, capsys, text, words):
    csv = tmp_path / "pairs.csv"
    csv.write_text(text)
    rc = main(["caption-batch", str(csv), "-o", str(tmp_path / "o.gpkg"), "--model", "/nonexistent"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "pairs.csv" in err and words in err, err
    assert sorted(os.listdir(tmp_path)) == ["pairs.csv"]


def test_only_bad_pairs_exit_2_without_output(pairs, tmp_path, capsys):
    d, r, _ = pairs
    csv = tmp_path / "bad.csv"
    csv.write_text(f"before,after\n{r['a1']},{d / 'nope.tif'}\n")
    rc = main(["caption-batch", str(csv), "-o", str(tmp_path / "o.gpkg"), "--model", "/nonexistent"])
    err = capsys.readouterr().err
    assert rc == 2 and "not one pair can be captioned" in err and "nope.tif: no such file" in err
    assert not os.path.exists(tmp_path / "o.gpkg")


def test_heatmap_is_not_a_batch_option(pairs, tmp_path, capsys):
    rc = main(["caption-batch", str(pairs[2]), "-o", str(tmp_path / "o.gpkg"), "--heatmap", str(tmp_path / "h.tif")])
    assert rc == 2 and "unrecognized arguments: --heatmap" in capsys.readouterr().err
