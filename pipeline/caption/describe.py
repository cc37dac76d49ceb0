"""Describing a batch of tiles: the layer's row of every (tile, interval) pair the model captions.

`BatchDescriber.describe` is the one code that turns read tiles into a layer's values: the local
engine, the Ray workers, caption-batch and the map tool's point caption all call it, so a tile's
caption, change score, nodata rule (--max-nodata), query scores and RS-M-CLIP fields are the same
whichever face made them. Each date's images are preprocessed once, and one model call captions
every interval of the batch's tiles, so that the decoder's batch stays big.
"""
from dataclasses import dataclass, field

import numpy as np

from ..errors import PipelineFailure
from ..layer.blobs import embedding_blob
from ..layer.schema import (AREA_FRACTION_FIELD, ATTENTION_FIELD, CORE_FIELDS, EMBEDDING_FIELD, GEOMETRY_COLUMN,
                            SERIES_FIELDS, date_name, slug_field)
from ..layer.tile_rows import TileRows


@dataclass
class Queries:
    """The --query texts of a run: their score fields and text embeddings ((n, dim) float32)."""

    fields: list = field(default_factory=list)
    matrix: object = None

    def scores(self, embeddings):
        """{field: cosine score of each pair embedding}, float64."""
        if self.matrix is None:
            return {}
        values = embeddings @ self.matrix.T
        return {name: values[:, k].astype(np.float64) for k, name in enumerate(self.fields)}


def embed_queries(cap, texts, reporter):
    """The Queries of `texts` embedded by the captioner; unknown words are reported."""
    if not texts:
        return Queries()
    fields = []
    taken = [f for f, _ in CORE_FIELDS + SERIES_FIELDS] + [AREA_FRACTION_FIELD, EMBEDDING_FIELD, "fid", GEOMETRY_COLUMN]
    for q in texts:
        unknown = cap.unknown_words(q)
        if unknown:
            reporter.warning(f"query {q!r}: words outside the model's vocabulary: {', '.join(unknown)}")
        fields.append(slug_field(q, taken + fields))
    return Queries(fields, cap.embed_text(list(texts)).numpy().astype(np.float32))


@dataclass
class DescribedBatch(TileRows):
    """A batch's TileRows (a feature per captioned (tile, interval), tile by tile, then interval)
    and the model's own result for them."""

    result: object = None  # the model's PairResult; None when nothing was captioned


def _check_finite(result, cap):
    """A model whose numbers overflowed (fp16 keeps values below 65504) gives NaN embeddings and
    word salad: the run stops before writing them, the batches already written kept."""
    if np.isfinite(np.asarray(result.embeddings, dtype=np.float32)).all():
        return
    precision = getattr(cap, "precision", "fp32")
    hint = "use --precision bf16 (fp32's range) or fp32" if precision == "fp16" else "the model's weights may be damaged"
    raise PipelineFailure(f"the model's outputs are not finite numbers (overflow in {precision}); {hint}")


class BatchDescriber:
    """The models and the run's settings that describe every batch of a run the same way."""

    def __init__(self, cap, plan, max_nodata, queries=None, clip_annotator=None, attention=False):
        self.cap, self.plan, self.max_nodata = cap, plan, max_nodata
        self.queries = queries or Queries()
        self.clip_annotator = clip_annotator
        self.attention = attention
        self.names = [date_name(sp.path) for sp in plan.dates]

    def describe(self, batch, present=None):
        """The DescribedBatch of a TileBatch. `present`: sorted keys tile_id * intervals + interval
        of features already written, neither captioned nor skipped again."""
        which, intervals, skips = self._choose(batch, present)
        if which.size == 0:
            return DescribedBatch({}, np.zeros((0, 4)), skips, len(batch.tiles))
        images, before_rows, after_rows = batch.interval_images(which, intervals)
        # Each date's images preprocessed once, in one call, and through the image backbone once
        # (describe_dates); every interval indexes into them. A model package without
        # describe_dates gets the pairs.
        pre = self.cap.preprocess(images)
        options = {"attention": True} if self.attention else {}
        describe_dates = getattr(self.cap, "describe_dates", None)
        result = describe_dates(pre, before_rows, after_rows, **options) if describe_dates is not None \
            else self.cap.describe_pairs(pre[before_rows], pre[after_rows], **options)
        _check_finite(result, self.cap)
        tiles = [batch.tiles[i] for i in which]
        bounds = np.array([self.plan.grid.tile_bounds(t.row, t.col, t.size) for t in tiles], dtype=np.float64)
        columns = self._columns(batch, tiles, bounds, which, intervals, result)
        if self.clip_annotator is not None:
            clip_rows = self.clip_annotator.annotate(images[before_rows], images[after_rows])
            for name, _ in self.clip_annotator.fields:
                columns[name] = [row[name] for row in clip_rows]
        return DescribedBatch(columns, bounds, skips, len(batch.tiles), result)

    def _choose(self, batch, present):
        """(tile index, interval) of the pairs to caption, row-major, and the skip records."""
        fraction = batch.nodata_fractions  # (tiles, intervals)
        n_intervals = fraction.shape[1]
        keys = np.array([t.tile_id for t in batch.tiles], dtype=np.int64)[:, None] * n_intervals + \
            np.arange(n_intervals)
        written = np.isin(keys, present) if present is not None and len(present) else np.zeros(keys.shape, bool)
        # A tile without one valid pixel is never captioned, whatever --max-nodata says.
        skip = ((fraction > self.max_nodata) | (fraction >= 1.0)) & ~written
        skips = [{"tile_id": batch.tiles[i].tile_id, "row": batch.tiles[i].row, "col": batch.tiles[i].col,
                  "nodata_fraction": round(float(fraction[i, k]), 6), "interval": int(k)}
                 for i, k in zip(*np.nonzero(skip))]
        which, intervals = np.nonzero(~skip & ~written)  # row-major: tile by tile, then interval
        return which, intervals, skips

    def _columns(self, batch, tiles, bounds, which, intervals, result):
        emb = result.embeddings.numpy().astype(np.float32)
        scores = np.asarray(result.change_scores, dtype=np.float64)
        columns = {
            "tile_id": [t.tile_id for t in tiles], "row": [t.row for t in tiles], "col": [t.col for t in tiles],
            "caption": list(result.captions),
            "changed": [bool(c) for c in result.changed],
            "change_score": scores,
            "nodata_fraction": batch.nodata_fractions[which, intervals].astype(np.float64),
            "interval": intervals.astype(np.int64),
            "before_name": [self.names[k] for k in intervals],
            "after_name": [self.names[k + 1] for k in intervals],
            "most_changed_interval": most_changed(which, intervals, scores),
            EMBEDDING_FIELD: [embedding_blob(e) for e in emb],
        }
        if self.plan.area is not None:
            columns[AREA_FRACTION_FIELD] = self.plan.area.fractions(bounds)
        if self.attention:
            columns[ATTENTION_FIELD] = [embedding_blob(m) for m in result.attention.numpy()]
        columns.update(self.queries.scores(emb))
        return columns


def most_changed(which, intervals, scores):
    """Per feature, its tile's captioned interval with the highest change score (ties: the earliest)."""
    out = np.empty(len(which), dtype=np.int64)
    for tile in np.unique(which):
        mine = np.flatnonzero(which == tile)  # in interval order
        out[mine] = intervals[mine[int(np.argmax(scores[mine]))]]
    return out
