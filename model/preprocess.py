"""Batched image preprocessing equal to open_clip's validation transform, in torch.

open_clip resizes a PIL image (short side to 224, bicubic with antialiasing, long side
truncated as torchvision does), center-crops 224, scales to [0, 1] and normalises with the
CLIP mean and std. Here the same steps run on a whole uint8 batch at once on the model's
device; the resized values are rounded to whole levels as PIL's 8-bit resize does. The
remaining difference is the interpolation kernel's arithmetic (tests/model/test_preprocess.py
measures it against open_clip itself).
"""
import numpy as np
import torch
import torch.nn.functional as F

from .config import IMAGE_SIZE

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resized_size(h, w, size=IMAGE_SIZE):
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def center_crop_offsets(h, w, size=IMAGE_SIZE):
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def as_uint8_batch(images):
    """Validate and return a uint8 tensor (N, 3, H, W)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 RGB, got dtype {images.dtype}")
        images = torch.from_numpy(np.ascontiguousarray(images))
    elif not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a numpy array or a torch tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 RGB, got dtype {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if min(images.shape[-2:]) < 1:
        raise ValueError(f"images must not be empty, got shape {tuple(images.shape)}")
    return images


def preprocess(images, device=None, size=IMAGE_SIZE):
    x = as_uint8_batch(images)
    if device is not None:
        if torch.device(device).type == "cuda" and x.device.type == "cpu":
            # from page-locked memory the copy runs asynchronously (torch keeps the buffer until it is done)
            x = x.pin_memory()
        x = x.to(device, non_blocking=True)
    x = x.float()
    h, w = x.shape[-2:]
    new_h, new_w = resized_size(h, w, size)
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
        x = x.round_().clamp_(0, 255)
    top, left = center_crop_offsets(new_h, new_w, size)
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1) * 255.0
    return ((x - mean) / std).contiguous()
