"""The serve worker's caption_at request (the map tool's click): the answer for a click at a
tile's centre is that tile of `rsicrc caption`'s layer; points outside the overlap, nodata,
bad paths, bad CRSs and out-of-bounds options are refused with one clear message, and the
worker keeps serving."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pipeline_test_rasters import ORIGIN, uint8_scene, write_raster

from rsicrc.pipeline.caption.clip_annotator import ClipTileAnnotator, parse_classes
from rsicrc.pipeline.caption.point import ATTENTION_MISSING, supports_attention
from rsicrc.pipeline.caption.run import CaptionParams, run_caption
from rsicrc.pipeline.layer.gpkg import read_columns, read_metadata
from rsicrc.pipeline.progress import Reporter
from rsicrc.pipeline.raster.pair_plan import plan_pair
from rsicrc.pipeline.serve import ServeHandler, serve

TILE = 128
CLASSES = "buildings, water, forest"
CRS = "EPSG:32632"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """256 x 384 px (2 x 3 tiles of 128 px); AFTER has a bright block in tile 4 and nodata
    (value 0) over all of tile 2."""
    d = tmp_path_factory.mktemp("click-pair")
    before = uint8_scene((256, 384), 11)
    before[before == 0] = 1  # 0 is AFTER's nodata value
    after = before.copy()
    after[:, 150:230, 150:240] = 240
    after[:, 0:128, 256:384] = 0
    return (write_raster(d / "before.tif", before), write_raster(d / "after.tif", after, nodata=0))


@pytest.fixture(scope="module")
def layer(pair, captioner, tiny_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("click-out") / "changes.gpkg"
    params = CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE, batch_size=6, clip=True,
                           clip_model=tiny_clip.source, classes=CLASSES)
    run_caption(params, Reporter(), captioner=captioner,
                clip_annotator=ClipTileAnnotator(tiny_clip, parse_classes(CLASSES)))
    names = ["tile_id", "row", "col", "caption", "changed", "change_score", "nodata_fraction", "before_class",
             "after_class", "class_changed", "before_class_prob", "after_class_prob"]
    columns = read_columns(out, names)
    rows = {int(t): {n: columns[n][i] for n in names} for i, t in enumerate(columns["tile_id"])}
    return rows, read_metadata(out)


@pytest.fixture(scope="module")
def worker(captioner, tiny_clip):
    """The serve worker in this process, its model cache holding the models already loaded."""
    w = ServeHandler(captioner.source, tiny_clip.source, device="cpu")
    w._models[("rsicrc", captioner.source)] = captioner
    w._models[("clip", tiny_clip.source)] = tiny_clip
    yield w
    w._points.close()


def ask(worker, *requests):
    """Answers to the request lines (dicts are sent as JSON), through the serve loop itself."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in requests]
    out = io.StringIO()
    assert serve(worker, stdin=io.StringIO("\n".join(lines) + "\n"), stdout=out) == 0
    answers = [json.loads(x, parse_constant=lambda c: pytest.fail(f"{c} in an answer"))
               for x in out.getvalue().splitlines()]
    assert len(answers) == len(requests)
    return answers


def centre(pair, row, col, size=TILE):
    grid = plan_pair(*pair, tile_size=size).grid
    return grid.transform @ (col + size / 2, row + size / 2)


def click(pair, x, y, rid=1, **extra):
    return {"id": rid, "op": "caption_at", "before": pair[0], "after": pair[1], "x": x, "y": y, "crs": CRS,
            "tile_size": TILE, **extra}


