"""The where-changed heat map in the project: styled, and just below its result layer.

The dialog's task adds both layers itself; Processing loads them one by one, in an order of its
own, so each of the two post-processors puts the heat map under the result layer once both are
there. The heat map knows its result layer by a custom property naming the GeoPackage.
"""
import os

from qgis.core import QgsProject, QgsRasterLayer

from .result_layer import gpkg_path
from .styling import style_heatmap_layer

RESULT_PROPERTY = "rsicrc/heatmap_of"  # on a heat map layer: the result GeoPackage's path
LAYER_NAME = "Where changed"


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def mark_heatmap(layer, output):
    layer.setCustomProperty(RESULT_PROPERTY, os.path.abspath(output))
    style_heatmap_layer(layer)


def heatmap_layer(path, output, name=LAYER_NAME):
    """A styled raster layer of the heat map at `path` made with result `output` (None if unreadable)."""
    layer = QgsRasterLayer(str(path), name, "gdal")
    if not layer.isValid():
        return None
    mark_heatmap(layer, output)
    return layer


def place_heatmaps(project=None):
    """Move every heat map layer just below its result layer in the layer tree, when both are there."""
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    nodes = root.findLayers()
    for heat_node in nodes:
        heat = heat_node.layer()
        target = heat.customProperty(RESULT_PROPERTY) if heat is not None else None
        if not target:
            continue
        result_node = next((n for n in root.findLayers() if n.layer() is not None and n.layer() is not heat
                            and gpkg_path(n.layer()) and _same_file(gpkg_path(n.layer()), target)), None)
        if result_node is None:
            continue
        parent = result_node.parent()
        index = parent.children().index(result_node)
        if heat_node.parent() is parent and parent.children().index(heat_node) == index + 1:
            continue
        clone = heat_node.clone()
        parent.insertChildNode(index + 1, clone)
        heat_node.parent().removeChildNode(heat_node)


def add_with_result(heat, result, project=None):
    """Add a heat map and its result layer: the result on top, the heat map right below it."""
    project = project or QgsProject.instance()
    project.addMapLayer(heat)
    project.addMapLayer(result)
    place_heatmaps(project)
