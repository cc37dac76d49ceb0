"""The network on a CUDA GPU: the official tokens in fp32 (computed as fp32, not TF32), bf16 and
fp16 close to fp32, the time-series path equal to the pairs path, the batch sized from free
memory, and a device that is not there refused in one line."""
import numpy as np
import pytest
import torch

from parity_params import PARITY_CASES
from parity_recipe import load_case, pair_inputs
from rsicrc.model import ModelLoadError, load_model
from rsicrc.model.preprocess import CLIP_STD

EMBEDDING_TOLERANCE = 1e-4  # the CPU parity tests' bound


@pytest.fixture(scope="module", params=PARITY_CASES)
def on_cuda(request, load_parity_case):
    case, model, before, after = load_parity_case(request.param, device="cuda")
    yield case, model, before, after
    del model
    torch.cuda.empty_cache()


def test_fp32_on_cuda_gives_the_official_tokens_and_embeddings(on_cuda):
    case, model, before, after = on_cuda
    assert model.device.type == "cuda" and model.precision == "fp32"
    assert model.generate(before, after) == case["expected"]["token_ids"]
    result = model.describe_pairs(before, after)
    assert result.captions == case["expected"]["captions"]
    expected = np.asarray(case["expected"]["pair_embeddings"], dtype=np.float32)
    assert np.abs(result.embeddings.numpy() - expected).max() < EMBEDDING_TOLERANCE
    text = np.asarray(case["expected"]["text_embeddings"], dtype=np.float32)
    assert np.abs(model.embed_text(case["texts"]).numpy() - text).max() < EMBEDDING_TOLERANCE


def test_fp32_on_cuda_convolves_without_tf32(on_cuda):
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        assert conv.fp32_precision == "ieee"
    else:
        assert not torch.backends.cudnn.allow_tf32


def test_time_series_path_equals_the_pairs_path(on_cuda):
    _, model, before, after = on_cuda
    images = torch.cat([before, after])
    n = len(before)
    pairs = model.describe_pairs(before, after)
    dates = model.describe_dates(images, list(range(n)), list(range(n, 2 * n)))
    assert dates.captions == pairs.captions
    assert torch.allclose(dates.embeddings, pairs.embeddings, atol=1e-5)
    assert torch.allclose(dates.change_scores, pairs.change_scores, atol=1e-5)


# bf16 only: fp16 keeps 5 exponent bits (at most 65504) and the generated weights' activations
# reach 2.5e10 (the fp32 run's largest, measured), so in fp16 they overflow to inf and NaN; that
# says nothing of the released weights, whose CLIP trunk runs in fp16 as OpenAI ships it.
@pytest.mark.parametrize("precision", ["bf16"])
def test_low_precision_on_cuda_stays_close_to_fp32(precision, small_checkpoint):
    case = load_case("rn50-small")
    before, after = (torch.from_numpy(x) for x in pair_inputs(case))
    ref = load_model(str(small_checkpoint), device="cuda").describe_pairs(before, after)
    low_model = load_model(str(small_checkpoint), device="cuda", dtype=precision)
    assert low_model.precision == precision
    low = low_model.describe_pairs(before, after, attention=True)
    cosine = (low.embeddings * ref.embeddings).sum(dim=1)
    print(f"{precision}: pair-embedding cosine to fp32 {cosine.min():.5f}..{cosine.max():.5f}")
    assert float(cosine.min()) > 0.98
    assert low.embeddings.dtype == torch.float32 and torch.isfinite(low.change_scores).all()
    assert low.attention.shape[0] == len(before) and torch.isfinite(low.attention).all()
    assert all(isinstance(c, str) for c in low.captions)


def test_preprocessing_on_cuda_is_the_cpu_preprocessing(small_checkpoint):
    model = load_model(str(small_checkpoint), device="cuda")
    tiles = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (4, 3, 256, 300), dtype=np.uint8))
    gpu, cpu = model.preprocess(tiles), load_model(str(small_checkpoint), device="cpu").preprocess(tiles)
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape == (4, 3, 224, 224)
    # Back to 8-bit levels: the resize rounds to whole levels, so an interpolation kernel's last
    # bit may move a value by one level, never more.
    scale = torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255.0
    levels = (gpu.cpu() - cpu).abs() / scale
    assert float(levels.max()) <= 1.0 + 1e-3
    assert float((levels > 0.5).float().mean()) < 0.01


def test_batch_from_free_memory_fits_it(small_checkpoint):
    model = load_model(str(small_checkpoint), device="cuda")
    batch = model.batch_for_free_memory(tile_size=256, most=256)
    assert batch == 256  # rn50-small needs a few MB a pair: far below a GPU's memory
    free, _ = torch.cuda.mem_get_info()
    tight = model.batch_for_free_memory(tile_size=256, most=4096, share=0.002)
    assert 1 <= tight < 4096 and tight & (tight - 1) == 0
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    tiles = torch.zeros((tight, 3, 256, 256), dtype=torch.uint8)
    model.describe_pairs(model.preprocess(tiles), model.preprocess(tiles))
    assert torch.cuda.max_memory_allocated() - base <= 0.002 * free * 1.25 or tight == 1
    assert load_model(str(small_checkpoint), device="cpu").batch_for_free_memory() is None


def test_a_gpu_that_is_not_there_is_one_line(small_checkpoint):
    count = torch.cuda.device_count()
    with pytest.raises(ModelLoadError, match=f"has {count} CUDA GPU") as err:
        load_model(str(small_checkpoint), device=f"cuda:{count}")
    assert "\n" not in str(err.value)