def test_click_at_a_tile_centre_is_that_tile_of_the_layer(pair, layer, worker):
    rows, _ = layer
    tile = rows[4]  # row 128, col 128: the changed block
    x, y = centre(pair, tile["row"], tile["col"])
    (answer,) = ask(worker, click(pair, x, y, clip=True, classes=CLASSES))
    assert answer["ok"], answer
    assert answer["window"] == {"col": 128, "row": 128, "size": TILE}
    assert answer["caption"] == tile["caption"]
    assert answer["changed"] == bool(tile["changed"])
    assert answer["change_score"] == pytest.approx(float(tile["change_score"]), abs=1e-6)
    assert answer["nodata_fraction"] == pytest.approx(float(tile["nodata_fraction"]))
    left, top = ORIGIN[0] + 128 * 0.5, ORIGIN[1] - 128 * 0.5
    assert answer["bounds"] == pytest.approx([left, top - TILE * 0.5, left + TILE * 0.5, top])
    assert "32632" in answer["crs"] and answer["crs_name"] == CRS
    labels = answer["clip"]
    for name in ("before_class", "after_class"):
        assert labels[name] == tile[name]
    assert labels["class_changed"] == bool(tile["class_changed"])
    assert labels["before_class_prob"] == pytest.approx(float(tile["before_class_prob"]), abs=1e-5)
    assert labels["after_class_prob"] == pytest.approx(float(tile["after_class_prob"]), abs=1e-5)
    assert answer["model_sha256"] == layer[1]["model_sha256"]


def test_every_tile_centre_matches_and_a_nodata_tile_is_refused_as_caption_skips_it(pair, layer, worker):
    rows, meta = layer
    skipped = {t["tile_id"] for t in meta["skipped_tiles"]}
    assert skipped == {2}  # the all-nodata tile; the layer holds the others
    requests = []
    for tile_id in range(6):
        row, col = divmod(tile_id, 3)
        requests.append(click(pair, *centre(pair, row * TILE, col * TILE), rid=tile_id))
    answers = ask(worker, *requests)
    for tile_id, answer in enumerate(answers):
        assert answer["id"] == tile_id
        if tile_id in skipped:
            assert not answer["ok"]
            assert "100% nodata" in answer["error"] and "skips such tiles" in answer["error"]
        else:
            assert answer["ok"], answer
            assert answer["caption"] == rows[tile_id]["caption"]
            assert answer["clip"] is None  # not asked for


def test_window_is_centred_on_the_point_and_moved_inside_the_overlap(pair, worker):
    grid = plan_pair(*pair, tile_size=TILE).grid
    inner, corner, edge = (grid.transform @ p for p in ((200.2, 100.7), (3.0, 250.0), (383.9, 0.1)))
    answers = ask(worker, click(pair, *inner, rid=1), click(pair, *corner, rid=2), click(pair, *edge, rid=3))
    assert answers[0]["window"] == {"col": 136, "row": 37, "size": TILE}  # 200.2 - 64, 100.7 - 64
    assert answers[1]["window"] == {"col": 0, "row": 128, "size": TILE}
    assert not answers[2]["ok"] and "nodata" in answers[2]["error"]  # clamped onto the nodata tile
    assert answers[2]["id"] == 3


def test_point_in_another_crs_is_transformed_onto_the_grid(pair, layer, worker):
    from rasterio.warp import transform

    rows, _ = layer
    x, y = centre(pair, 0, 128)
    (lon,), (lat,) = transform(CRS, "EPSG:4326", [x], [y])
    from rasterio.crs import CRS as RasterioCRS

    (answer,) = ask(worker, click(pair, lon, lat, crs="EPSG:4326"))
    assert answer["ok"], answer
    assert answer["window"] == {"col": 128, "row": 0, "size": TILE}
    assert answer["caption"] == rows[1]["caption"]
    by_code, by_wkt = ask(worker, click(pair, lon, lat, crs=4326),
                          click(pair, lon, lat, crs=RasterioCRS.from_epsg(4326).to_wkt()))
    assert by_code["window"] == by_wkt["window"] == answer["window"]


def test_attention_map_when_the_model_gives_one(pair, captioner, worker):
    (answer,) = ask(worker, click(pair, *centre(pair, 128, 0)))
    assert answer["ok"], answer
    if not supports_attention(captioner):  # the model package does not offer it yet
        assert answer["attention"] is None and ATTENTION_MISSING in answer["warnings"]
        return
    heat = np.array(answer["attention"])
    assert heat.ndim == 2 and heat.shape[0] >= 2 and heat.shape[1] >= 2
    assert np.all(np.isfinite(heat))
    assert ATTENTION_MISSING not in answer["warnings"]


