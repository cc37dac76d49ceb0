"""RS-M-CLIP per-tile fields of `rsicrc caption --clip`: both dates' image embeddings and zero-shot
land-cover classes.

Embeddings are stored as BLOBs of float32 little-endian, L2-normalised, like the RSICRC embedding.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import BadInput
from ..layer.blobs import embedding_blob
from ..layer.schema import CLASS_FIELDS, CLIP_BLOB_FIELDS
from ..models import load_clip_encoder

if TYPE_CHECKING:  # torch is imported only by the encoder itself
    from ...model.clip import ClipEncoder

# Land-cover classes that the LEVIR-CC kind of scenes (towns, suburbs, farmland) are made of.
DEFAULT_CLASSES = ["buildings", "road", "parking lot", "construction site", "forest", "grassland",
                   "farmland", "bare land", "water"]
# Each class is embedded as the normalised mean of these prompts. The bare name keeps classes in
# languages other than English meaningful; the sentence is CLIP's usual zero-shot framing.
PROMPT_TEMPLATES = ("a satellite image of {}.", "{}")
_CLASS_SEPARATORS = re.compile(r"[,，、;；\n]")


def parse_classes(text: str | None) -> list[str]:
    """"forest, water ,buildings" -> ["forest", "water", "buildings"]; None -> DEFAULT_CLASSES.

    Commas (also the Chinese "，" and "、") and semicolons separate classes; repeats (ignoring case)
    are dropped. Fewer than two classes is an error: a softmax over one class is always 1.
    """
    if text is None:
        return list(DEFAULT_CLASSES)
    classes, seen = [], set()
    for part in _CLASS_SEPARATORS.split(text):
        name = " ".join(part.split())
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            classes.append(name)
    if len(classes) < 2:
        raise ValueError(f"--classes {text!r} names {len(classes)} class(es): give at least two, "
                         f"separated by commas (e.g. \"forest, water, buildings\")")
    return classes


def parsed_classes(p):
    """A run's --classes (CaptionParams) as a list of names with --clip, None without; BadInput
    when they cannot be used."""
    if not p.clip:
        return None
    try:
        return parse_classes(p.classes)
    except ValueError as e:
        raise BadInput(str(e)) from None


def load_clip_annotator(source, classes, device):
    """The RS-M-CLIP model of `source` loaded on `device`, ready to annotate tiles with `classes`."""
    return ClipTileAnnotator(load_clip_encoder(source, device), classes)


def classify_embeddings(image_emb: np.ndarray, class_emb: np.ndarray,
                        logit_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero-shot: softmax(logit_scale * cos(image, class)) over classes -> (argmax index, its prob)."""
    logits = logit_scale * (np.asarray(image_emb, np.float64) @ np.asarray(class_emb, np.float64).T)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    idx = probs.argmax(axis=1)
    return idx, probs[np.arange(len(idx)), idx]


class ClipTileAnnotator:
    """Per-tile RS-M-CLIP fields for `rsicrc caption --clip [--classes ...]`."""

    def __init__(self, clip: "ClipEncoder", classes: list[str] | None,
                 templates: Sequence[str] = PROMPT_TEMPLATES):
        self.clip = clip
        self.classes = list(classes) if classes else None
        self.templates = tuple(templates)
        self.fields: list[tuple[str, str]] = [(name, "blob") for name in CLIP_BLOB_FIELDS]
        self.class_emb = None
        if self.classes:
            if len(self.classes) < 2:
                raise ValueError("zero-shot classes need at least two names")
            self.class_emb = self._embed_classes()
            self.fields += CLASS_FIELDS

    def _embed_classes(self) -> np.ndarray:
        per_template = [self.clip.encode_text([t.format(c) for c in self.classes]).numpy()
                        for t in self.templates]
        mean = np.mean(per_template, axis=0)
        return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)

    def embed(self, before_uint8, after_uint8) -> tuple[np.ndarray, np.ndarray]:
        """(BEFORE, AFTER) uint8 RGB (N,3,H,W) -> two (N,d) float32 embedding arrays."""
        before, after = np.asarray(before_uint8), np.asarray(after_uint8)
        if before.shape[0] != after.shape[0]:
            raise ValueError(f"{before.shape[0]} BEFORE tiles but {after.shape[0]} AFTER tiles")
        if before.shape == after.shape:  # one pass of the image tower for both dates
            both = self.clip.encode_images(np.concatenate([before, after])).numpy()
            return both[:len(before)], both[len(before):]
        return self.clip.encode_images(before).numpy(), self.clip.encode_images(after).numpy()

    def annotate(self, before_uint8, after_uint8) -> list[dict]:
        """One dict per tile: clip_before, clip_after (BLOBs) and, with classes, the class fields."""
        emb_b, emb_a = self.embed(before_uint8, after_uint8)
        rows = [{"clip_before": embedding_blob(b), "clip_after": embedding_blob(a)}
                for b, a in zip(emb_b, emb_a)]
        if self.class_emb is not None:
            scale = self.clip.logit_scale
            ib, pb = classify_embeddings(emb_b, self.class_emb, scale)
            ia, pa = classify_embeddings(emb_a, self.class_emb, scale)
            for row, i, p, j, q in zip(rows, ib, pb, ia, pa):
                row.update(before_class=self.classes[i], after_class=self.classes[j],
                           class_changed=bool(i != j), before_class_prob=float(p),
                           after_class_prob=float(q))
        return rows

    def metadata(self) -> dict:
        """Values for rsicrc_metadata (JSON-serialisable)."""
        return {"clip_model_source": self.clip.source, "clip_model_sha256": self.clip.sha256,
                "clip_embedding_dim": self.clip.embedding_dim, "classes": self.classes,
                "class_prompt_templates": list(self.templates) if self.classes else None}
