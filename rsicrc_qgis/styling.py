"""The ready-made look of a result layer: change_score colour ramp, captions as labels/map tips.

Low scores are nearly transparent so the imagery underneath stays readable where nothing
changed; the caption of changed tiles is drawn as a label and every tile shows it as map tip.
The where-changed heat map (--heatmap) gets the same ramp, from transparent where the model
did not look to opaque red where it looked most.
"""
from qgis.core import (
    QgsColorRampShader,
    QgsFillSymbol,
    QgsGraduatedSymbolRenderer,
    QgsPalLayerSettings,
    QgsRasterBandStats,
    QgsRasterShader,
    QgsRendererRange,
    QgsSingleBandPseudoColorRenderer,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor, QFont

SCORE_FIELD = "change_score"
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


def style_heatmap_layer(layer):
    """Apply the heat map style to a raster layer (returns False for an invalid layer)."""
    if layer is None or not layer.isValid():
        return False
    layer.setRenderer(heatmap_renderer(layer.dataProvider()))
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
    settings.placement = QgsPalLayerSettings.OverPoint
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
