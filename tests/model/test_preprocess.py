"""Batched torch preprocessing against open_clip's own validation transform."""
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from rsicrc.model.preprocess import preprocess

# Stated tolerance, in 8-bit levels of the resized image (one level is 1/255/std ~ 0.015 after
# normalisation): the torch and PIL bicubic kernels round differently, so a value may land one
# level apart, a very few up to three; on average less than a quarter of a level.
LEVEL = 1 / 255 / min(0.26862954, 0.26130258, 0.27577711)
MAX_LEVELS = 3.01
MEAN_LEVELS = 0.25
MAX_FRACTION_OVER_ONE_LEVEL = 5e-4


@pytest.fixture(scope="module")
def reference_transform():
    return open_clip.image_transform(224, is_train=False)


@pytest.mark.parametrize("shape", [(256, 256), (224, 224), (300, 200), (177, 411), (512, 512)])
def test_matches_open_clip(reference_transform, shape):
    rng = np.random.default_rng(sum(shape))
    # Smooth content with noise, as imagery: a pure-noise image exaggerates kernel differences.
    h, w = shape
    base = rng.integers(0, 256, (3, h // 16 + 2, w // 16 + 2)).astype(np.float32)
    smooth = torch.nn.functional.interpolate(torch.from_numpy(base)[None], size=(h, w), mode="bilinear")[0]
    img = (smooth.numpy() + rng.normal(0, 12, (3, h, w))).clip(0, 255).astype(np.uint8)
    ours = preprocess(img[None])[0]
    ref = reference_transform(Image.fromarray(img.transpose(1, 2, 0)))
    assert ours.shape == ref.shape == (3, 224, 224)
    levels = (ours - ref).abs() / LEVEL
    assert levels.max().item() < MAX_LEVELS
    assert levels.mean().item() < MEAN_LEVELS
    assert (levels > 1.5).float().mean().item() < MAX_FRACTION_OVER_ONE_LEVEL


def test_exact_when_no_resize_is_needed(reference_transform):
    img = np.random.default_rng(0).integers(0, 256, (3, 224, 224), dtype=np.uint8)
    ref = reference_transform(Image.fromarray(img.transpose(1, 2, 0)))
    assert torch.allclose(preprocess(img[None])[0], ref, atol=1e-6)


def test_batch_equals_one_at_a_time():
    imgs = np.random.default_rng(1).integers(0, 256, (3, 3, 256, 256), dtype=np.uint8)
    batch = preprocess(imgs)
    for i in range(3):
        assert torch.equal(batch[i], preprocess(imgs[i:i + 1])[0])


@pytest.mark.parametrize("bad,match", [
    (np.zeros((1, 3, 32, 32), dtype=np.float32), "uint8"),
    (np.zeros((1, 4, 32, 32), dtype=np.uint8), r"\(N, 3, H, W\)"),
    (np.zeros((1, 32, 32), dtype=np.uint8), r"\(N, 3, H, W\)"),
    ([[1, 2, 3]], "numpy array or a torch tensor"),
])
def test_rejects_bad_images(bad, match):
    with pytest.raises(ValueError, match=match):
        preprocess(bad)
