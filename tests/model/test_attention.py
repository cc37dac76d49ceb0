"""Where the decoder looked: PairResult.attention, its step convention and its orientation."""
import numpy as np
import pytest
import torch

from parity_recipe import load_case, pair_inputs
from rsicrc.model import load_model

EMBEDDING_TOLERANCE = 1e-4


def _check_parity(case, result, rows):
    expected = case["expected"]
    assert result.captions == [expected["captions"][i] for i in rows]
    want = np.asarray(expected["pair_embeddings"], dtype=np.float32)[rows]
    assert np.abs(result.embeddings.numpy() - want).max() < EMBEDDING_TOLERANCE


def test_attention_changes_no_output(loaded):
    """Batched and one at a time, with and without attention: the official captions and embeddings."""
    case, model, before, after = loaded
    n = len(before)
    plain = model.describe_pairs(before, after)
    assert plain.attention is None
    _check_parity(case, plain, list(range(n)))
    with_maps = model.describe_pairs(before, after, attention=True)
    _check_parity(case, with_maps, list(range(n)))
    assert torch.equal(with_maps.change_scores, plain.change_scores)
    for i in range(n):
        one = model.describe_pairs(before[i:i + 1], after[i:i + 1])
        assert one.attention is None
        _check_parity(case, one, [i])
        one_map = model.describe_pairs(before[i:i + 1], after[i:i + 1], attention=True)
        _check_parity(case, one_map, [i])
        # A pair's map does not depend on the pairs decoded beside it (rows leave at END), within
        # the parity tolerance: the ViT backbone's batched products round differently from one
        # pair's (up to 2.2e-5 on an Intel Xeon with AMX, 0 for RN50).
        assert torch.allclose(one_map.attention[0], with_maps.attention[i], atol=EMBEDDING_TOLERANCE)


def test_greedy_tokens_identical_with_attention(loaded):
    case, model, before, after = loaded
    memory, _ = model.net.encoder(before, after)
    with torch.inference_mode():
        ids, weights = model.net.decoder.greedy(memory, model.vocab.start, model.vocab.end,
                                                attention=True)
    assert ids == case["expected"]["token_ids"]
    assert weights.dtype == torch.float32 and weights.shape == memory.shape[:2]


def test_maps_are_distributions_on_the_grid(loaded):
    _, model, before, after = loaded
    maps = model.describe_pairs(before, after, attention=True).attention
    side = model.cfg.backbone_spec["grid"]
    assert maps.shape == (len(before), side, side) and maps.dtype == torch.float32
    assert maps.device.type == "cpu"
    assert (maps >= 0).all()
    assert torch.allclose(maps.sum(dim=(1, 2)), torch.ones(len(before)), atol=1e-5)


def _official_cross_weights(decoder, ids, memory):
    """The official full-prefix pass (src/model.py DecoderLayer) run through torch's own
    MultiheadAttention modules: the last cross block's need_weights=True output (1, L, M)."""
    length = ids.shape[1]
    mask = ~torch.tril(torch.ones(length, length)).bool()
    x = decoder.embed(ids)

    def block(layer, x):
        def sa(h):
            return layer.self_attn(h, h, h, attn_mask=mask, need_weights=False)[0]

        def ff(h):
            return layer.ff_linear2(torch.nn.functional.gelu(layer.ff_linear1(h)))

        weights = None
        if layer.prenorm:
            x = x + sa(layer.sa_norm(x))
            if layer.cross_attn is not None:
                out, weights = layer.cross_attn(layer.mha_norm(x), memory, memory, need_weights=True)
                x = x + out
            x = x + ff(layer.ff_norm(x))
        else:
            x = layer.sa_norm(x + sa(x))
            if layer.cross_attn is not None:
                out, weights = layer.cross_attn(x, memory, memory, need_weights=True)
                x = layer.mha_norm(x + out)
            x = layer.ff_norm(x + ff(x))
        return x, weights

    for layer in decoder.uni_decoder:
        x, _ = block(layer, x)
    for layer in decoder.cross_decoder:
        x, weights = block(layer, x)
    return weights


