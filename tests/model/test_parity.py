"""The proof: generated checkpoints of every parity case give the official outputs."""
import numpy as np
import torch

EMBEDDING_TOLERANCE = 1e-4


def test_token_ids_whole_batch(loaded):
    case, model, before, after = loaded
    assert model.generate(before, after) == case["expected"]["token_ids"]


def test_token_ids_one_pair_at_a_time(loaded):
    case, model, before, after = loaded
    single = [model.generate(before[i:i + 1], after[i:i + 1])[0] for i in range(len(before))]
    assert single == case["expected"]["token_ids"]


def test_captions_and_embeddings_in_one_pass(loaded):
    case, model, before, after = loaded
    captions, emb = model.caption_and_embed(before, after)
    assert captions == case["expected"]["captions"]
    expected = np.asarray(case["expected"]["pair_embeddings"], dtype=np.float32)
    assert np.abs(emb.numpy() - expected).max() < EMBEDDING_TOLERANCE
    assert np.allclose(np.linalg.norm(emb.numpy(), axis=1), 1.0, atol=1e-5)
    assert torch.allclose(model.encode_pairs(before, after), emb, atol=1e-6)


def test_text_embeddings(loaded):
    case, model, _, _ = loaded
    assert [model.tokenize(t).ids for t in case["texts"]] == case["text_ids"]
    expected = np.asarray(case["expected"]["text_embeddings"], dtype=np.float32)
    assert np.abs(model.embed_text(case["texts"]).numpy() - expected).max() < EMBEDDING_TOLERANCE
    # One at a time equals the padded batch: padding after END must not leak into END's state.
    one_by_one = torch.cat([model.embed_text([t]) for t in case["texts"]])
    assert np.abs(one_by_one.numpy() - expected).max() < EMBEDDING_TOLERANCE
