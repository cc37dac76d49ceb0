"""Text scores of a layer's tiles from their stored embeddings, and the best of them.

numpy only (torch is a type hint here), so that `rsicrc search` and the QGIS side score and rank
with this very code: `score_embeddings` is the RS-M-CLIP formula, `top_indices` the ranking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from .layer.schema import CLIP_BLOB_FIELDS

if TYPE_CHECKING:  # torch is imported only by the encoder itself
    from ..model.clip import ClipEncoder

WHEN_CHOICES = ("after", "before")


class ClipFieldsMissingError(ValueError):
    """A layer lacks the RS-M-CLIP embedding fields that a --clip search needs."""


def require_clip_fields(field_names: Iterable[str], layer: str) -> None:
    """Raise ClipFieldsMissingError (a clear message) unless the layer holds clip_before/clip_after."""
    missing = [f for f in CLIP_BLOB_FIELDS if f not in set(field_names)]
    if missing:
        raise ClipFieldsMissingError(
            f"{layer} has no RS-M-CLIP embeddings (missing field(s) {', '.join(missing)}): it was "
            f"captioned without --clip. Search it without --clip, or caption again with "
            f"`rsicrc caption BEFORE AFTER OUTPUT --clip` to add them.")


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


def top_indices(scores, k):
    """Indices of the k best finite scores, best first (ties keep the input order); a tile without
    a score (NaN) is never among them."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.argsort(-scores[finite], kind="stable")]
    return order[: max(0, int(k))]
