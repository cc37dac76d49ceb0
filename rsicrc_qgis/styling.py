"""The ready-made look of a result layer: change_score colour ramp, captions as labels/map tips.

Low scores are nearly transparent so the imagery underneath stays readable where nothing
changed; the caption of changed tiles is drawn as a label and every tile shows it as map tip.
"""
from qgis.core import (
    QgsFillSymbol,
    QgsGraduatedSymbolRenderer,
    QgsPalLayerSettings,
    QgsRendererRange,
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
