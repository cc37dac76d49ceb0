"""`--engine ray` on a local Ray cluster of 2 workers: the same layer as the local engine, tile for
tile; a worker killed mid-run (kill -9) leaves a run that --resume finishes without redoing the
finished shards; bad input fails as it does with the local engine."""
import os
import signal
import threading

import numpy as np
import pytest
from pipeline_test_rasters import uint8_scene, write_raster
from test_bad_input import CASES, NO_MODEL, rasters  # noqa: F401 - rasters: the fixture

from rsicrc.pipeline.caption import ray_engine
from rsicrc.pipeline.caption.run import CaptionParams, run_caption
from rsicrc.pipeline.cli import main
from rsicrc.pipeline.errors import PipelineFailure
from rsicrc.pipeline.layer.blobs import blobs_to_matrix
from rsicrc.pipeline.layer.gpkg import read_columns, read_metadata
from rsicrc.pipeline.layer.schema import GEOMETRY_COLUMN, partial_path
from rsicrc.pipeline.layer.shards import parts_dir
from rsicrc.pipeline.progress import Reporter

ray = pytest.importorskip("ray")

TILE = 64
QUERIES = ["many buildings have been built", "a road"]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """10 x 4 tiles of 64 px; nodata in one corner so that some tiles are skipped."""
    d = tmp_path_factory.mktemp("ray-pair")
    before = uint8_scene((256, 640), 11)
    before[:, :64, :128] = 0
    return (write_raster(d / "before.tif", before, nodata=0),
            write_raster(d / "after.tif", uint8_scene((256, 640), 12)))


def params(pair, out, captioner, **kw):
    return CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE, batch_size=2, queries=QUERIES,
                         **kw)


@pytest.fixture(scope="module")
def local_layer(pair, captioner, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "local.gpkg"
    run_caption(params(pair, out, captioner), Reporter(), captioner=captioner)
    return out


def table(path):
    columns = ["tile_id", "row", "col", "caption", "changed", "change_score", "nodata_fraction", "embedding",
               "q_many_buildings_have_been_built", "q_a_road"]
    return read_columns(path, columns, geometry=True)


def assert_same_layer(got, want):
    a, b = table(got), table(want)
    order_a, order_b = np.argsort(a["tile_id"]), np.argsort(b["tile_id"])
    assert a["tile_id"][order_a].tolist() == b["tile_id"][order_b].tolist()
    for name in ("row", "col", "caption", "changed"):
        assert a[name][order_a].tolist() == b[name][order_b].tolist(), name
    for name in ("change_score", "nodata_fraction", "q_many_buildings_have_been_built", "q_a_road"):
        np.testing.assert_allclose(a[name][order_a], b[name][order_b], atol=1e-5, err_msg=name)
    meta_a, meta_b = read_metadata(got), read_metadata(want)
    dim = meta_b["embedding_dim"]
    emb_a = blobs_to_matrix(a["embedding"][order_a], dim)
    emb_b = blobs_to_matrix(b["embedding"][order_b], dim)
    np.testing.assert_allclose(emb_a, emb_b, atol=1e-5)
    assert list(a[GEOMETRY_COLUMN][order_a]) == list(b[GEOMETRY_COLUMN][order_b])
    for key in ("complete", "features", "skipped_count", "skipped_tiles", "queries", "model_sha256",
                "run_fingerprint"):
        if key == "run_fingerprint":
            assert meta_a[key] | {"before": None, "after": None} == meta_b[key] | {"before": None, "after": None}
        else:
            assert meta_a[key] == meta_b[key], key


def test_ray_layer_equals_the_local_layer(pair, captioner, local_layer, tmp_path):
    out = tmp_path / "ray.gpkg"
    summary = run_caption(params(pair, out, captioner, engine="ray"), Reporter())
    assert summary.total == 40 and summary.skipped == 2 and summary.features == 38
    assert_same_layer(out, local_layer)
    meta = read_metadata(out)
    assert meta["params"]["engine"] == "ray"
    assert not os.path.exists(parts_dir(out)) and not os.path.exists(partial_path(out))


def test_resume_after_a_worker_is_killed(pair, captioner, local_layer, tmp_path, monkeypatch):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "hold").touch()  # every worker stops after its first shard, until killed or released
    monkeypatch.setenv(ray_engine.TEST_HOOK_ENV, str(hook))
    monkeypatch.setattr(ray_engine, "SHARD_BATCHES", 2)  # 4-tile shards: 10 of them
    out = tmp_path / "ray.gpkg"
    failure = {}

    def run():
        try:
            run_caption(params(pair, out, captioner, engine="ray"), Reporter())
        except PipelineFailure as exc:
            failure["error"] = exc

    driver = threading.Thread(target=run)
    driver.start()
    # Both workers hold after one shard: wait on that condition, then kill one with SIGKILL.
    done_files = _wait_for(lambda: sorted(n for n in os.listdir(hook) if n.startswith("done-")), 2, driver)
    pids = [int((hook / n).read_text()) for n in os.listdir(hook) if n.startswith("pid-")]
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    driver.join(timeout=120)
    assert not driver.is_alive()
    assert "rerun with --resume" in str(failure["error"])
    assert os.path.exists(partial_path(out)) and not os.path.exists(out)
    finished = {int(n.split("-")[1]) for n in done_files}

    (hook / "release").touch()
    (hook / "started").unlink()
    run_caption(params(pair, out, captioner, engine="ray", resume=True), Reporter())
    again = {int(line) for line in (hook / "started").read_text().split()}
    assert again and not again & finished  # no finished shard captioned twice
    assert_same_layer(out, local_layer)


