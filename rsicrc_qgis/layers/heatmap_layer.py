"""The where-changed heat map in the project: styled, and just below its result layer.

The dialog's task adds both layers itself; Processing loads them one by one, in an order of its
own, so each of the two post-processors puts the heat map under the result layer once both are
there. The heat map knows its result layer by a custom property naming the GeoPackage.

A time series' heat map has a band an interval. QGIS draws a raster layer from one band, so it
becomes a group of layers on the same file, one an interval (oldest first), of which one is
shown at a time: the latest, at first. Both faces get the group from place_heatmaps, which splits
the loaded layer where it lies in the tree and then moves the group as it moves a lone layer.
"""
import os

from qgis.core import QgsProject, QgsRasterLayer

from .result_layer import gpkg_path
from .styling import WHEN_PROPERTY, interval_label, style_heatmap_layer

RESULT_PROPERTY = "rsicrc/heatmap_of"  # on a heat map layer (and a series' group): the result's path
BAND_PROPERTY = "rsicrc/heatmap_band"  # on each layer of a series' group: the band (interval + 1) it draws
LAYER_NAME = "Where changed"
NAME_SEPARATOR = " — "  # "<heat map> — 2019.tif → 2020.tif", as the "when did it change" view is named
BAND_ARROW = " -> "  # in a band's description, "before_name -> after_name" (docs/interfaces.md)


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def mark_heatmap(layer, output):
    """Tie a heat map layer to result `output` and style it; a series' shows its latest interval
    until place_heatmaps gives each interval a layer."""
    layer.setCustomProperty(RESULT_PROPERTY, os.path.abspath(output))
    style_heatmap_layer(layer, max(layer.bandCount(), 1))


def heatmap_layer(path, output, name=LAYER_NAME):
    """A styled raster layer of the heat map at `path` made with result `output` (None if unreadable)."""
    layer = QgsRasterLayer(str(path), name, "gdal")
    if not layer.isValid():
        return None
    mark_heatmap(layer, output)
    return layer


def band_labels(layer):
    """"before → after" of each band of a heat map, from the band descriptions ("band N" where a
    description is missing or not an interval's)."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        try:
            ds = gdal.Open(layer.source())
        except RuntimeError:  # gdal.UseExceptions() is on (QGIS 3.40+ turns it on process-wide)
            ds = None
        found = [ds.GetRasterBand(b).GetDescription() for b in range(1, ds.RasterCount + 1)] if ds else []
    finally:
        gdal.PopErrorHandler()
    labels = []
    for band in range(1, layer.bandCount() + 1):
        text = found[band - 1] if band <= len(found) else ""
        names = text.split(BAND_ARROW)
        labels.append(interval_label(*names) if len(names) == 2 else text or f"band {band}")
    return labels


def _is_heatmap(layer):
    return layer is not None and bool(layer.customProperty(RESULT_PROPERTY))


def _needs_split(layer):
    return _is_heatmap(layer) and layer.bandCount() > 1 and layer.customProperty(BAND_PROPERTY) is None


def split_series(node, project):
    """Replace the layer node of a series' heat map by a group of one layer an interval, in place.

    The loaded layer becomes the latest interval's (the visible one), so nothing that holds it
    is left with a layer gone from the project; the others are new layers on the same file."""
    heat = node.layer()
    target, base = heat.customProperty(RESULT_PROPERTY), heat.name()
    labels = band_labels(heat)
    parent = node.parent()
    group = parent.insertGroup(parent.children().index(node), base)
    group.setCustomProperty(RESULT_PROPERTY, target)
    for band, label in enumerate(labels, start=1):
        layer = heat if band == len(labels) else QgsRasterLayer(heat.source(), "", "gdal")
        layer.setName(f"{base}{NAME_SEPARATOR}{label}")
        layer.setCustomProperty(RESULT_PROPERTY, target)
        layer.setCustomProperty(BAND_PROPERTY, band)
        style_heatmap_layer(layer, band)
        if layer is heat:
            group.addChildNode(node.clone())  # before the old node goes: the layer stays in the project
        else:
            project.addMapLayer(layer, False)
            group.addLayer(layer).setItemVisibilityChecked(False)
    parent.removeChildNode(node)
    group.setIsMutuallyExclusive(True, len(labels) - 1)
    return group


def _heatmap_units(root):
    """[(tree node, result path)] of what moves as one below a result: a series' group, or a lone
    heat map layer."""
    units = []
    for node in root.findLayers():
        if not _is_heatmap(node.layer()):
            continue
        group = node.parent()
        if group.customProperty(RESULT_PROPERTY):
            if not any(group is unit for unit, _ in units):
                units.append((group, group.customProperty(RESULT_PROPERTY)))
        else:
            units.append((node, node.layer().customProperty(RESULT_PROPERTY)))
    return units


def _result_node(root, target):
    """The layer node of the result GeoPackage `target`; not its "when did it change" view, which
    lies on the same file."""
    for node in root.findLayers():
        layer = node.layer()
        if layer is None or _is_heatmap(layer) or layer.customProperty(WHEN_PROPERTY) is not None:
            continue
        path = gpkg_path(layer)
        if path and _same_file(path, target):
            return node
    return None


def place_heatmaps(project=None):
    """Move every heat map just below its result layer in the layer tree, when both are there; a
    series' heat map is first split into its group of intervals."""
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    for node in root.findLayers():
        if _needs_split(node.layer()):
            split_series(node, project)
    for unit, target in _heatmap_units(root):
        result_node = _result_node(root, target)
        if result_node is None:
            continue
        parent = result_node.parent()
        index = parent.children().index(result_node)
        if unit.parent() is parent and parent.children().index(unit) == index + 1:
            continue
        clone = unit.clone()
        parent.insertChildNode(index + 1, clone)
        unit.parent().removeChildNode(unit)


def add_with_result(heat, result, project=None):
    """Add a heat map and its result layer: the result on top, the heat map right below it."""
    project = project or QgsProject.instance()
    project.addMapLayer(heat)
    project.addMapLayer(result)
    place_heatmaps(project)
