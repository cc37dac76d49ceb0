"""The change score's shared-prefix pass equals plain teacher forcing of each sentence alone."""
import json

import pytest
import torch

from parity_recipe import load_case, pair_inputs
from rsicrc.model import load_model
from rsicrc.model.change_score import NO_CHANGE_SENTENCES, NoChangeScorer, sentence_token_ids
from rsicrc.model.vocab import SPECIALS

TOLERANCE = 1e-5


def all_sentences_folder(source, out):
    """A copy of a checkpoint folder whose vocabulary holds every "no change" sentence: unused
    words (ids >= 4) are renamed to the missing ones; weights and vocabulary size stay."""
    out.mkdir()
    for name in ("config.json", "pytorch_model.bin"):
        (out / name).symlink_to(source / name)
    vocab = json.loads((source / "levir_vocab.json").read_text())
    needed = list(dict.fromkeys(w for s in NO_CHANGE_SENTENCES for w in s.split()))
    missing = [w for w in needed if w not in vocab]
    spare = [w for w, i in sorted(vocab.items(), key=lambda kv: kv[1])
             if i >= len(SPECIALS) and w not in needed][:len(missing)]
    assert len(spare) == len(missing)
    for old, new in zip(spare, missing):
        vocab[new] = vocab.pop(old)
    (out / "levir_vocab.json").write_text(json.dumps(vocab))
    return out


@pytest.fixture(scope="module", params=[("rn50-small", False), ("rn50-small", True),
                                        ("rn50-flags", False), ("rn50-flags", True)],
                ids=lambda p: f"{p[0]}-{'all7' if p[1] else 'parity-vocab'}")
def scored(request, checkpoint_factory, tmp_path_factory):
    """(model, sentences, memory) for a parity checkpoint, with its own or an all-seven vocabulary."""
    name, all_seven = request.param
    folder = checkpoint_factory(name)
    if all_seven:
        folder = all_sentences_folder(folder, tmp_path_factory.mktemp(name) / "all7")
    model = load_model(str(folder), device="cpu")
    sentences = sentence_token_ids(model.vocab)
    assert len(sentences) == (len(NO_CHANGE_SENTENCES) if all_seven else 1)
    before, after = (torch.from_numpy(x) for x in pair_inputs(load_case(name)))
    with torch.inference_mode():
        memory, _ = model.net.encoder(before, after)
    yield model, sentences, memory, (before, after)
    del model


def reference_mean_log_probs(decoder, memory, sentences):
    """Per pair and sentence: the plain full pass on that one unpadded sentence."""
    out = torch.empty(len(memory), len(sentences))
    with torch.inference_mode():
        for i in range(len(memory)):
            for j, s in enumerate(sentences):
                ids = torch.tensor([s])
                logp = torch.log_softmax(decoder.logits(ids, memory[i:i + 1])[0, :-1].float(), -1)
                out[i, j] = logp.gather(-1, ids[0, 1:, None]).mean()
    return out


def distinct_prefixes(sentences):
    return len({tuple(s[:t + 1]) for s in sentences for t in range(len(s) - 1)})


def test_scores_equal_plain_teacher_forcing(scored):
    model, sentences, memory, (before, after) = scored
    decoder = model.net.decoder
    want = reference_mean_log_probs(decoder, memory, sentences)
    scorer = NoChangeScorer(sentences, model.vocab.pad)
    got = scorer.mean_log_probs(decoder, decoder.cross_keys_values(memory))
    assert got.shape == (len(memory), len(sentences))
    assert torch.allclose(got, want, atol=TOLERANCE, rtol=0)
    want_scores = (1 - want.exp().max(dim=1).values).clamp(0, 1)
    result = model.describe_pairs(before, after)
    assert torch.allclose(result.change_scores, want_scores, atol=TOLERANCE, rtol=0)


def test_one_pair_at_a_time_equals_the_batch(scored):
    model, sentences, memory, _ = scored
    decoder = model.net.decoder
    scorer = NoChangeScorer(sentences, model.vocab.pad)
    batch = scorer.mean_log_probs(decoder, decoder.cross_keys_values(memory))
    single = torch.cat([scorer.mean_log_probs(decoder, decoder.cross_keys_values(memory[i:i + 1]))
                        for i in range(len(memory))])
    assert torch.allclose(single, batch, atol=TOLERANCE, rtol=0)


def test_each_distinct_prefix_is_computed_once_per_pair(scored):
    model, sentences, memory, _ = scored
    decoder = model.net.decoder
    rows = []
    hook = decoder.lm_head.register_forward_hook(
        lambda module, args, out: rows.append(args[0].shape[:-1].numel()))
    try:
        NoChangeScorer(sentences, model.vocab.pad)(decoder, decoder.cross_keys_values(memory))
    finally:
        hook.remove()
    assert rows == [len(memory) * distinct_prefixes(sentences)]
    if len(sentences) == len(NO_CHANGE_SENTENCES):
        # 38 scored tokens; START is shared 7 times, "there is no" twice, "the" twice.
        assert distinct_prefixes(sentences) == 28


def test_a_dtype_change_recomputes_the_text_side(checkpoint_factory, tmp_path):
    folder = all_sentences_folder(checkpoint_factory("rn50-small"), tmp_path / "all7")
    model = load_model(str(folder), device="cpu")
    before, after = (torch.from_numpy(x) for x in pair_inputs(load_case("rn50-small")))
    decoder = model.net.decoder
    with torch.inference_mode():
        memory, _ = model.net.encoder(before, after)
    scorer = NoChangeScorer(sentence_token_ids(model.vocab), model.vocab.pad)
    fp32 = scorer(decoder, decoder.cross_keys_values(memory))
    decoder.to(torch.bfloat16)
    bf16 = scorer(decoder, decoder.cross_keys_values(memory.to(torch.bfloat16)))
    assert bf16.dtype == torch.float32
    assert torch.allclose(bf16, fp32, atol=1e-2, rtol=0)
    decoder.to(torch.float32)  # the weights now hold bf16 values: compare with a fresh scorer
    kv = decoder.cross_keys_values(memory)
    fresh = NoChangeScorer(sentence_token_ids(model.vocab), model.vocab.pad)
    assert torch.equal(scorer(decoder, kv), fresh(decoder, kv))
