"""The image backbone's features of a split, computed once and kept on disk.

With the backbone frozen (the default) its output for an image never changes, yet the official
loop recomputes it for each of an image's five captions in every epoch. Here it is computed
once per image, in eval mode, into a memory-mapped .npy file beside the training state; each
batch then reads only its rows, so memory stays bounded by the batch. Row 2i holds pair i's
BEFORE image, row 2i + 1 its AFTER. A `.done` file marks the rows written, so an interrupted
fill goes on where it stopped.
"""
import os

import numpy as np
import torch

from ..evaluate.levir_cc import read_pair

FILL_BATCH = 8  # pairs a backbone call


class FeatureCache:
    def __init__(self, folder, name, rows, shape):
        self.path = os.path.join(folder, f"{name}.features.npy")
        self.done_path = os.path.join(folder, f"{name}.done.npy")
        if os.path.isfile(self.path) and os.path.isfile(self.done_path):
            self.features = np.load(self.path, mmap_mode="r+")
            self.done = np.load(self.done_path, mmap_mode="r+")
            if self.features.shape != (rows, *shape) or self.done.shape != (rows,):
                raise ValueError(f"{self.path} holds features of another shape; remove the folder {folder}")
        else:
            self.features = np.lib.format.open_memmap(self.path, "w+", np.float32, (rows, *shape))
            self.done = np.lib.format.open_memmap(self.done_path, "w+", np.bool_, (rows,))

    def fill(self, cap, pairs, on_batch=None):
        """Compute every missing row with cap's backbone; on_batch(pairs done) after each call."""
        image_encoder = cap.net.encoder.encoder
        missing = [i for i in range(len(pairs)) if not (self.done[2 * i] and self.done[2 * i + 1])]
        for start in range(0, len(missing), FILL_BATCH):
            chunk = missing[start:start + FILL_BATCH]
            images = [img for i in chunk for img in read_pair(pairs[i])]
            with torch.inference_mode():
                batch = cap.preprocess(torch.from_numpy(np.stack(images))).to(cap.dtype)
                feats = image_encoder.trunk_features(batch).float().cpu().numpy()
            rows = np.array([r for i in chunk for r in (2 * i, 2 * i + 1)])
            self.features[rows] = feats
            self.features.flush()
            self.done[rows] = True
            self.done.flush()
            if on_batch:
                on_batch(len(pairs) - len(missing) + start + len(chunk))

    def pairs(self, indices, device):
        """(BEFORE, AFTER) backbone features (B, C, h, w) of the pairs `indices`, float32 on `device`."""
        indices = np.asarray(indices)
        before = torch.from_numpy(np.ascontiguousarray(self.features[2 * indices]))
        after = torch.from_numpy(np.ascontiguousarray(self.features[2 * indices + 1]))
        return before.to(device), after.to(device)
