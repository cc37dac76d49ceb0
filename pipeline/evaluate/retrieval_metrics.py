"""Text-to-pair retrieval figures as the official RSICRC `search()` (src/eval.py) computes them.

Every pair of the run is in the gallery (an exact inner-product index of the L2-normalised pair
embeddings) and, when its query could be formed, asks one query: its first sentence as the text
side. The pairs relevant to query i are every pair x (i itself included, so it counts when it is
retrieved) with the same flag, or whose first sentence is related to i's (`related[i, x]`). For
each k in AT_K, over the top k pairs:
    P@k   = relevant retrieved / k  (faiss pads a gallery smaller than k with -1, and the official
                                      code divides by the padded length)
    R@k   = relevant retrieved / number of relevant pairs
    MRR@k = 1 / rank of the first relevant pair retrieved, 0 when none is
each averaged over the queries. Equal scores rank in gallery order.
"""
import numpy as np

AT_K = (1, 3, 5, 10)


def metric_names():
    return [f"{m}@{k}" for k in AT_K for m in ("P", "R", "MRR")]


def rank(gallery, queries, depth, chunk=1024):
    """Gallery rows of the `depth` best inner products for each query, best first (Q, min(depth, N))."""
    gallery = np.asarray(gallery, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    parts = [np.zeros((0, min(depth, len(gallery))), dtype=np.int64)]
    for start in range(0, len(queries), chunk):  # a chunk of queries at a time: memory stays bounded
        scores = queries[start:start + chunk] @ gallery.T
        parts.append(np.argsort(-scores, axis=1, kind="stable")[:, :depth])
    return np.concatenate(parts)


def search_scores(gallery, queries, query_rows, flags, related):
    """Retrieval figures {"P@1", "R@1", "MRR@1", ...} or None when there is no query.

    gallery: (N, d) L2-normalised pair embeddings; queries: (Q, d) text embeddings of the
    pairs `query_rows` (Q gallery rows); flags: N labels; related: (N, N) bool, first sentences
    that the similarity rule relates.
    """
    query_rows = list(query_rows)
    if not query_rows:
        return None
    flags = np.asarray(flags)
    related = np.asarray(related, dtype=bool)
    top = rank(gallery, queries, max(AT_K))
    sums = {name: 0.0 for name in metric_names()}
    for q, row in enumerate(query_rows):
        relevant = (flags == flags[row]) | related[row]
        hits = relevant[top[q]]
        for k in AT_K:
            found = hits[:k]
            first = np.flatnonzero(found)
            sums[f"P@{k}"] += found.sum() / k
            sums[f"R@{k}"] += found.sum() / relevant.sum()
            sums[f"MRR@{k}"] += 1.0 / (first[0] + 1) if first.size else 0.0
    return {name: float(total / len(query_rows)) for name, total in sums.items()}


def related_by_text(texts):
    """(N, N) bool: the texts are identical once stripped (what the official code embeds)."""
    keys = np.array([t.strip() for t in texts], dtype=object)
    return keys[:, None] == keys[None, :]


def related_by_similarity(embeddings, threshold):
    """(N, N) bool: sentence-embedding inner product reaches the threshold (float32, as torch)."""
    emb = np.asarray(embeddings, dtype=np.float32)
    return (emb @ emb.T) >= np.float32(threshold)


# The released config.json's sentence-similarity settings, for a model whose config names none.
RELEASED_S_TRANSFORMERS = "sentence-transformers/msmarco-distilbert-cos-v5"
RELEASED_S_THRESHOLD = 1.0


def relatedness(sentence_lists, config, device="cpu"):
    """(N, N) bool relation between the pairs' first sentences, and a description of the rule.

    The official rule: sentence-transformers embeddings of the stripped `raw` sentences (each
    pair's sentences encoded together, its first one kept), related when their inner product
    reaches the config's s-threshold. Used when sentence-transformers is importable and the model
    is in the local cache (nothing is downloaded); otherwise identical stripped text stands in.
    """
    name = config.get("s-transformers") or RELEASED_S_TRANSFORMERS
    threshold = float(config.get("s-threshold", RELEASED_S_THRESHOLD))
    origin = "the model's config" if "s-transformers" in config else "the released config (this model's names none)"
    rule = {"s_transformers": name, "s_threshold": threshold, "settings_from": origin}
    model, why = _sentence_model(name, device)
    if model is not None:
        firsts = [model.encode([s.strip() for s in sentences])[0] for sentences in sentence_lists]
        return related_by_similarity(np.stack(firsts), threshold), {
            **rule, "relevance": "sentence_embeddings",
            "rule": f"same change flag, or first sentences whose {name} embeddings have an inner "
                    f"product >= {threshold:g} (the official rule)"}
    return related_by_text([sentences[0] for sentences in sentence_lists]), {
        **rule, "relevance": "identical_text", "why": why,
        "rule": f"same change flag, or identical first sentences (stripped raw text), standing in for "
                f"the official {name} similarity >= {threshold:g}"}


def _sentence_model(name, device):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None, "sentence-transformers is not installed"
    try:
        return SentenceTransformer(name, device=str(device), local_files_only=True), None
    except Exception as exc:  # not cached, an old version without local_files_only, a broken file
        first = str(exc).splitlines()[0] if str(exc) else ""
        return None, f"{name} could not be loaded from the local cache ({type(exc).__name__}: {first[:200]})"
