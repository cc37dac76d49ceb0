"""The ready-made look of a result layer: change_score colour ramp, captions as labels/map tips.

Low scores are nearly transparent so the imagery underneath stays readable where nothing
changed; the caption of changed tiles is drawn as a label and every tile shows it as map tip.
The where-changed heat map (--heatmap) gets the same ramp, from transparent where the model
did not look to opaque red where it looked most. A time series also gets a "when did it change"
view: a second layer on the same file, one polygon a tile, coloured by its most changed interval.
"""
from qgis.core import (
    Qgis,
    QgsCategorizedSymbolRenderer,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsGradientStop,
    QgsProject,
    QgsGraduatedSymbolRenderer,
    QgsPalLayerSettings,
    QgsRasterBandStats,
    QgsRasterShader,
    QgsRendererCategory,
    QgsRendererRange,
    QgsSingleBandPseudoColorRenderer,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor, QFont

from .result_layer import INTERVAL_FIELD, MOST_CHANGED_FIELD, layer_intervals

SCORE_FIELD = "change_score"
# "Over point" (over the centroid for polygons). QGIS 3.26 made QgsPalLayerSettings.placement a
# Qgis.LabelPlacement and refuses anything else; there QgsPalLayerSettings.OverPoint is a
# different enum's member (Qgis.LabelPredefinedPointPosition.OverPoint). 3.22 has only the old one.
LABEL_OVER_POINT = (Qgis.LabelPlacement.OverPoint if hasattr(Qgis, "LabelPlacement")
                    else QgsPalLayerSettings.OverPoint)
# (lower, upper, label, colour, fill opacity 0-255): a YlOrRd ramp.
SCORE_CLASSES = (
    (0.0, 0.2, "0.0 - 0.2  no change", "#ffffb2", 0),
    (0.2, 0.4, "0.2 - 0.4", "#fecc5c", 35),
    (0.4, 0.6, "0.4 - 0.6", "#fd8d3c", 50),
    (0.6, 0.8, "0.6 - 0.8", "#f03b20", 65),
    (0.8, 1.0, "0.8 - 1.0  changed", "#bd0026", 80),
)
MAP_TIP = ('<p style="max-width:320px"><b>[% "caption" %]</b><br/>'
           'change score: [% format_number("change_score", 2) %]'
           '[% CASE WHEN "changed" THEN \' (changed)\' ELSE \'\' END %]</p>')
# Long captions would bury the tile: labels keep about two lines, the map tip has the rest.
LABEL_EXPRESSION = ('CASE WHEN "changed" THEN CASE WHEN length("caption") > 44 '
                    'THEN left("caption", 42) || \'…\' ELSE "caption" END END')


# (position from 0 to 1 of the layer's value range, colour, opacity 0-255): transparent to hot.
HEAT_STOPS = (
    (0.0, "#ffffb2", 0),
    (0.25, "#fecc5c", 90),
    (0.5, "#fd8d3c", 150),
    (0.75, "#f03b20", 200),
    (1.0, "#bd0026", 235),
)


def heatmap_renderer(provider, band=1):
    """Pseudo-colour renderer of an attention heat map, stretched from 0 to the band's maximum."""
    stats = provider.bandStatistics(band, QgsRasterBandStats.Max)
    top = stats.maximumValue if stats.maximumValue > 0 else 1.0
    items = []
    for position, colour, alpha in HEAT_STOPS:
        c = QColor(colour)
        c.setAlpha(alpha)
        items.append(QgsColorRampShader.ColorRampItem(position * top, c, f"{position * top:.3g}"))
    ramp = QgsColorRampShader(0.0, top)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList(items)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(provider, band, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(top)
    return renderer


def style_heatmap_layer(layer, band=1):
    """Apply the heat map style to a raster layer, drawn from `band` (returns False for an invalid layer)."""
    if layer is None or not layer.isValid():
        return False
    layer.setRenderer(heatmap_renderer(layer.dataProvider(), band))
    layer.triggerRepaint()
    return True


def score_renderer():
    ranges = []
    for lower, upper, label, colour, alpha in SCORE_CLASSES:
        fill = QColor(colour)
        fill.setAlpha(alpha)
        outline = QColor(colour).darker(130)
        symbol = QgsFillSymbol.createSimple({
            "color": f"{fill.red()},{fill.green()},{fill.blue()},{alpha}",
            "outline_color": f"{outline.red()},{outline.green()},{outline.blue()},255",
            "outline_width": "0.5" if upper > 0.5 else "0.26",
        })
        ranges.append(QgsRendererRange(lower, upper, symbol, label))
    renderer = QgsGraduatedSymbolRenderer(SCORE_FIELD, ranges)
    renderer.setClassAttribute(SCORE_FIELD)
    return renderer


def caption_labeling():
    text = QgsTextFormat()
    font = QFont()
    font.setPointSizeF(8)
    text.setFont(font)
    text.setSize(8)
    text.setColor(QColor("#202020"))
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(1.0)
    buffer.setColor(QColor(255, 255, 255, 220))
    text.setBuffer(buffer)
    settings = QgsPalLayerSettings()
    settings.fieldName = LABEL_EXPRESSION
    settings.isExpression = True
    settings.setFormat(text)
    settings.autoWrapLength = 24
    settings.placement = LABEL_OVER_POINT
    return QgsVectorLayerSimpleLabeling(settings)


def style_result_layer(layer, labels=True):
    """Apply the result style; layers lacking change_score keep theirs (returns False)."""
    if layer is None or layer.fields().indexOf(SCORE_FIELD) < 0:
        return False
    layer.setRenderer(score_renderer())
    layer.setMapTipTemplate(MAP_TIP)
    layer.setDisplayExpression('"caption"')
    if labels and layer.fields().indexOf("caption") >= 0:
        layer.setLabeling(caption_labeling())
        layer.setLabelsEnabled(True)
    layer.triggerRepaint()
    return True


# --- a time series: when did it change? ------------------------------------------------------------

# One feature a tile: the interval in which the tile changed most.
WHEN_SUBSET = f'"{INTERVAL_FIELD}" = "{MOST_CHANGED_FIELD}"'
WHEN_SUFFIX = " — when did it change"
WHEN_PROPERTY = "rsicrc/when_changed_of"  # on the view: the id of the result layer it was made for
# Oldest interval pale, latest dark (viridis, reversed), so the map reads as a time scale.
WHEN_RAMP = ("#fde725", "#5ec962", "#21918c", "#3b528b", "#440154")
WHEN_ALPHA = 170
WHEN_MAP_TIP = ('<p style="max-width:320px">changed most in <b>[% "before_name" %] → [% "after_name" %]</b>'
                '<br/>[% "caption" %]<br/>change score: [% format_number("change_score", 2) %]</p>')


def interval_label(before, after):
    return f"{before} → {after}"


def when_changed_colours(count):
    """`count` colours along WHEN_RAMP, oldest first."""
    stops = [QgsGradientStop(i / (len(WHEN_RAMP) - 1), QColor(c)) for i, c in enumerate(WHEN_RAMP[1:-1], 1)]
    ramp = QgsGradientColorRamp(QColor(WHEN_RAMP[0]), QColor(WHEN_RAMP[-1]), False, stops)
    return [ramp.color(i / (count - 1) if count > 1 else 0.0) for i in range(count)]


def when_changed_renderer(intervals):
    """Categories on most_changed_interval, one an interval [(interval, before, after)], labelled
    "before → after"."""
    categories = []
    for (interval, before, after), colour in zip(intervals, when_changed_colours(len(intervals))):
        outline = colour.darker(140)
        symbol = QgsFillSymbol.createSimple({
            "color": f"{colour.red()},{colour.green()},{colour.blue()},{WHEN_ALPHA}",
            "outline_color": f"{outline.red()},{outline.green()},{outline.blue()},255",
            "outline_width": "0.26",
        })
        categories.append(QgsRendererCategory(interval, symbol, interval_label(before, after)))
    return QgsCategorizedSymbolRenderer(MOST_CHANGED_FIELD, categories)


def when_changed_layer(layer):
    """The styled "when did it change" view of a result layer, None unless it has several intervals."""
    if layer is None or layer.fields().indexOf(MOST_CHANGED_FIELD) < 0:
        return None
    intervals = layer_intervals(layer)
    if len(intervals) < 2:
        return None
    view = QgsVectorLayer(layer.source(), layer.name() + WHEN_SUFFIX, layer.providerType())
    if not view.isValid() or not view.setSubsetString(WHEN_SUBSET):
        return None
    view.setRenderer(when_changed_renderer(intervals))
    view.setMapTipTemplate(WHEN_MAP_TIP)
    view.setDisplayExpression('"caption"')
    view.setCustomProperty(WHEN_PROPERTY, layer.id())
    return view


def add_when_changed_view(layer, project=None):
    """Add the view of a time-series result layer just above it in the layer tree; None (nothing
    added) for a layer of one interval."""
    project = project or QgsProject.instance()
    view = when_changed_layer(layer)
    if view is None:
        return None
    node = project.layerTreeRoot().findLayer(layer.id())
    if node is None:
        project.addMapLayer(view)
        return view
    project.addMapLayer(view, False)
    parent = node.parent()
    parent.insertLayer(parent.children().index(node), view)
    return view
