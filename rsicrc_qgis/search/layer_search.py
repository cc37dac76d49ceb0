"""Scoring the features of a result layer in QGIS: read stored embeddings, write a score field
(into the file, or into the edit buffer of a layer being edited), select and order the best.

Shared by the search dock and the rsicrc:searchchanges algorithm so both give the same scores.
"""
from dataclasses import dataclass, field

import numpy as np
from qgis.core import QgsFeatureRequest, QgsField
from qgis.PyQt.QtCore import QByteArray, QVariant, Qt

from ...pipeline.layer.blobs import BlobLengthError, blobs_to_matrix
from ...pipeline.layer.schema import EMBEDDING_FIELD, written_by_caption
from ...pipeline.scores import top_indices
from ..qgis_enums import NO_GEOMETRY, SET_SELECTION


class SearchProblem(Exception):
    """The layer cannot be searched as asked; the message says why."""


class ShortRead(SearchProblem):
    """Fewer features were read than the layer has."""


@dataclass
class LayerEmbeddings:
    fids: list
    matrix: np.ndarray  # (n, d) float32, rows in the order of fids
    skipped: list = field(default_factory=list)  # fids without a usable embedding


def require_field(fields, field_name, layer_name="?"):
    if fields.indexOf(field_name) < 0:
        raise SearchProblem(f"Layer \"{layer_name}\" has no \"{field_name}\" field; search needs "
                            "a layer written by rsicrc caption.")


def check_all_read(layer_name, read, expected):
    """ShortRead when fewer features were read than the layer has: QGIS reports a file it fails to
    read only on its log, and the iteration just ends early."""
    if expected is not None and expected >= 0 and read != expected:
        raise ShortRead(f"Only {read:,} of the {expected:,} features of layer \"{layer_name}\" could be read "
                        "(see the QGIS log); if the layer is being edited, save your edits and search again.")


