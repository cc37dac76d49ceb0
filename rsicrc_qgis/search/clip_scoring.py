"""RS-M-CLIP tile scores from stored embeddings: the pipeline's own pure-numpy formula.

rsicrc.pipeline.scores imports only numpy at module level (the encoder is a type hint),
so the plugin uses the very function `rsicrc search --clip` uses instead of a copy of it.
"""
from ...pipeline.scores import WHEN_CHOICES, score_embeddings

__all__ = ["WHEN_CHOICES", "clip_scores_from_embeddings"]


def clip_scores_from_embeddings(text_emb, before_emb, after_emb, when="after", change=False):
    try:
        return score_embeddings(text_emb, before_emb, after_emb, when=when, change=change)
    except ValueError as exc:
        from .layer_search import SearchProblem

        raise SearchProblem(str(exc)) from None
