"""Scoring a result layer's features against a text: what the dock and rsicrc:searchchanges share.

The text embedding comes from the search worker with the model named in the layer's metadata
(the model that made the embeddings); the comparison itself is numpy here, the same dot
product of L2-normalised vectors that `rsicrc search` computes.

The steps are separate because of threads: `prepare` runs on the main thread and takes a
snapshot of the layer (a QgsVectorLayerFeatureSource, which any thread may read); `read_layer`
reads the BLOBs from that snapshot and `embed_query` waits for the worker, both off the main
thread, so that a layer of 100,000 tiles never freezes QGIS; `finish` is numpy.
"""
import time
from dataclasses import dataclass, field

import numpy as np
from qgis.core import QgsFields, QgsVectorLayerFeatureSource

from . import clip_scoring
from ...pipeline.layer.schema import CLIP_BLOB_FIELDS, EMBEDDING_FIELD
from ..layers import result_layer
from .layer_search import SearchProblem, ShortRead, read_embeddings, require_field

MODE_CAPTION = "caption"
MODE_CLIP = "clip"
# A layer being edited is read again when a read comes up short, after these pauses (seconds).
EDITED_READ_RETRY_PAUSES = (0.05, 0.2)


@dataclass
class PreparedSearch:
    layer_name: str
    mode: str
    source: str
    sha256: str
    features: object  # the snapshot to read from (any thread)
    fields: QgsFields
    dim: int = None
    expected: int = None  # the layer's feature count when prepared
    fids: list = None
    matrix: np.ndarray = None  # caption mode: pair embeddings; clip mode: BEFORE images
    after: np.ndarray = None  # clip mode: AFTER images
    skipped: list = field(default_factory=list)


@dataclass
class SearchOutcome:
    fids: list
    scores: np.ndarray
    unknown_words: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    model_source: str = ""


def prepare(layer, meta=None, mode=MODE_CAPTION):
    """What the search needs from the layer (main thread).

    A layer being edited is read here and now, on the main thread, through the layer itself: QGIS
    edits a GeoPackage in WAL mode, and the second connection a snapshot opens from another
    thread then fails now and then ("unable to open database file"). The dock lets only layers
    of up to EDIT_BUFFER_MAX_FEATURES be searched while edited, so this stays quick.
    """
    if meta is None:
        meta = result_layer.layer_metadata(layer)
    editing = layer.isEditable()
    features = layer if editing else QgsVectorLayerFeatureSource(layer)
    fields = QgsFields(layer.fields())
    if mode == MODE_CLIP:
        source = meta.get("clip_model_source")
        if not source:
            raise SearchProblem(f"Layer \"{layer.name()}\" has no RS-M-CLIP embeddings; caption it "
                                "with RS-M-CLIP embeddings (--clip) to search in other languages.")
        for name in CLIP_BLOB_FIELDS:
            require_field(fields, name, layer.name())
        prepared = PreparedSearch(layer.name(), mode, source, meta.get("clip_model_sha256") or "", features,
                                  fields, meta.get("clip_embedding_dim"), layer.featureCount())
        return read_edited_layer(prepared) if editing else prepared
    source = meta.get("model_source")
    if not source:
        raise SearchProblem(f"Layer \"{layer.name()}\" does not say which model made it "
                            "(its run metadata has no model_source).")
    require_field(fields, EMBEDDING_FIELD, layer.name())
    prepared = PreparedSearch(layer.name(), mode, source, meta.get("model_sha256") or "", features, fields,
                              meta.get("embedding_dim"), layer.featureCount())
    return read_edited_layer(prepared) if editing else prepared


def read_edited_layer(prepared):
    """read_layer for a layer being edited (main thread), read again when it comes up short.

    The iterator opens its own GDAL connection to the GeoPackage, and now and then that open finds
    the file locked by the editing connection (GDAL logs "At least one of the required GeoPackage
    tables, gpkg_spatial_ref_sys or gpkg_contents, is missing") and yields nothing or stops early;
    a moment later the same read succeeds.
    """
    for pause in EDITED_READ_RETRY_PAUSES:
        try:
            return read_layer(prepared)
        except ShortRead:  # raised before read_layer fills anything in: the next try starts afresh
            time.sleep(pause)
    return read_layer(prepared)


def read_layer(prepared):
    """Read the stored embeddings into `prepared` (any thread, once); returns it."""
    p = prepared
    if p.fids is not None:
        return p
    if p.mode == MODE_CLIP:
        before, after = (read_embeddings(p.features, p.fields, name, p.dim, p.layer_name, p.expected)
                         for name in CLIP_BLOB_FIELDS)
        after_fids = set(after.fids)
        common = [f for f in before.fids if f in after_fids]
        if common != before.fids or common != after.fids:
            pos_b = {f: i for i, f in enumerate(before.fids)}
            pos_a = {f: i for i, f in enumerate(after.fids)}
            before.matrix = before.matrix[[pos_b[f] for f in common]]
            after.matrix = after.matrix[[pos_a[f] for f in common]]
        p.fids, p.matrix, p.after = common, before.matrix, after.matrix
        p.skipped = sorted(set(before.skipped) | set(after.skipped))
    else:
        emb = read_embeddings(p.features, p.fields, EMBEDDING_FIELD, p.dim, p.layer_name, p.expected)
        p.fids, p.matrix, p.skipped = emb.fids, emb.matrix, emb.skipped
    return p


def embed_query(prepared, text, worker, is_canceled=None):
    """Ask the worker for the text embedding (any thread)."""
    text = (text or "").strip()
    if not text:
        raise SearchProblem("Type what to look for.")
    return worker.embed_text([text], model=prepared.source, clip=prepared.mode == MODE_CLIP,
                             is_canceled=is_canceled)


def finish(prepared, answer, when="after", change=False):
    got = answer.get("model_sha256")
    if prepared.sha256 and got and got != prepared.sha256:
        raise SearchProblem(
            f"The model at {prepared.source} has changed since layer \"{prepared.layer_name}\" was "
            f"made (sha256 {got[:12]}… instead of {prepared.sha256[:12]}…); the layer's embeddings "
            "cannot be compared with it.")
    query = np.asarray(answer["embeddings"][0], dtype=np.float32)
    if query.shape[0] != prepared.matrix.shape[1]:
        raise SearchProblem(f"The text embedding has {query.shape[0]} dimensions, the layer's "
                            f"{prepared.matrix.shape[1]}: it was made with another model.")
    if prepared.mode == MODE_CLIP:
        scores = clip_scoring.clip_scores_from_embeddings(query, prepared.matrix, prepared.after,
                                                          when=when, change=change)
        unknown = []
    else:
        scores = prepared.matrix @ query
        unknown = list((answer.get("unknown_words") or [[]])[0])
    return SearchOutcome(prepared.fids, np.asarray(scores, dtype=np.float64), unknown,
                         prepared.skipped, prepared.source)


def score_features(prepared, text, worker, when="after", change=False, is_canceled=None):
    """read_layer, embed_query and finish in one go (any thread, after prepare)."""
    read_layer(prepared)
    return finish(prepared, embed_query(prepared, text, worker, is_canceled), when, change)
