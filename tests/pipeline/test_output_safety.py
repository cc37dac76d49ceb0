"""Nothing lost, nothing wrong: one writer per output, a result nobody can lose at the final move,
one layer per file (the run metadata is GDAL metadata), and search over tiles without embeddings."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pyogrio
import pytest
from layer_edits import set_null
from pipeline_test_rasters import uint8_scene, write_raster

from rsicrc.pipeline import output_file
from rsicrc.pipeline.caption.run import CaptionParams, run_caption
from rsicrc.pipeline.cli import main
from rsicrc.pipeline.layer.blobs import blobs_to_matrix
from rsicrc.pipeline.layer.gpkg import read_columns, read_info, read_metadata
from rsicrc.pipeline.layer.schema import partial_path
from rsicrc.pipeline.progress import Reporter

TILE = 64


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety")
    return (write_raster(d / "b.tif", uint8_scene((128, 192), 31)),   # 2 x 3 tiles of 64 px
            write_raster(d / "a.tif", uint8_scene((128, 192), 32)))


@pytest.fixture(scope="module")
def finished(pair, captioner, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "changes.gpkg"
    run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE, batch_size=6),
                Reporter(), captioner=captioner)
    return out


def _cli(pair, out, checkpoint, *extra):
    return [sys.executable, "-m", "rsicrc", "caption", *pair, "-o", str(out), "--model", str(checkpoint),
            "--tile-size", str(TILE), "--device", "cpu", "--progress", "json", *extra]


def test_the_file_holds_one_layer_and_its_metadata(finished, captioner):
    assert [list(x) for x in pyogrio.list_layers(str(finished))] == [["changes", "Polygon"]]
    meta = read_metadata(finished)
    assert meta["complete"] is True and meta["features"] == 6 and meta["model_sha256"] == captioner.sha256
    # GDAL keeps the spatial index: a bounding-box query finds exactly the tiles it covers.
    info = pyogrio.read_info(str(finished), layer="changes")
    left, bottom, right, top = info["total_bounds"]
    assert (right - left, top - bottom) == (192 * 0.5, 128 * 0.5)
    one = pyogrio.raw.read(str(finished), layer="changes", bbox=(left + 1, top - 1, left + 2, top - 0.5),
                           columns=["tile_id"])[3][0]
    assert list(one) == [0]


def test_a_second_run_to_the_same_output_stops_at_once(pair, small_checkpoint, tmp_path, capsys):
    out = tmp_path / "busy.gpkg"
    first = subprocess.Popen(_cli(pair, out, small_checkpoint, "--batch-size", "1"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    events = []
    for line in first.stdout:  # the lock is held from before the first event to the final move
        events.append(json.loads(line))
        if events[-1]["event"] == "progress":
            break
    rc = main(["caption", *pair, "-o", str(out), "--model", str(small_checkpoint), "--tile-size", str(TILE),
               "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    rest, first_err = first.communicate(timeout=300)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert str(out) in err and f"process {first.pid}" in err, err
    assert first.returncode == 0, first_err[-2000:]
    assert json.loads(rest.splitlines()[-1])["event"] == "done"
    assert sorted(read_columns(out, ["tile_id"])["tile_id"]) == list(range(6))
    assert not os.path.exists(output_file.lock_path(out))


def test_the_lock_of_a_killed_run_is_taken_over(pair, captioner, small_checkpoint, tmp_path):
    out = tmp_path / "killed.gpkg"
    proc = subprocess.Popen(_cli(pair, out, small_checkpoint, "--batch-size", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["done"] >= 1:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert os.path.exists(output_file.lock_path(out))  # a kill leaves the marker behind
    summary = run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE, resume=True),
                          Reporter(), captioner=captioner)
    assert summary.features == 6 and summary.resumed_tiles >= 1
    assert not os.path.exists(output_file.lock_path(out))


def test_an_output_that_cannot_be_replaced_keeps_the_finished_tiles(pair, captioner, tmp_path, monkeypatch,
                                                                     capsys):
    out = tmp_path / "held.gpkg"
    out.write_bytes(b"")  # stands for the previous result, held open by QGIS on Windows
    real_replace = os.replace

    def refuse(src, dst):
        if str(dst) == str(out):
            raise PermissionError(13, "The process cannot access the file because it is being used")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    argv = ["caption", *pair, "-o", str(out), "--model", captioner.source, "--tile-size", str(TILE),
            "--overwrite"]
    monkeypatch.setattr("rsicrc.pipeline.caption.steps.load_captioner", lambda *a: captioner)
    assert main(argv) == 1
    err = capsys.readouterr().err
    part = partial_path(out)
    assert "every tile is written" in err and part in err and "--resume" in err
    assert read_metadata(part)["complete"] is True and read_info(part)["features"] == 6
    monkeypatch.setattr(os, "replace", real_replace)
    assert main(argv + ["--resume", "--progress", "json"]) == 0
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [e["done"] for e in events if e["event"] == "progress"] == [6]  # nothing recomputed
    assert read_info(out)["features"] == 6 and not os.path.exists(part)


def test_an_output_open_elsewhere_on_windows_is_refused_before_any_work(tmp_path, monkeypatch):
    held = tmp_path / "held.gpkg"
    held.write_bytes(b"x")

    def rename(src, dst):
        raise PermissionError(32, "The process cannot access the file because it is being used")

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(output_file.BadInput, match="is open in another program"):
        output_file.check_replaceable(str(held), windows=True)
    output_file.check_replaceable(str(held), windows=False)  # POSIX replaces open files fine
    assert held.read_bytes() == b"x"


def test_search_skips_a_tile_whose_embedding_is_null(finished, captioner, tmp_path, capsys):
    layer = tmp_path / "hole.gpkg"
    layer.write_bytes(finished.read_bytes())
    hole = set_null(layer, "embedding")
    rc = main(["search", str(layer), "a road", "--top", "10", "--device", "cpu", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out)  # strict JSON: no NaN anywhere
    assert result["features"] == 6 and result["scored"] == 5
    table = read_columns(layer, ["tile_id", "embedding", result["field"]])
    scores = dict(zip(table["fid"].tolist(), table[result["field"]].tolist()))
    assert np.isnan(scores.pop(hole))  # NULL in the file
    emb = blobs_to_matrix(table["embedding"], captioner.embedding_dim)
    expected = emb @ captioner.embed_text(["a road"]).numpy()[0]
    keep = table["fid"] != hole
    np.testing.assert_allclose(table[result["field"]][keep], expected[keep], atol=1e-5)
    hole_tile = int(table["tile_id"][~keep][0])
    assert len(result["hits"]) == 5 and hole_tile not in [h["tile_id"] for h in result["hits"]]
