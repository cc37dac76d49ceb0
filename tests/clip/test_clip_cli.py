"""RS-M-CLIP through the command line: caption --clip --classes, search --clip --when/--change,
the search worker's clip embed_text, and the message for a layer without CLIP embeddings."""

import json
import os
import subprocess
import sys

import numpy as np
import pyogrio.raw
import pytest
import rasterio
from rasterio.transform import from_origin

from rsicrc.pipeline.caption.clip_annotator import ClipTileAnnotator, parse_classes
from rsicrc.pipeline.cli import main
from rsicrc.pipeline.scores import score_embeddings
from rsicrc.pipeline.layer.blobs import blobs_to_matrix

TILE = 64
CLASSES = "forest, água, bâtiments, 建筑, здания, 숲"


def _write(path, data):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=3,
                       dtype="uint8", crs="EPSG:32632", transform=from_origin(600000, 5100000, 0.5, 0.5)) as dst:
        dst.write(data)
    return str(path)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip-pair")
    rng = np.random.default_rng(3)
    before = (rng.random((3, 8, 12)).repeat(16, 1).repeat(16, 2) * 255).astype(np.uint8)  # 2 x 3 tiles
    after = before.copy()
    after[:, 10:60, 70:120] = rng.integers(0, 256, (3, 50, 50), dtype=np.uint8)
    return _write(d / "before.tif", before), _write(d / "after.tif", after), before, after


def _layer(path):
    meta, _, _, fields = pyogrio.raw.read(str(path), layer="changes")
    table = dict(zip(meta["fields"], fields))
    order = np.argsort(table["tile_id"])
    return {k: list(np.asarray(v, dtype=object)[order]) for k, v in table.items()}


def _metadata(path):
    from rsicrc.pipeline.layer.gpkg import read_metadata

    return read_metadata(path)


def _tiles(image, table):
    return np.stack([image[:, r:r + TILE, c:c + TILE] for r, c in zip(table["row"], table["col"])])