def _wait_for(condition, count, driver):
    """Wait until condition() lists `count` items (the workers make them), while the driver runs."""
    import time

    deadline = time.monotonic() + 600  # a guard against a hang, not a timing assertion
    while len(items := condition()) < count:
        assert driver.is_alive() and time.monotonic() < deadline, "the workers never reached the hold"
        time.sleep(0.05)
    return items


@pytest.mark.parametrize("before,after,extra,named,words", CASES[:4], ids=[c[1] for c in CASES[:4]])
def test_bad_input_fails_as_with_the_local_engine(rasters, tmp_path, capsys, before, after, extra, named, words):
    argv = ["caption", rasters[before], rasters[after], "--model", NO_MODEL] + extra
    os.makedirs(tmp_path / "local")
    os.makedirs(tmp_path / "ray")
    local_rc = main(argv + ["-o", str(tmp_path / "local" / "o.gpkg")])
    local_err = capsys.readouterr().err
    rc = main(argv + ["-o", str(tmp_path / "ray" / "o.gpkg"), "--engine", "ray"])
    err = capsys.readouterr().err
    assert (rc, err.replace("/ray/", "/local/")) == (local_rc, local_err)
    assert rc == 2 and os.listdir(tmp_path / "ray") == []


def test_ray_options_need_the_ray_engine(rasters, tmp_path, capsys):
    rc = main(["caption", rasters["good"], rasters["good"], "-o", str(tmp_path / "o.gpkg"), "--workers", "2"])
    assert rc == 2 and "--workers needs --engine ray" in capsys.readouterr().err
    rc = main(["caption", rasters["good"], rasters["good"], "-o", str(tmp_path / "o.gpkg"), "--engine", "spark"])
    assert rc == 2 and "local, ray" in capsys.readouterr().err