@pytest.mark.parametrize("change, words", [
    ({"x": 0.0, "y": 0.0}, ["outside the area BEFORE and AFTER share", "600000 to 600192"]),
    ({"before": "/nonexistent/before.tif"}, ["/nonexistent/before.tif", "no such file"]),
    ({"after": ""}, ["'after' must be a non-empty string"]),
    ({"before": 12}, ["'before' must be a non-empty string"]),
    ({"crs": "EPSG:999999"}, ["'crs'", "not a coordinate reference system"]),
    ({"crs": "not a crs at all"}, ["not a coordinate reference system"]),
    ({"x": "east"}, ["'x' must be a number"]),
    ({"x": True}, ["'x' must be a number"]),
    ({"y": 10 ** 400}, ["'y' must be a finite number"]),
    ({"tile_size": 5000}, ["'tile_size'", "at most 4096"]),
    ({"tile_size": 1024}, ["smaller than one 1024 px tile"]),
    ({"bands": "1,2"}, ["'bands'", "three band numbers"]),
    ({"bands": [1, 2, 5]}, ["asks for band 5"]),
    ({"max_nodata": 2}, ["'max_nodata'", "at most 1"]),
    ({"clip": "yes"}, ["'clip' must be true or false"]),
    ({"clip": True, "classes": "water"}, ["give at least two"]),
    ({"model": "/nonexistent/model"}, ["/nonexistent/model"]),
])
def test_bad_clicks_are_refused_with_one_line_and_the_worker_goes_on(pair, worker, change, words):
    x, y = centre(pair, 0, 0)
    bad = dict(click(pair, x, y, rid="bad"), **change)
    answers = ask(worker, bad, click(pair, x, y, rid="good"), {"id": 3, "op": "ping"})
    assert answers[0]["id"] == "bad" and answers[0]["ok"] is False
    error = answers[0]["error"]
    assert "\n" not in error and "Traceback" not in error
    for word in words:
        assert word in error
    assert answers[1]["id"] == "good" and answers[1]["ok"], answers[1]
    assert answers[2]["ok"]


def test_plan_is_kept_per_pair_and_redone_when_a_file_changes(pair, worker, tmp_path):
    import shutil

    before, after = (shutil.copy(p, tmp_path / os.path.basename(p)) for p in pair)
    x, y = centre(pair, 0, 0)
    req = click((str(before), str(after)), x, y)
    (first,) = ask(worker, req)
    kept = [k for k in worker._points._pairs if k[0] == str(before)]
    assert len(kept) == 1
    (second,) = ask(worker, req)
    assert second["caption"] == first["caption"]
    assert [k for k in worker._points._pairs if k[0] == str(before)] == kept  # reused
    with open(after, "r+b") as f:  # AFTER rewritten: checked again, the old plan dropped
        f.seek(0, 2)
        f.write(b"\0")
    os.utime(after, ns=(1, 1))
    (third,) = ask(worker, req)
    assert third["ok"], third
    now = [k for k in worker._points._pairs if k[0] == str(before)]
    assert len(now) == 1 and now != kept


def test_serve_process_answers_clicks_and_survives_bad_ones(pair, layer, small_checkpoint):
    rows, _ = layer
    x, y = centre(pair, 128, 256)
    requests = [click(pair, x, y, rid=1), click(pair, 1e9, 1e9, rid=2),
                click(pair, x, y, rid=3, crs="EPSG:0"), {"id": 4, "op": "ping"}]
    proc = subprocess.run([sys.executable, "-m", "rsicrc", "serve", "--model", str(small_checkpoint), "--device",
                           "cpu"], input="\n".join(json.dumps(r) for r in requests) + "\n", capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [a["id"] for a in answers] == [1, 2, 3, 4]
    assert answers[0]["ok"] and answers[0]["caption"] == rows[5]["caption"]
    assert not answers[1]["ok"] and "outside the area" in answers[1]["error"]
    assert not answers[2]["ok"] and "not a coordinate reference system" in answers[2]["error"]
    assert answers[3]["ok"]
