"""Text-to-tile scores from stored embeddings (numpy only, same formulas as the pipeline)."""
import numpy as np


def _unit_rows(matrix):
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def cosine_scores(text_embedding, tile_embeddings):
    """Cosine similarity of one text embedding with each tile's pair embedding, shape (N,)."""
    q = _unit_rows(np.asarray(text_embedding, dtype=np.float32).reshape(1, -1))[0]
    tiles = _unit_rows(tile_embeddings)
    if tiles.shape[-1] != q.shape[0]:
        raise ValueError(f"text embedding has {q.shape[0]} dimensions but the layer's embeddings "
                         f"have {tiles.shape[-1]}: the layer was made with another model")
    return tiles @ q


def top_indices(scores, k):
    """Indices of the k best finite scores, best first (ties keep the input order)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.argsort(-scores[finite], kind="stable")]
    return order[: max(0, int(k))]