def read_embeddings(features, fields, field_name=EMBEDDING_FIELD, dim=None, layer_name="?", expected=None):
    """The stored embeddings of `field_name`, read from a feature source.

    features: anything with getFeatures(request) - a QgsVectorLayerFeatureSource made on the main
    thread (safe to read from any thread), a Processing source, or the layer itself on the main
    thread; fields: its QgsFields. As `rsicrc search`: a tile without an embedding (NULL, empty,
    non-finite) is skipped; a BLOB of the wrong length (a hand edit, another model) is refused.
    expected: the layer's feature count; fewer read is a ShortRead (checked before "no usable
    embedding", which a read that yielded nothing would otherwise claim).
    """
    require_field(fields, field_name, layer_name)
    request = QgsFeatureRequest().setFlags(NO_GEOMETRY)
    request.setSubsetOfAttributes([field_name], fields)
    fids, chunks, skipped = [], [], []
    chunk_fids, blobs = [], []

    def decode():
        nonlocal dim
        if dim is None:  # an old layer without embedding_dim: the first BLOB says it
            dim = next((len(b) // 4 for b in blobs if b), None)
        if dim is None:
            skipped.extend(chunk_fids)
            return
        try:
            matrix = blobs_to_matrix(blobs, dim)
        except BlobLengthError as exc:
            raise SearchProblem(f"Layer \"{layer_name}\": the \"{field_name}\" of feature {chunk_fids[exc.row]} "
                                f"{exc.detail}; the layer was edited by hand or made by another model.") from None
        usable = np.all(np.isfinite(matrix), axis=1)
        fids.extend(f for f, ok in zip(chunk_fids, usable) if ok)
        skipped.extend(f for f, ok in zip(chunk_fids, usable) if not ok)
        chunks.append(matrix[usable])

    for feature in features.getFeatures(request):
        value = feature[field_name]
        chunk_fids.append(feature.id())
        blobs.append(bytes(value) if isinstance(value, (QByteArray, bytes, bytearray)) and len(value) else None)
        if len(blobs) == 4096:
            decode()
            chunk_fids, blobs = [], []
    if blobs:
        decode()
    check_all_read(layer_name, len(fids) + len(skipped), expected)
    if not fids:
        raise SearchProblem(f"Layer \"{layer_name}\" has no features with a usable "
                            f"\"{field_name}\" embedding.")
    return LayerEmbeddings(fids, np.concatenate(chunks), skipped)


def ensure_score_field(layer, name):
    """Index of the real field `name`, added through the edit buffer when missing."""
    check_score_field(layer.fields(), name, layer.name())
    idx = layer.fields().indexOf(name)
    if idx >= 0:
        return idx
    if not layer.addAttribute(QgsField(name, QVariant.Double)):
        raise SearchProblem(f"Field \"{name}\" cannot be added to layer \"{layer.name()}\".")
    idx = layer.fields().indexOf(name)
    if idx < 0:
        raise SearchProblem(f"Field \"{name}\" cannot be added to layer \"{layer.name()}\".")
    return idx


# QGIS (3.22 at least) undoes attribute changes in quadratic time: 10,000 of them take 2.4 s to
# undo or discard on the reference machine, 100,000 about six minutes, with QGIS frozen. Above
# this many features a layer being edited is not given the scores in its edit buffer.
EDIT_BUFFER_MAX_FEATURES = 5000


def check_edit_buffer_size(layer):
    """SearchProblem when `layer` is being edited and too big to take the scores in its buffer."""
    if layer.isEditable() and layer.featureCount() > EDIT_BUFFER_MAX_FEATURES:
        raise SearchProblem(
            f"Layer \"{layer.name()}\" is being edited and has {layer.featureCount():,} tiles: scores in "
            f"its edit buffer would make undo or discarding the edits take minutes in QGIS. Save or "
            f"discard your edits (stop editing) and search again; the scores then go straight into "
            f"the file.")


def write_scores_in_edit_buffer(layer, name, fids, scores, unscored=()):
    """The scores as one edit command of a layer the user is editing: pending, one undo step.

    scores[i] goes to feature fids[i]; the features in `unscored` get NULL.
    """
    if not layer.isEditable():
        raise SearchProblem(f"Layer \"{layer.name()}\" is not being edited.")
    check_edit_buffer_size(layer)
    layer.beginEditCommand(f"RSICRC search scores ({name})")
    try:
        idx = ensure_score_field(layer, name)
        for fid, score in zip(fids, scores):
            layer.changeAttributeValue(fid, idx, float(score) if np.isfinite(score) else None)
        for fid in unscored:
            layer.changeAttributeValue(fid, idx, None)
    except Exception:
        layer.destroyEditCommand()
        raise
    layer.endEditCommand()
    return idx


def write_scores_to_file(path, name, fids, scores, unscored=()):
    """The scores written into the GeoPackage itself, in one transaction (any thread).

    The very writer `rsicrc search` uses; the layer showing the file must then be reloaded
    (reload_after_file_write, on the main thread).
    """
    from ...pipeline.layer.sqlite_edits import write_scores

    all_fids = list(fids) + list(unscored)
    all_scores = np.concatenate([np.asarray(scores, dtype=np.float64), np.full(len(unscored), np.nan)])
    try:
        write_scores(path, name, all_fids, all_scores)
    except Exception as exc:  # sqlite3 errors: a read-only file or folder, a locked file, a full disk
        raise SearchProblem(f"Scores could not be saved to {path} ({exc}); is the file read-only? "
                            "Start editing the layer to keep the scores in the edit buffer instead.") from None


def reload_after_file_write(layer):
    """Show what write_scores_to_file put into the layer's file (main thread)."""
    layer.dataProvider().reloadData()
    layer.updateFields()
    layer.triggerRepaint()


def check_score_field(fields, name, layer_name="?"):
    """SearchProblem when `name` would overwrite a field rsicrc caption wrote or a non-numeric one."""
    if written_by_caption(name):
        raise SearchProblem(f"Score field \"{name}\" would overwrite a field that rsicrc caption wrote; "
                            "choose another score field.")
    idx = fields.indexOf(name)
    if idx >= 0 and fields.at(idx).type() not in (QVariant.Double, QVariant.Int, QVariant.LongLong):
        raise SearchProblem(f"Field \"{name}\" of layer \"{layer_name}\" exists and is "
                            "not numeric; choose another score field.")


def order_by_score(layer, name):
    """Sort the attribute table by the score, best first."""
    config = layer.attributeTableConfig()
    config.setSortExpression(f'"{name}"')
    config.setSortOrder(Qt.SortOrder.DescendingOrder)
    layer.setAttributeTableConfig(config)


def select_best(layer, fids, scores, top):
    """Select the `top` best features; returns their fids, best first."""
    best = [fids[i] for i in top_indices(scores, top)]
    layer.selectByIds(best, SET_SELECTION)
    return best
