"""Interrupt and resume, search, info and the search worker, through the real command line."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pyogrio.raw
import pytest
from pipeline_test_rasters import scene, uint8_scene, write_raster

from rsicrc.pipeline.caption.run import CaptionParams, run_caption
from rsicrc.pipeline.cli import main
from rsicrc.pipeline.progress import Reporter

TILE = 64


def features(path):
    meta, _, geoms, fields = pyogrio.raw.read(str(path), layer="changes")
    table = dict(zip(meta["fields"], fields))
    order = np.argsort(table["tile_id"])
    return {k: list(v[order]) for k, v in table.items()}, list(geoms[order])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    return (write_raster(d / "b.tif", uint8_scene((128, 192), 11)),   # 2 x 3 tiles of 64 px
            write_raster(d / "a.tif", uint8_scene((128, 192), 12)))


@pytest.fixture(scope="module")
def uninterrupted(pair, captioner, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "full.gpkg"
    run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE, batch_size=2,
                              queries=["a road"]), Reporter(), captioner=captioner)
    return out


def test_interrupted_run_resumes_to_the_same_layer(pair, captioner, small_checkpoint, tmp_path, capsys):
    # 24 tiles of 32 px, one a batch: the Ctrl-C below lands while most of them are still to do,
    # however late this process reads the first progress line on a busy machine.
    tile, tiles = 32, 24
    reference = tmp_path / "reference.gpkg"
    run_caption(CaptionParams(*pair, str(reference), model=captioner.source, tile_size=tile, batch_size=2,
                              queries=["a road"]), Reporter(), captioner=captioner)
    out = tmp_path / "run.gpkg"
    part = str(out) + ".partial"
    cmd = [sys.executable, "-m", "rsicrc", "caption", *pair, "-o", str(out), "--model", str(small_checkpoint),
           "--tile-size", str(tile), "--batch-size", "1", "--query", "a road", "--progress", "json",
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "progress" and events[-1]["done"] >= 1:
            proc.send_signal(signal.SIGINT)  # Ctrl-C after the first committed tile
            break
    rest, err = proc.communicate(timeout=300)
    events += [json.loads(x) for x in rest.splitlines()]
    assert events[0] == {"event": "start", "total": tiles, "output": str(out)}
    assert proc.returncode == 1 and events[-1]["event"] == "error" and "--resume" in events[-1]["message"]
    assert not out.exists() and os.path.exists(part)
    done_before = len(features(part)[0]["tile_id"])
    assert 1 <= done_before < tiles

    rc = main(cmd[3:] + ["--resume"])
    done = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 0 and done[-1] == {"event": "done", "output": str(out), "features": tiles, "skipped": 0}
    progress = [e["done"] for e in done if e["event"] == "progress"]
    assert progress[0] == done_before  # finished tiles were not redone
    assert not os.path.exists(part)
    got, got_geoms = features(out)
    want, want_geoms = features(reference)
    assert got_geoms == want_geoms
    assert got["caption"] == want["caption"]
    # batch sizes differ (1 vs 2), so float sums may differ in the last bit
    np.testing.assert_allclose(np.stack([np.frombuffer(b, "<f4") for b in got["embedding"]]),
                               np.stack([np.frombuffer(b, "<f4") for b in want["embedding"]]), atol=1e-5)
    np.testing.assert_allclose(got["change_score"], want["change_score"], atol=1e-6)
    np.testing.assert_allclose(got["q_a_road"], want["q_a_road"], atol=1e-6)


def test_resume_of_a_different_job_is_refused(pair, captioner, tmp_path):
    out = tmp_path / "o.gpkg"
    part = str(out) + ".partial"
    run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE, batch_size=6),
                Reporter(), captioner=captioner)
    os.replace(out, part)  # a partial file of the 64 px job
    rc = main(["caption", *pair, "-o", str(out), "--model", captioner.source, "--tile-size", "128", "--resume"])
    assert rc == 2 and not out.exists()


def test_resume_if_possible_starts_over_for_a_different_job(pair, captioner, tmp_path, capsys):
    out = tmp_path / "o.gpkg"
    part = str(out) + ".partial"
    run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE, batch_size=6),
                Reporter(), captioner=captioner)
    os.replace(out, part)  # a partial file of the 64 px job
    capsys.readouterr()
    rc = main(["caption", *pair, "-o", str(out), "--model", captioner.source, "--tile-size", "128",
               "--resume-if-possible", "--progress", "json"])
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 0 and not os.path.exists(part)
    assert any(e["event"] == "warning" and "starting over" in e["message"] for e in events)
    assert features(out)[0]["tile_id"] == list(range(events[-1]["features"]))


def test_resume_of_a_stretched_uint16_job(tmp_path, captioner, capsys):
    """The fingerprint holds the stretch limits: they must compare equal after the JSON round trip."""
    data = [(scene((128, 192), seed) * 3000 + 500).astype(np.uint16) for seed in (21, 22)]
    before = write_raster(tmp_path / "b16.tif", data[0])
    after = write_raster(tmp_path / "a16.tif", data[1])
    out = tmp_path / "u16.gpkg"
    run_caption(CaptionParams(before, after, str(out), model=captioner.source, tile_size=TILE, batch_size=6),
                Reporter(), captioner=captioner)
    want = features(out)[0]["caption"]
    os.replace(out, str(out) + ".partial")  # every tile written, the rename not yet done
    rc = main(["caption", before, after, "-o", str(out), "--model", captioner.source, "--tile-size", str(TILE),
               "--resume", "--progress", "json"])
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 0, events[-1]
    assert [e["done"] for e in events if e["event"] == "progress"][0] == len(want)  # nothing redone
    assert features(out)[0]["caption"] == want


@pytest.mark.parametrize("field", ["clip_after", "before_class", "change_score", "tile_id", "embedding"])
def test_search_field_cannot_overwrite_what_caption_wrote(uninterrupted, tmp_path, capsys, field):
    layer = tmp_path / "f.gpkg"
    layer.write_bytes(uninterrupted.read_bytes())
    rc = main(["search", str(layer), "a road", "--field", field, "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and field in err and "would overwrite" in err


def test_search_scores_every_feature(uninterrupted, captioner, tmp_path, capsys):
    layer = tmp_path / "s.gpkg"
    layer.write_bytes(uninterrupted.read_bytes())
    rc = main(["search", str(layer), "new buildings zorglub", "--top", "3", "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert rc == 0 and "zorglub" in captured.err  # the unknown word is reported
    result = json.loads(captured.out)
    table, _ = features(layer)
    emb = np.stack([np.frombuffer(b, "<f4") for b in table["embedding"]])
    expected = emb @ captioner.embed_text(["new buildings zorglub"]).numpy()[0]
    np.testing.assert_allclose(table[result["field"]], expected, atol=1e-5)
    best = np.argsort(-expected, kind="stable")[:3]
    assert [h["tile_id"] for h in result["hits"]] == [table["tile_id"][i] for i in best]
    assert [h["caption"] for h in result["hits"]] == [table["caption"][i] for i in best]

    assert main(["search", str(layer), "a road", "--field", "road_score", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "road_score" in printed and "centroid" in printed
    assert main(["info", str(layer)]) == 0
    info = capsys.readouterr().out
    assert "6 tiles" in info and "road_score" in info and "'a road'" in info


@pytest.mark.parametrize("args,words", [
    (["--clip"], "has no RS-M-CLIP embeddings"),
    (["--field", "caption"], "would overwrite"),
    (["--top", "0"], "--top"),
])
def test_search_bad_input(uninterrupted, args, words, capsys):
    assert main(["search", str(uninterrupted), "a road", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_search_on_missing_or_unfinished_layer(tmp_path, capsys):
    assert main(["search", str(tmp_path / "none.gpkg"), "a road"]) == 2
    assert "none.gpkg: no such file" in capsys.readouterr().err
    bogus = tmp_path / "bogus.gpkg"
    bogus.write_text("hello")
    assert main(["info", str(bogus)]) == 2
    assert "bogus.gpkg" in capsys.readouterr().err


def test_serve_answers_json_lines(small_checkpoint, captioner):
    requests = [
        {"id": 1, "op": "ping"},
        {"id": 2, "op": "embed_text", "texts": ["a road", "zorglub houses"], "model": None},
        "this is not json",
        {"id": 4, "op": "dance"},
        {"id": 5, "op": "embed_text", "texts": ["x"], "model": "/nonexistent/model"},
        {"id": 6, "op": "embed_text", "texts": ["a road"]},
    ]
    stdin = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in requests) + "\n"
    proc = subprocess.run([sys.executable, "-m", "rsicrc", "serve", "--model", str(small_checkpoint),
                           "--device", "cpu"], input=stdin, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    answers = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [a["id"] for a in answers] == [1, 2, None, 4, 5, 6]
    assert answers[0]["ok"] and answers[0]["version"]
    emb = np.array(answers[1]["embeddings"])
    np.testing.assert_allclose(emb, captioner.embed_text(["a road", "zorglub houses"]).numpy(), atol=1e-6)
    assert answers[1]["unknown_words"] == [[], ["zorglub"]]
    assert answers[1]["model_sha256"] == captioner.sha256
    assert [a["ok"] for a in answers[2:5]] == [False, False, False]
    assert "dance" in answers[3]["error"]
    assert answers[5]["ok"]
