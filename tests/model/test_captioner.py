"""Captioner behaviour beyond parity: tokenizer, change score, one-pass results."""
import numpy as np
import pytest
import torch

from parity_recipe import load_case, pair_inputs
from rsicrc.model import load_model
from rsicrc.model.change_score import NO_CHANGE_SENTENCES, is_no_change


@pytest.fixture(scope="module")
def small(small_checkpoint):
    case = load_case("rn50-small")
    model = load_model(str(small_checkpoint), device="cpu")
    before, after = (torch.from_numpy(x) for x in pair_inputs(case))
    return model, before, after


def test_unknown_words_are_reported(small):
    model, _, _ = small
    tok = model.tokenize("Many NEW buildings near the río, by 2 roads!")
    assert tok.unknown == ["near", "río"]
    assert tok.words == ["many", "new", "buildings", "near", "the", "río", "by", "roads"]
    assert model.unknown_words("many buildings") == []
    assert model.unknown_words("a stadium appears") == ["stadium"]
    assert tok.ids[0] == model.vocab.start and tok.ids[-1] == model.vocab.end


def test_decode_round_trip(small):
    model, _, _ = small
    ids = model.tokenize("there is no change").ids
    assert model.vocab.decode(ids) == "there is no change"


def test_describe_pairs_is_one_consistent_pass(small):
    model, before, after = small
    result = model.describe_pairs(before, after)
    captions, emb = model.caption_and_embed(before, after)
    assert result.captions == captions
    assert torch.allclose(result.embeddings, emb, atol=1e-6)
    assert result.change_scores.shape == (len(before),)
    assert ((result.change_scores >= 0) & (result.change_scores <= 1)).all()
    assert result.changed == [not is_no_change(c) for c in captions]


def test_change_score_is_the_documented_formula(small):
    """1 - max over representable no-change sentences of the geometric-mean token probability."""
    model, before, after = small
    scores = model.describe_pairs(before, after).change_scores
    with torch.inference_mode():
        memory, _ = model.net.encoder(before, after)
        best = torch.zeros(len(before))
        for sentence in NO_CHANGE_SENTENCES:
            tok = model.tokenize(sentence)
            if tok.unknown:
                continue
            ids = torch.tensor([tok.ids] * len(before))
            logp = torch.log_softmax(model.net.decoder.logits(ids, memory)[:, :-1], -1)
            per_token = logp.gather(-1, ids[:, 1:, None])[..., 0]
            best = torch.maximum(best, per_token.mean(dim=1).exp())
    assert torch.allclose(scores, 1 - best, atol=1e-5)


def test_is_no_change():
    for sentence in NO_CHANGE_SENTENCES:
        assert is_no_change(sentence)
    assert is_no_change("The scene is the same as before ")
    assert not is_no_change("many buildings have been built")
    assert not is_no_change("a road changes into a parking lot")


def test_embed_text_limits_and_norms(small):
    model, _, _ = small
    long_text = " ".join(["buildings"] * 100)
    emb = model.embed_text(["many buildings", long_text, "zzz"])
    assert emb.shape == (3, model.embedding_dim)
    assert np.allclose(emb.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert model.embed_text([]).shape == (0, model.embedding_dim)


def test_mismatched_batches_are_refused(small):
    model, before, after = small
    with pytest.raises(ValueError, match="one shape"):
        model.caption(before, after[:2])


def test_describe_dates_runs_each_image_once_and_equals_describe_pairs(loaded, monkeypatch):
    """A time series of 3 dates: 2 intervals a tile, 3 backbone images a tile (not 4), and the very
    same captions, embeddings, scores and maps as describe_pairs on the two pairs."""
    _, model, before, after = loaded
    n = len(before)
    images = torch.cat([before, after, before.flip(0)])  # dates 0, 1, 2 of n tiles
    b_rows = np.r_[np.arange(n), n + np.arange(n)]  # interval 0 then interval 1
    a_rows = b_rows + n
    backbone = model.net.encoder.encoder
    seen = []
    real = backbone.forward
    monkeypatch.setattr(backbone, "forward", lambda x: seen.append(len(x)) or real(x))
    dates = model.describe_dates(images, b_rows, a_rows, attention=True)
    assert sum(seen) == 3 * n
    seen.clear()
    pairs = model.describe_pairs(images[b_rows], images[a_rows], attention=True)
    assert sum(seen) == 4 * n
    assert dates.captions == pairs.captions and dates.changed == pairs.changed
    for name in ("embeddings", "change_scores", "attention"):
        torch.testing.assert_close(getattr(dates, name), getattr(pairs, name), rtol=0, atol=0, msg=name)
