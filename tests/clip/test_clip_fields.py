"""rsicrc.pipeline.caption.clip_annotator: per-tile RS-M-CLIP fields, zero-shot classes and scoring."""

import numpy as np
import pytest

from rsicrc.pipeline.caption.clip_annotator import (DEFAULT_CLASSES, ClipTileAnnotator, classify_embeddings,
                                                    parse_classes)
from rsicrc.pipeline.scores import ClipFieldsMissingError, clip_scores, require_clip_fields, score_embeddings
from rsicrc.pipeline.layer.blobs import blobs_to_matrix, embedding_blob
from rsicrc.pipeline.layer.schema import CLASS_FIELDS


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_parse_classes():
    assert parse_classes(None) == DEFAULT_CLASSES and len(DEFAULT_CLASSES) >= 6
    assert parse_classes("forest, water ,buildings") == ["forest", "water", "buildings"]
    assert parse_classes("floresta;  água,Floresta,  edifícios  altos") == ["floresta", "água", "edifícios altos"]
    assert parse_classes("森林，水体、建筑") == ["森林", "水体", "建筑"]
    for bad in ("", " , ,", "forest", "forest, FOREST"):
        with pytest.raises(ValueError, match="at least two"):
            parse_classes(bad)


def test_blob_round_trip_and_missing_rows():
    vecs = _unit(np.random.default_rng(0).normal(size=(3, 5)))
    blobs = [embedding_blob(v) for v in vecs]
    assert all(len(b) == 5 * 4 for b in blobs)
    assert np.frombuffer(blobs[1], dtype="<f4").tolist() == vecs[1].tolist()
    matrix = blobs_to_matrix([blobs[0], None, b"", blobs[2]], 5)
    np.testing.assert_array_equal(matrix[[0, 3]], vecs[[0, 2]])
    assert np.isnan(matrix[[1, 2]]).all()
    with pytest.raises(ValueError, match="row 0 has 20 bytes, expected 16"):
        blobs_to_matrix(blobs, 4)


def test_score_formula():
    rng = np.random.default_rng(1)
    t = _unit(rng.normal(size=8))
    before, after = _unit(rng.normal(size=(4, 8))), _unit(rng.normal(size=(4, 8)))
    cos_b = np.array([sum(float(x) * float(y) for x, y in zip(row, t)) for row in before])
    cos_a = np.array([sum(float(x) * float(y) for x, y in zip(row, t)) for row in after])
    np.testing.assert_allclose(score_embeddings(t, before, after), cos_a, atol=1e-6)
    np.testing.assert_allclose(score_embeddings(t, before, after, when="before"), cos_b, atol=1e-6)
    np.testing.assert_allclose(score_embeddings(t, before, after, change=True), cos_a - cos_b, atol=1e-6)
    # The array that a score does not need may be absent.
    np.testing.assert_allclose(score_embeddings(t, None, after), cos_a, atol=1e-6)
    # "Appeared": the tile that went from unlike the text to like it ranks first.
    before[2], after[2] = -t, t
    rise = score_embeddings(t, before, after, change=True)
    assert rise.argmax() == 2 and rise[2] == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(ValueError, match="BEFORE embeddings are needed"):
        score_embeddings(t, None, after, change=True)
    with pytest.raises(ValueError, match="when must be"):
        score_embeddings(t, before, after, when="during")
    with pytest.raises(ValueError, match="different CLIP model"):
        score_embeddings(t[:4], before, after)
    nan_rows = after.copy()
    nan_rows[1] = np.nan
    scores = score_embeddings(t, before, nan_rows)
    assert np.isnan(scores[1]) and np.isfinite(scores[[0, 2, 3]]).all()


def test_classify_embeddings_is_a_softmax():
    classes = _unit(np.eye(3, 6) + 0.1)
    images = np.stack([classes[2], classes[0]])
    idx, prob = classify_embeddings(images, classes, logit_scale=50.0)
    assert idx.tolist() == [2, 0]
    logits = 50.0 * images.astype(np.float64) @ classes.T.astype(np.float64)
    expected = np.exp(logits[0, 2]) / np.exp(logits[0]).sum()
    assert prob[0] == pytest.approx(expected, rel=1e-9)
    _, flat = classify_embeddings(images, classes, logit_scale=1e-9)
    np.testing.assert_allclose(flat, 1 / 3, rtol=1e-6)


