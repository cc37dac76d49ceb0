"""Scoring the features of a result layer in QGIS: read stored embeddings, write a score field
through the layer's edit buffer, select and order the best matches.

Shared by the search dock and the rsicrc:searchchanges algorithm so both give the same scores.
"""
from dataclasses import dataclass, field

import numpy as np
from qgis.core import QgsFeatureRequest, QgsField, QgsVectorLayer
from qgis.PyQt.QtCore import QVariant, Qt

from ..pipeline.gpkg_layer import written_by_caption
from . import scoring
from .result_layer import EMBEDDING_FIELD, blob_vector


class SearchProblem(Exception):
    """The layer cannot be searched as asked; the message says why."""


@dataclass
class LayerEmbeddings:
    fids: list
    matrix: np.ndarray  # (n, d) float32, rows in the order of fids
    skipped: list = field(default_factory=list)  # fids without a usable embedding


def read_embeddings(layer, field_name=EMBEDDING_FIELD, dim=None):
    if layer.fields().indexOf(field_name) < 0:
        raise SearchProblem(f"Layer \"{layer.name()}\" has no \"{field_name}\" field; search needs "
                            "a layer written by rsicrc caption.")
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
    request.setSubsetOfAttributes([field_name], layer.fields())
    fids, rows, skipped = [], [], []
    for feature in layer.getFeatures(request):
        vec = blob_vector(feature[field_name], dim)
        if vec is None or (rows and vec.shape != rows[0].shape):
            skipped.append(feature.id())
            continue
        fids.append(feature.id())
        rows.append(vec)
    if not rows:
        raise SearchProblem(f"Layer \"{layer.name()}\" has no features with a usable "
                            f"\"{field_name}\" embedding.")
    return LayerEmbeddings(fids, np.stack(rows), skipped)


def ensure_score_field(layer, name):
    """Index of the real field `name`, added through the edit buffer when missing."""
    if written_by_caption(name):
        raise SearchProblem(f"Score field \"{name}\" would overwrite a field that rsicrc caption wrote; "
                            "choose another score field.")
    idx = layer.fields().indexOf(name)
    if idx >= 0:
        if layer.fields().at(idx).type() not in (QVariant.Double, QVariant.Int, QVariant.LongLong):
            raise SearchProblem(f"Field \"{name}\" of layer \"{layer.name()}\" exists and is "
                                "not numeric; choose another score field.")
        return idx
    if not layer.addAttribute(QgsField(name, QVariant.Double)):
        raise SearchProblem(f"Field \"{name}\" cannot be added to layer \"{layer.name()}\".")
    idx = layer.fields().indexOf(name)
    if idx < 0:
        raise SearchProblem(f"Field \"{name}\" cannot be added to layer \"{layer.name()}\".")
    return idx


def write_scores(layer, name, fids, scores, commit=None):
    """Write scores[i] into field `name` of feature fids[i]; every other feature gets NULL.

    Goes through the edit buffer. A layer the user already edits keeps the changes pending
    (undoable); otherwise they are committed, so the file holds the score too.
    """
    was_editing = layer.isEditable()
    if commit is None:
        commit = not was_editing
    if not was_editing and not layer.startEditing():
        raise SearchProblem(f"Layer \"{layer.name()}\" cannot be edited (read-only file?), so "
                            "the score field cannot be written.")
    try:
        idx = ensure_score_field(layer, name)
        by_fid = {fid: float(s) for fid, s in zip(fids, scores)}
        for feature in layer.getFeatures(QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
                                         .setNoAttributes()):
            fid = feature.id()
            layer.changeAttributeValue(fid, idx, by_fid.get(fid))
        if commit and not layer.commitChanges():
            errors = "; ".join(layer.commitErrors())
            layer.rollBack()
            raise SearchProblem(f"Scores could not be saved to layer \"{layer.name()}\": {errors}")
    except Exception:
        if not was_editing and layer.isEditable():
            layer.rollBack()
        raise
    return idx


def order_by_score(layer, name):
    """Sort the attribute table by the score, best first."""
    config = layer.attributeTableConfig()
    config.setSortExpression(f'"{name}"')
    config.setSortOrder(Qt.DescendingOrder)
    layer.setAttributeTableConfig(config)


def select_best(layer, fids, scores, top):
    """Select the `top` best features; returns their fids, best first."""
    best = [fids[i] for i in scoring.top_indices(scores, top)]
    layer.selectByIds(best, QgsVectorLayer.SetSelection)
    return best
