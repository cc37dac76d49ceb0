"""RS-M-CLIP per-tile fields (embeddings, zero-shot land-cover classes) and text scoring.

Embeddings are stored as BLOBs of float32 little-endian, L2-normalised, like the RSICRC embedding.
The scoring formula lives in `score_embeddings`, a pure numpy function, so that the QGIS side can
reproduce it without torch.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ..layer.gpkg import blobs_to_matrix  # noqa: F401 - the layer's one BLOB decoding, part of this API
from ..layer.gpkg import embedding_blob as embedding_to_blob  # the layer's one BLOB encoding

if TYPE_CHECKING:  # torch is imported only by the encoder itself
    from ...model.clip import ClipEncoder

# Land-cover classes that the LEVIR-CC kind of scenes (towns, suburbs, farmland) are made of.
DEFAULT_CLASSES = ["buildings", "road", "parking lot", "construction site", "forest", "grassland",
                   "farmland", "bare land", "water"]
# Each class is embedded as the normalised mean of these prompts. The bare name keeps classes in
# languages other than English meaningful; the sentence is CLIP's usual zero-shot framing.
PROMPT_TEMPLATES = ("a satellite image of {}.", "{}")
CLIP_BLOB_FIELDS = ("clip_before", "clip_after")
CLASS_FIELDS = [("before_class", "text"), ("after_class", "text"), ("class_changed", "bool"),
                ("before_class_prob", "real"), ("after_class_prob", "real")]
WHEN_CHOICES = ("after", "before")
_CLASS_SEPARATORS = re.compile(r"[,，、;；\n]")


class ClipFieldsMissingError(ValueError):
    """A layer lacks the RS-M-CLIP embedding fields that a --clip search needs."""


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


def require_clip_fields(field_names: Iterable[str], layer: str) -> None:
    """Raise ClipFieldsMissingError (a clear message) unless the layer holds clip_before/clip_after."""
    missing = [f for f in CLIP_BLOB_FIELDS if f not in set(field_names)]
    if missing:
        raise ClipFieldsMissingError(
            f"{layer} has no RS-M-CLIP embeddings (missing field(s) {', '.join(missing)}): it was "
            f"captioned without --clip. Search it without --clip, or caption again with "
            f"`rsicrc caption BEFORE AFTER OUTPUT --clip` to add them.")


def classify_embeddings(image_emb: np.ndarray, class_emb: np.ndarray,
                        logit_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero-shot: softmax(logit_scale * cos(image, class)) over classes -> (argmax index, its prob)."""
    logits = logit_scale * (np.asarray(image_emb, np.float64) @ np.asarray(class_emb, np.float64).T)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    idx = probs.argmax(axis=1)
    return idx, probs[np.arange(len(idx)), idx]


def score_embeddings(text_emb, before_emb, after_emb, when: str = "after",
                     change: bool = False) -> np.ndarray:
    """Score tiles against one L2-normalised text embedding t (pure numpy).

    With b_i, a_i the tile's BEFORE and AFTER image embeddings (L2-normalised, so dot = cosine):
      when="after"  (default): s_i = a_i . t                 in [-1, 1]
      when="before":           s_i = b_i . t                 in [-1, 1]
      change=True:             s_i = a_i . t - b_i . t       in [-2, 2]
    The change score is the rise of the text's similarity from BEFORE to AFTER: high for what
    appeared ("new buildings"), negative for what disappeared; `when` is then ignored. Higher is a
    better match. Tiles without an embedding (NaN rows) score NaN. The array not needed may be None.
    """
    if when not in WHEN_CHOICES:
        raise ValueError(f"when must be one of {WHEN_CHOICES}, got {when!r}")
    t = np.asarray(text_emb, dtype=np.float32).reshape(-1)

    def sims(emb, name):
        if emb is None:
            raise ValueError(f"{name} embeddings are needed for this score")
        m = np.asarray(emb, dtype=np.float32)
        if m.ndim != 2 or m.shape[1] != t.size:
            raise ValueError(f"{name} embeddings have shape {m.shape}, expected (N, {t.size}): the "
                             f"layer was made with a different CLIP model")
        return m @ t

    if change:
        after, before = sims(after_emb, "AFTER"), sims(before_emb, "BEFORE")
        if after.shape != before.shape:
            raise ValueError(f"{before.shape[0]} BEFORE but {after.shape[0]} AFTER embeddings")
        return after - before
    return sims(after_emb, "AFTER") if when == "after" else sims(before_emb, "BEFORE")


def clip_scores(clip: "ClipEncoder", text: str, before_emb, after_emb, when: str = "after",
                change: bool = False) -> np.ndarray:
    """Embed `text` (any RS-M-CLIP language) and score the tiles; see score_embeddings."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the search text is empty")
    if when not in WHEN_CHOICES:
        raise ValueError(f"when must be one of {WHEN_CHOICES}, got {when!r}")
    t = clip.encode_text([text.strip()]).numpy()[0]
    return score_embeddings(t, before_emb, after_emb, when=when, change=change)


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
        rows = [{"clip_before": embedding_to_blob(b), "clip_after": embedding_to_blob(a)}
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