def test_clip_scores_in_every_script(tiny_clip, queries):
    texts = list(queries.values())
    text_emb = tiny_clip.encode_text(texts).numpy()
    for i, text in enumerate(texts):
        # Tiles whose AFTER embedding is the text's own embedding score 1 and rank first.
        after = np.roll(text_emb, -i, axis=0)
        before = np.roll(text_emb, -i + 1, axis=0)
        scores = clip_scores(tiny_clip, text, before, after)
        assert scores.shape == (len(texts),) and np.isfinite(scores).all()
        assert scores[0] == pytest.approx(1.0, abs=1e-4) and scores.argmax() == 0, text
        back = clip_scores(tiny_clip, text, before, after, when="before")
        assert back[1] == pytest.approx(1.0, abs=1e-4) and back.argmax() == 1, text
        rise = clip_scores(tiny_clip, text, before, after, change=True)
        np.testing.assert_allclose(rise, scores - back, atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        clip_scores(tiny_clip, "  ", text_emb, text_emb)


def test_annotator_embeddings_only(tiny_clip, tile_pairs):
    before, after = tile_pairs
    annot = ClipTileAnnotator(tiny_clip, None)
    assert annot.fields == [("clip_before", "blob"), ("clip_after", "blob")]
    rows = annot.annotate(before, after)
    assert len(rows) == len(before) and set(rows[0]) == {"clip_before", "clip_after"}
    emb_b = blobs_to_matrix([r["clip_before"] for r in rows], tiny_clip.embedding_dim)
    emb_a = blobs_to_matrix([r["clip_after"] for r in rows], tiny_clip.embedding_dim)
    np.testing.assert_allclose(emb_b, tiny_clip.encode_images(before).numpy(), atol=1e-5)
    np.testing.assert_allclose(emb_a, tiny_clip.encode_images(after).numpy(), atol=1e-5)
    meta = annot.metadata()
    assert meta["clip_model_source"] == tiny_clip.source and meta["clip_model_sha256"] == tiny_clip.sha256
    assert meta["clip_embedding_dim"] == tiny_clip.embedding_dim and meta["classes"] is None


@pytest.mark.parametrize("classes", [None, "forest, água, bâtiments, Ackerland, 建筑, здания, 숲"])
def test_annotator_fills_class_fields(tiny_clip, tile_pairs, classes):
    before, after = tile_pairs
    names = parse_classes(classes)
    annot = ClipTileAnnotator(tiny_clip, names)
    assert annot.fields[2:] == CLASS_FIELDS
    rows = annot.annotate(before, after)
    # Recompute independently: prompts embedded per template, averaged, softmax at logit_scale.
    per_template = [tiny_clip.encode_text([t.format(c) for c in names]).numpy() for t in annot.templates]
    class_emb = np.mean(per_template, axis=0)
    class_emb /= np.linalg.norm(class_emb, axis=1, keepdims=True)
    for when, images in (("before", before), ("after", after)):
        logits = tiny_clip.logit_scale * tiny_clip.encode_images(images).numpy() @ class_emb.T
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        for row, p in zip(rows, probs):
            assert row[f"{when}_class"] == names[int(p.argmax())]
            assert row[f"{when}_class_prob"] == pytest.approx(float(p.max()), abs=1e-4)
            assert 1 / len(names) <= row[f"{when}_class_prob"] <= 1.0
    for row in rows:
        assert row["class_changed"] == (row["before_class"] != row["after_class"])
        assert isinstance(row["class_changed"], bool)
    assert annot.metadata()["classes"] == names


def test_annotator_refuses_unpaired_tiles(tiny_clip, tile_pairs):
    before, after = tile_pairs
    with pytest.raises(ValueError, match="6 BEFORE tiles but 5 AFTER"):
        ClipTileAnnotator(tiny_clip, None).annotate(before, after[:5])


def test_layer_without_clip_fields_message():
    require_clip_fields(["tile_id", "caption", "clip_before", "clip_after"], "x.gpkg")
    with pytest.raises(ClipFieldsMissingError) as err:
        require_clip_fields(["tile_id", "caption", "embedding"], "/data/changes.gpkg")
    msg = str(err.value)
    assert "/data/changes.gpkg" in msg and "clip_before, clip_after" in msg and "--clip" in msg