def test_map_is_the_official_plot_average(loaded):
    """eval.py plot(): the weights of the last decoding call, whose input is every token but the
    last one emitted, averaged over its queries; our map is that, back on the image grid."""
    case, model, before, after = loaded
    maps = model.describe_pairs(before, after, attention=True).attention
    with torch.inference_mode():
        memory, _ = model.net.encoder(before, after)
        for i, tokens in enumerate(case["expected"]["token_ids"]):
            prefix = torch.tensor([tokens[:-1]])
            official = _official_cross_weights(model.net.decoder, prefix, memory[i:i + 1])
            assert official.shape[1] == len(tokens) - 1  # one query per emitted token, END's too
            mean = official[0].mean(dim=0)
            side = model.cfg.backbone_spec["grid"]
            # The official plot reshapes this (h*w,) vector to (side, side): the transposed map.
            assert torch.allclose(maps[i].T, mean.reshape(side, side), atol=1e-5)


@pytest.fixture(scope="module")
def positionwise(small_checkpoint):
    """rn50-small made position-wise after the backbone: the attentive blocks see keys and values
    of zero (v = to_k(x)), the fusion's 3x3 conv has zero weights. Every later layer then acts on
    each grid cell alone, so a visual token carries exactly one cell of the backbone map."""
    model = load_model(str(small_checkpoint), device="cpu")
    with torch.no_grad():
        for single, joint in model.net.encoder.encoder_trans.selftrans:
            single.att.to_k.weight.zero_()
            joint.att.to_k.weight.zero_()
        model.net.encoder.LN.left[3].weight.zero_()
    case = load_case("rn50-small")
    before, after = (torch.from_numpy(x) for x in pair_inputs(case))
    return model, before[:1], after[:1]


def _memory_with(model, before, after, cell=None):
    """Visual tokens, the AFTER backbone map changed at one (row, col) cell when given."""
    def bump(_module, _inputs, feats):
        feats = feats.clone()
        feats[1:, :, cell[0], cell[1]] += 5.0
        return feats

    hook = model.net.encoder.encoder.register_forward_hook(bump) if cell else None
    try:
        with torch.inference_mode():
            return model.net.encoder(before, after)[0][0]
    finally:
        if hook:
            hook.remove()


@pytest.mark.parametrize("cell", [(1, 5), (6, 0), (3, 2)])
def test_map_cell_is_the_backbone_cell(positionwise, cell):
    """The token that a change of backbone cell (row r, col c) reaches is shown at map (r, c)."""
    model, before, after = positionwise
    plain = _memory_with(model, before, after)
    bumped = _memory_with(model, before, after, cell)
    moved = (bumped - plain).norm(dim=-1) > 1e-4
    assert moved.sum() == 1
    shown = model._attention_maps(moved.float().unsqueeze(0))[0]
    assert shown[cell] == 1 and shown.sum() == 1
    # And the map of a decoding is indexed the same way: its (r, c) value is that token's weight.
    result = model.describe_pairs(before, after, attention=True)
    with torch.inference_mode():
        memory, _ = model.net.encoder(before, after)
        _, weights = model.net.decoder.greedy(memory, model.vocab.start, model.vocab.end,
                                              attention=True)
    assert torch.isclose(result.attention[0][cell], weights[0][moved.nonzero()[0, 0]])


def test_map_follows_a_changed_image_corner(positionwise):
    """A change in the image's top-right corner moves the visual tokens most in the map's top-right
    (the convolutional backbone keeps rows and columns; the transposed reading would put it at
    the bottom-left)."""
    model, before, after = positionwise
    changed = after.clone()
    changed[:, :, :64, 160:] += 3.0
    with torch.inference_mode():
        plain = model.net.encoder(before, after)[0][0]
        moved = model.net.encoder(before, changed)[0][0]
    shift = model._attention_maps((moved - plain).norm(dim=-1).unsqueeze(0))[0]
    row, col = divmod(int(shift.argmax()), shift.shape[1])
    assert row <= 1 and col >= 5
