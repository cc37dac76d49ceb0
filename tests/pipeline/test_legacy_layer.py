"""A layer written by the previous version (tests/data/legacy, README there) still opens, searches
and resumes with today's code."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from rsicrc.pipeline.cli import main
from rsicrc.pipeline.layer.gpkg import read_columns, read_info, read_metadata

LEGACY = Path(__file__).resolve().parent.parent / "data" / "legacy"
# Where the legacy run read its rasters: its resume fingerprint names them there.
INPUTS = Path("/tmp/rsicrc-legacy-layer")
MTIME_NS = 1_700_000_000_000_000_000
QUERY = "many buildings have been built"


LEGACY_SHA256 = "58f34843094c67029283943a81912d1a2cebcbbc723c1f172cd65965532c0c89"


@pytest.fixture
def legacy(tmp_path, small_checkpoint):
    """A copy of the legacy files. The checkpoint is regenerated from the recipe here, and numpy 2
    rounds a few of its values one ULP away from numpy 1's (Debian 13 and sid), so its bytes and
    sha256 may differ from the legacy run's: the copy then names this checkpoint's sha256, which
    stands for the same weights (the layer's values are compared within 1e-5 below)."""
    from rsicrc.pipeline.layer.gpkg import write_metadata
    from rsicrc.model.loading import sha256_of

    folder = tmp_path / "legacy"
    shutil.copytree(LEGACY, folder)
    sha = sha256_of(Path(small_checkpoint) / "pytorch_model.bin")
    if sha != LEGACY_SHA256:
        write_metadata(folder / "finished.gpkg", {"model_sha256": sha})
        part = folder / "unfinished.gpkg.partial"
        meta = read_metadata(part)
        write_metadata(part, {"model_sha256": sha, "run_fingerprint": {**meta["run_fingerprint"], "model_sha256": sha}})
    return folder


@pytest.fixture
def legacy_inputs():
    """The legacy run's rasters back where its fingerprint says they were, as they were."""
    INPUTS.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("before.tif", "after.tif"):
        shutil.copyfile(LEGACY / name, INPUTS / name)
        os.utime(INPUTS / name, ns=(MTIME_NS, MTIME_NS))
        paths.append(str(INPUTS / name))
    yield paths
    shutil.rmtree(INPUTS, ignore_errors=True)


def test_info_reads_a_legacy_layer(legacy, capsys):
    assert main(["info", str(legacy / "finished.gpkg"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["features"] == 9 and info["tile_size"] == 32
    assert info["queries"] == {"q_many_buildings_have_been_built": QUERY, "q_a_road_is_built": "a road is built"}
    assert [i["interval"] for i in info["intervals"]] == [0] and info["intervals"][0]["features"] == 9


def test_search_scores_a_legacy_layer(legacy, small_checkpoint, capsys):
    layer = str(legacy / "finished.gpkg")
    assert main(["search", layer, QUERY, "--json", "--field", "again", "--top", "9", "--device", "cpu",
                 "--model", str(small_checkpoint)]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    stored = read_columns(layer, ["tile_id", "q_many_buildings_have_been_built", "again"])
    # The same text scored from the same stored embeddings: the caption run's own query field.
    np.testing.assert_allclose(stored["again"], stored["q_many_buildings_have_been_built"], atol=1e-5)
    assert [h["tile_id"] for h in hits] == list(stored["tile_id"][np.argsort(-stored["again"], kind="stable")])


def test_a_legacy_partial_layer_resumes_to_the_legacy_result(legacy, legacy_inputs, small_checkpoint, capsys):
    out = legacy / "unfinished.gpkg"
    assert read_info(str(out) + ".partial")["features"] == 4
    argv = ["caption", *legacy_inputs, "-o", str(out), "--model", str(small_checkpoint), "--tile-size", "32",
            "--device", "cpu", "--query", QUERY, "--resume", "--progress", "json"]
    assert main(argv) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["done"] for e in events if e["event"] == "progress"][0] == 4  # the legacy tiles were kept
    assert read_metadata(out)["complete"] is True
    got = read_columns(str(out), ["tile_id", "caption", "change_score", "embedding"])
    want = read_columns(str(legacy / "finished.gpkg"), ["tile_id", "caption", "change_score", "embedding"])
    assert sorted(got["tile_id"]) == sorted(want["tile_id"]) == list(range(9))
    by_id = {t: i for i, t in enumerate(want["tile_id"])}
    for i, tile in enumerate(got["tile_id"]):
        j = by_id[tile]
        assert got["caption"][i] == want["caption"][j]
        assert abs(got["change_score"][i] - want["change_score"][j]) < 1e-5
        difference = np.frombuffer(got["embedding"][i], "<f4") - np.frombuffer(want["embedding"][j], "<f4")
        assert np.abs(difference).max() < 1e-5