@pytest.fixture(scope="module")
def clip_layer(pair, small_checkpoint, tiny_clip_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip-layer") / "changes.gpkg"
    proc = subprocess.run(
        [sys.executable, "-m", "rsicrc", "caption", pair[0], pair[1], "-o", str(out),
         "--model", str(small_checkpoint), "--tile-size", str(TILE), "--device", "cpu",
         "--clip", "--clip-model", str(tiny_clip_folder), "--classes", CLASSES, "--progress", "json"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(x) for x in proc.stdout.splitlines()]
    assert events[-1] == {"event": "done", "output": str(out), "features": 6, "skipped": 0}
    return out


def test_caption_stores_clip_embeddings_and_classes(clip_layer, pair, tiny_clip):
    table = _layer(clip_layer)
    dim = tiny_clip.embedding_dim
    before, after = _tiles(pair[2], table), _tiles(pair[3], table)
    emb_b = blobs_to_matrix(table["clip_before"], dim)
    emb_a = blobs_to_matrix(table["clip_after"], dim)
    np.testing.assert_allclose(emb_b, tiny_clip.encode_images(before).numpy(), atol=1e-5)
    np.testing.assert_allclose(emb_a, tiny_clip.encode_images(after).numpy(), atol=1e-5)
    names = parse_classes(CLASSES)
    expected = ClipTileAnnotator(tiny_clip, names).annotate(before, after)
    for i, row in enumerate(expected):
        for key in ("before_class", "after_class"):
            assert table[key][i] == row[key] and row[key] in names
        assert bool(table["class_changed"][i]) == row["class_changed"]
        for key in ("before_class_prob", "after_class_prob"):
            assert float(table[key][i]) == pytest.approx(row[key], abs=1e-5)
    meta = _metadata(clip_layer)
    assert meta["clip_model_source"] == tiny_clip.source
    assert meta["clip_model_sha256"] == tiny_clip.sha256
    assert meta["clip_embedding_dim"] == dim and meta["classes"] == names


def _search(capsys, *args):
    assert main(["search", *[str(a) for a in args], "--clip", "--device", "cpu", "--json", "--top", "6"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("lang", ["en", "pt", "fr", "de", "ru", "zh", "ko"])
def test_search_clip_in_every_script(clip_layer, tiny_clip, queries, lang, capsys):
    text = queries[lang]
    table = _layer(clip_layer)
    dim = tiny_clip.embedding_dim
    before = blobs_to_matrix(table["clip_before"], dim)
    after = blobs_to_matrix(table["clip_after"], dim)
    t = tiny_clip.encode_text([text]).numpy()[0]
    for extra, expected in (([], score_embeddings(t, before, after)),
                            (["--when", "before"], score_embeddings(t, before, after, when="before")),
                            (["--change"], score_embeddings(t, before, after, change=True))):
        result = _search(capsys, clip_layer, text, *extra)
        scores = np.array(_layer(clip_layer)[result["field"]], dtype=float)
        assert np.isfinite(scores).all()
        np.testing.assert_allclose(scores, expected, atol=1e-5)
        order = np.argsort(-expected, kind="stable")
        assert [h["tile_id"] for h in result["hits"]] == [table["tile_id"][i] for i in order]
    assert (np.abs(score_embeddings(t, before, after, change=True)) > 0).any()


def test_search_clip_on_layer_without_embeddings(pair, small_checkpoint, tmp_path, capsys):
    plain = tmp_path / "plain.gpkg"
    assert main(["caption", pair[0], pair[1], "-o", str(plain), "--model", str(small_checkpoint),
                 "--tile-size", str(TILE), "--device", "cpu", "--progress", "json"]) == 0
    capsys.readouterr()
    assert main(["search", str(plain), "новые здания", "--clip", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "plain.gpkg" in err and "RS-M-CLIP" in err and "--clip" in err and len(err.splitlines()) == 1


def test_search_clip_with_another_clip_model_is_refused(clip_layer, tmp_path, capsys):
    from clip_generate import write_generated_clip

    other = write_generated_clip(tmp_path / "other", seed=1)
    assert main(["search", str(clip_layer), "forest", "--clip", "--clip-model", str(other),
                 "--device", "cpu"]) == 2
    assert "same CLIP model" in capsys.readouterr().err


def test_caption_refuses_a_single_class(pair, small_checkpoint, tiny_clip_folder, tmp_path, capsys):
    assert main(["caption", pair[0], pair[1], "-o", str(tmp_path / "x.gpkg"), "--model", str(small_checkpoint),
                 "--tile-size", str(TILE), "--device", "cpu", "--clip", "--clip-model", str(tiny_clip_folder),
                 "--classes", "forest"]) == 2
    assert "at least two" in capsys.readouterr().err


def test_serve_clip_embed_text(tiny_clip_folder, tiny_clip, small_checkpoint, queries):
    texts = [queries["zh"], queries["ko"], queries["ru"], queries["pt"]]
    requests = [{"id": 1, "op": "embed_text", "texts": texts, "clip": True},
                {"id": 2, "op": "embed_text", "texts": ["x"], "clip": True, "model": "/nonexistent/clip"}]
    proc = subprocess.run([sys.executable, "-m", "rsicrc", "serve", "--model", str(small_checkpoint),
                           "--clip-model", str(tiny_clip_folder), "--device", "cpu"],
                          input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = [json.loads(x) for x in proc.stdout.splitlines()]
    assert first["ok"] and first["unknown_words"] == [[], [], [], []]
    assert first["model_sha256"] == tiny_clip.sha256
    np.testing.assert_allclose(np.array(first["embeddings"]), tiny_clip.encode_text(texts).numpy(), atol=1e-5)
    assert not second["ok"] and "/nonexistent/clip" in second["error"]


def test_clip_model_default_comes_from_the_environment(monkeypatch):
    from rsicrc.pipeline.caption_params import DEFAULT_CLIP_MODEL, CaptionParams

    monkeypatch.delenv("RSICRC_CLIP_MODEL", raising=False)
    assert CaptionParams("b", "a", "o").clip_model == DEFAULT_CLIP_MODEL
    monkeypatch.setenv("RSICRC_CLIP_MODEL", "/somewhere/RS-M-CLIP")
    assert CaptionParams("b", "a", "o").clip_model == "/somewhere/RS-M-CLIP"


def test_search_clip_scores_a_tile_without_embedding_as_empty(clip_layer, tmp_path, capsys):
    import sqlite3

    from layer_edits import set_null

    layer = tmp_path / "hole.gpkg"
    layer.write_bytes(clip_layer.read_bytes())
    hole = set_null(layer, "clip_after")
    result = _search(capsys, layer, "new buildings")
    con = sqlite3.connect(layer)
    scores = dict(con.execute(f'SELECT fid, "{result["field"]}" FROM "changes"').fetchall())
    con.close()
    assert scores.pop(hole) is None  # no embedding: no score, and no failure
    assert all(isinstance(v, float) for v in scores.values())