def test_caption_batch_on_ray_equals_the_local_batch(pair, small_checkpoint, tmp_path, capsys):
    import json

    csv = tmp_path / "pairs.csv"
    csv.write_text(f"before,after,name\n{pair[0]},{pair[1]},one\n{pair[0]},{tmp_path / 'missing.tif'},two\n"
                   f"{pair[1]},{pair[0]},three\n")
    common = ["caption-batch", str(csv), "--model", str(small_checkpoint), "--tile-size", str(TILE),
              "--batch-size", "4", "--progress", "json"] + sum((["--query", q] for q in QUERIES), [])
    assert main(common + ["-o", str(tmp_path / "local.gpkg")]) == 0
    capsys.readouterr()
    assert main(common + ["-o", str(tmp_path / "ray.gpkg"), "--engine", "ray"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # stdout: JSON lines only
    assert events[-2]["event"] == "done" and events[-2]["features"] == 76
    assert_same_layer(tmp_path / "ray.gpkg", tmp_path / "local.gpkg")
    got, want = (read_columns(tmp_path / n, ["pair"])["pair"].tolist() for n in ("ray.gpkg", "local.gpkg"))
    assert got == want and sorted(set(got)) == ["one", "three"]
    assert [b["pair"] for b in read_metadata(tmp_path / "ray.gpkg")["bad_pairs"]] == ["two"]


def test_shards_cover_what_is_not_done_and_a_left_part_adds_no_tile_twice(tmp_path):
    import pyarrow as pa

    from rsicrc.pipeline.layer import shards as sh
    from rsicrc.pipeline.layer.tile_rows import TileRows

    plan = sh.plan_shards(10, np.array([0, 1, 2, 3, 5]), 4)
    assert [(s.first, s.stop, s.skip, s.size) for s in plan] == [(4, 8, [5], 3), (8, 10, [], 2)]
    keep = np.isin(np.arange(10), [1, 2, 6, 7, 8, 9])  # an area's tiles: shards of 4 of them, the rest left out
    in_area = sh.plan_shards(10, np.array([2]), 4, keep)
    assert [(s.first, s.stop, s.skip) for s in in_area] == [(1, 8, [2]), (8, 10, [])]
    assert sh.plan_shards(10, np.array([1, 2, 6, 7, 8, 9]), 4, keep) == []
    schema = sh.part_schema(pa.schema([("tile_id", pa.int64()), ("caption", pa.string()), ("geom", pa.binary())]),
                            "geom")
    builder = sh.PartBuilder(schema, plan[0])
    builder.add(TileRows({"tile_id": [4, 6], "caption": ["a", "b"]}, np.array([[0, 0, 1, 1], [1, 0, 2, 1]]),
                         [{"tile_id": 7, "row": 0, "col": 0, "nodata_fraction": 1.0}], 3))
    path = builder.write(str(tmp_path))
    assert os.listdir(tmp_path) == ["shard-000000000004.parquet"]  # no temporary file left
    part = sh.read_part(path)
    assert part.columns == {"tile_id": [4, 6], "caption": ["a", "b"]} and part.tiles_read == 3
    assert part.skips[0]["tile_id"] == 7 and part.bounds.tolist() == [[0, 0, 1, 1], [1, 0, 2, 1]]
    rest, dropped = part.without(np.array([4]))  # tile 4 was appended before a driver died
    assert rest.columns == {"tile_id": [6], "caption": ["b"]} and rest.bounds.tolist() == [[1, 0, 2, 1]]
    assert dropped == 1
    sh.mark_done(str(tmp_path), 4, part.skips)
    assert sh.read_markers(str(tmp_path)) == {4: part.skips}
    (tmp_path / "notes.txt").write_text("the user's")
    sh.clear_parts(str(tmp_path))
    assert os.listdir(tmp_path) == ["notes.txt"]  # only rsicrc's own files are removed


def test_a_driver_killed_mid_run_joining_a_cluster_is_resumed(pair, small_checkpoint, local_layer, tmp_path):
    """The CLI joins the running cluster (--ray-address); its process is killed with SIGKILL while
    a worker holds a finished shard; --resume appends its part and captions only the rest."""
    import json
    import subprocess
    import sys

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "hold").touch()
    out = tmp_path / "ray.gpkg"
    address = ray.get_runtime_context().gcs_address
    argv = [sys.executable, "-m", "rsicrc", "caption", *pair, "-o", str(out), "--model", str(small_checkpoint),
            "--tile-size", str(TILE), "--batch-size", "2", "--engine", "ray", "--ray-address", address,
            "--progress", "json"] + sum((["--query", q] for q in QUERIES), [])
    env = {**os.environ, ray_engine.TEST_HOOK_ENV: str(hook), "RAY_ADDRESS": ""}
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        # One done: an actor may be handed both shards (of 32 and 8 tiles), and it holds after its first.
        finished = _wait_for(lambda: [n for n in os.listdir(hook) if n.startswith("done-")], 1, _Running(driver))
    finally:
        driver.kill()
        driver.wait()
    assert os.path.exists(partial_path(out)) and os.listdir(parts_dir(out))
    (hook / "release").touch()
    (hook / "started").unlink()
    resumed = subprocess.run(argv + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = [json.loads(line) for line in resumed.stdout.splitlines()]  # stdout: JSON lines only
    assert events[-1]["event"] == "done" and events[-1]["features"] == 38
    again = {int(line) for line in (hook / "started").read_text().split()}
    assert not again & {int(n.split("-")[1]) for n in finished}
    assert_same_layer(out, local_layer)


class _Running:
    """_wait_for's guard for a driver process."""

    def __init__(self, process):
        self.process = process

    def is_alive(self):
        return self.process.poll() is None


def test_a_block_that_cannot_be_read_fails_on_a_worker_as_it_does_here(small_checkpoint, tmp_path, capsys):
    """The pair checks pass (the header is intact); a worker meets the bad block: the same one line,
    exit 2, and neither the partial file nor part files are left."""
    from pathlib import Path

    good = Path(write_raster(tmp_path / "whole.tif", uint8_scene((128, 128), 3)))
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    lines = {}
    for engine in ("local", "ray"):
        (tmp_path / engine).mkdir()
        rc = main(["caption", str(bad), str(good), "-o", str(tmp_path / engine / "o.gpkg"), "--model",
                   str(small_checkpoint), "--tile-size", str(TILE), "--engine", engine])
        lines[engine] = (rc, capsys.readouterr().err.strip().splitlines())
        assert os.listdir(tmp_path / engine) == [], engine
    assert lines["ray"] == lines["local"]
    rc, err = lines["local"]
    assert rc == 2 and len(err) == 1 and "truncated.tif" in err[0] and "cannot be read" in err[0], err
