from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from .. import caption_job, settings
from ..environment import EnvironmentProblem
from ..worker_process import Canceled, CliFailure
from .layer_post_processor import StyleResultLayer

HELP = """Captions what changed between two aligned rasters of the same place, tile by tile, with
the RSICRC change-captioning model. The output GeoPackage has one polygon per tile with its
caption, a change score (near 0: nothing changed), a score per query and the pair embedding
that the "Search changes by text" algorithm and the search dock use.

The model runs in a separate Python environment (RSICRC settings, or the RSICRC_PYTHON
environment variable). Cancelling stops it; running again with the same output resumes."""


def retarget_loading(context, destination, uri, post_processor):
    """Load `uri` (the changes layer) instead of the bare file Processing would open."""
    layers = context.layersToLoadOnCompletion()
    key = next((k for k in layers if k.split("|")[0] == destination.split("|")[0]), None)
    if key is None:
        return
    details = layers.pop(key)
    new = QgsProcessingContext.LayerDetails(details.name, details.project, details.outputName,
                                            details.layerTypeHint)
    new.setPostProcessor(post_processor)
    layers[uri] = new
    context.setLayersToLoadOnCompletion(layers)


class CaptionChangesAlgorithm(QgsProcessingAlgorithm):
    BEFORE, AFTER, BANDS, TILE_SIZE = "BEFORE", "AFTER", "BANDS", "TILE_SIZE"
    QUERIES, MODEL, DEVICE, OUTPUT = "QUERIES", "MODEL", "DEVICE", "OUTPUT"
    REPROJECT, CLIP = "REPROJECT", "CLIP"
    FEATURES, SKIPPED = "FEATURES", "SKIPPED"

    def createInstance(self):
        return CaptionChangesAlgorithm()

    def name(self):
        return "captionchanges"

    def displayName(self):
        return "Caption changes between two rasters"

    def shortHelpString(self):
        return HELP

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.BEFORE, "BEFORE raster"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.AFTER, "AFTER raster"))
        self.addParameter(QgsProcessingParameterString(
            self.BANDS, "Bands as red,green,blue (empty: the rasters' RGB bands)", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.TILE_SIZE, "Tile size (pixels)", QgsProcessingParameterNumber.Integer,
            caption_job.DEFAULT_TILE_SIZE, minValue=32, maxValue=4096))
        self.addParameter(QgsProcessingParameterString(
            self.QUERIES, "Text queries, one a line (each gets a q_ score field)",
            multiLine=True, optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.MODEL, "Model (hub id or folder; empty: settings / RSICRC_MODEL / default)",
            optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, "Device", options=list(settings.DEVICES), defaultValue=0))
        self.addParameter(QgsProcessingParameterBoolean(
            self.REPROJECT, "Reproject/resample AFTER onto BEFORE's grid when they differ",
            defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean(
            self.CLIP, "Also store RS-M-CLIP embeddings (multilingual search)", defaultValue=False))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT, "Captioned changes", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.FEATURES, "Tiles captioned"))
        self.addOutput(QgsProcessingOutputNumber(self.SKIPPED, "Tiles skipped"))

    def processAlgorithm(self, parameters, context, feedback):
        try:
            before = caption_job.raster_path(
                self.parameterAsRasterLayer(parameters, self.BEFORE, context), "BEFORE")
            after = caption_job.raster_path(
                self.parameterAsRasterLayer(parameters, self.AFTER, context), "AFTER")
            bands = caption_job.parse_bands(self.parameterAsString(parameters, self.BANDS, context))
            destination = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
            output = caption_job.output_path(destination)
        except caption_job.BadParameter as exc:
            raise QgsProcessingException(str(exc)) from None
        queries = caption_job.parse_queries(self.parameterAsString(parameters, self.QUERIES, context))
        model = self.parameterAsString(parameters, self.MODEL, context).strip() or None
        device = settings.DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]
        args = caption_job.caption_args(before, after, output, bands,
                                        self.parameterAsInt(parameters, self.TILE_SIZE, context),
                                        queries, model, device,
                                        self.parameterAsBool(parameters, self.REPROJECT, context),
                                        self.parameterAsBool(parameters, self.CLIP, context))

        def on_event(event):
            kind = event["event"]
            if kind == "start":
                feedback.pushInfo(f"Captioning {event.get('total')} tiles into {event.get('output')}")
                feedback.setProgress(0)
            elif kind == "progress":
                feedback.setProgress(100.0 * event["done"] / max(1, event["total"]))
            elif kind == "warning":
                feedback.pushWarning(event.get("message", ""))

        try:
            result = caption_job.run_caption(args, on_event=on_event,
                                             is_canceled=feedback.isCanceled,
                                             on_log=feedback.pushDebugInfo)
        except Canceled:
            raise QgsProcessingException(
                f"Cancelled. {output} is kept as it was; run again with the same output to "
                "resume.") from None
        except (CliFailure, EnvironmentProblem) as exc:
            raise QgsProcessingException(str(exc)) from None
        done = result.done or {}
        feedback.pushInfo(f"{done.get('features', '?')} tiles captioned, "
                          f"{done.get('skipped', 0)} skipped")
        uri = caption_job.layer_uri(output)
        if context.willLoadLayerOnCompletion(destination):
            retarget_loading(context, destination, uri, StyleResultLayer())
        return {self.OUTPUT: uri, self.FEATURES: done.get("features"),
                self.SKIPPED: done.get("skipped")}
