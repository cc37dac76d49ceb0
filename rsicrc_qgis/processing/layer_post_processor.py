"""Style a result layer once Processing has loaded it into the project (main thread)."""
from qgis.core import QgsProcessingLayerPostProcessorInterface

from ..layers.heatmap_layer import mark_heatmap, place_heatmaps
from ..layers.styling import add_when_changed_view, style_result_layer


class StyleResultLayer(QgsProcessingLayerPostProcessorInterface):
    _keep = []  # Processing does not own post-processors; keep them alive until used

    def __init__(self, select_expression=None, when_view=False):
        """when_view: also add the "when did it change" view of a time series (a caption run's
        output; a search's scored copy goes without)."""
        super().__init__()
        self.select_expression = select_expression
        self.when_view = when_view
        StyleResultLayer._keep.append(self)

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - Qt signature
        style_result_layer(layer)
        if self.when_view:
            add_when_changed_view(layer, context.project())
        place_heatmaps(context.project())
        if self.select_expression and hasattr(layer, "selectByExpression"):
            layer.selectByExpression(self.select_expression)
        if self in StyleResultLayer._keep:
            StyleResultLayer._keep.remove(self)


class StyleHeatmapLayer(QgsProcessingLayerPostProcessorInterface):
    """Style a --heatmap raster and put it below its result layer (`output`, the GeoPackage)."""
    _keep = []

    def __init__(self, output):
        super().__init__()
        self.output = output
        StyleHeatmapLayer._keep.append(self)

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - Qt signature
        mark_heatmap(layer, self.output)
        place_heatmaps(context.project())
        if self in StyleHeatmapLayer._keep:
            StyleHeatmapLayer._keep.remove(self)
