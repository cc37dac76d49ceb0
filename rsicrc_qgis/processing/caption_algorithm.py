from qgis.core import (QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingOutputNumber,
                       QgsProcessingParameterBoolean, QgsProcessingParameterEnum, QgsProcessingParameterExtent,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                       QgsProcessingParameterVectorDestination)

from ...pipeline.caption_params import DEVICES, form_options
from ..caption import job as caption_job, pair_checks
from ..caption.area_chooser import extent_text
from ..qgis_enums import NUMBER_DOUBLE, NUMBER_INTEGER, PARAMETER_ADVANCED, SOURCE_POLYGONS, SOURCE_RASTER
from ..worker import protocol
from ..worker.environment import EnvironmentProblem
from ..worker.process import Canceled, CliFailure
from .layer_post_processor import StyleHeatmapLayer, StyleResultLayer

CAPTION_HELP = """Captions what changed between two aligned rasters of the same place, tile by tile, with
the RSICRC change-captioning model. The output GeoPackage has one polygon per tile with its
caption, a change score (near 0: nothing changed), a score per query and the pair embedding
that the "Search changes by text" algorithm and the search dock use.

Later rasters (optional, oldest first) make a time series: every interval (BEFORE to AFTER,
AFTER to the first later raster, ...) is captioned on the same tiles into the one layer, with
its number in the "interval" field, and "most_changed_interval" says per tile when it changed
most; the result then also gets a "when did it change" layer.

The model runs in a separate Python environment (RSICRC settings, or the RSICRC_PYTHON
environment variable). Cancelling stops it; running again with the same output resumes."""


LATER_HELP = ("more dates after AFTER for a time series, oldest first: each raster is captioned against the "
              "one before it on the same tiles (interval 1 is AFTER to the first of these, and so on)")


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


def option_parameter(name, opt, default):
    """The Processing parameter of one run option (pipeline/caption_params.py), named NAME."""
    key = name.upper()
    # An advanced option may be left out (its default applies), so that graphical models saved
    # before the option existed still validate and run.
    optional = opt.advanced
    if opt.kind == "bool":
        param = QgsProcessingParameterBoolean(key, opt.label, defaultValue=default, optional=optional)
    elif opt.kind in ("int", "float"):
        kind = NUMBER_INTEGER if opt.kind == "int" else NUMBER_DOUBLE
        bounds = {k: v for k, v in (("minValue", opt.minimum), ("maxValue", opt.maximum)) if v is not None}
        param = QgsProcessingParameterNumber(key, opt.label, kind, default, optional=optional or default is None,
                                             **bounds)
    elif opt.kind == "texts":
        param = QgsProcessingParameterString(key, f"{opt.label}, one a line", multiLine=True, optional=True)
    elif opt.kind == "raster_output":
        param = QgsProcessingParameterRasterDestination(key, opt.label, optional=True, createByDefault=False)
    elif opt.kind == "extent":
        param = QgsProcessingParameterExtent(key, opt.label, optional=True)
    elif opt.kind == "area":
        # Processing's own source widget: any polygon layer, "selected features only" included.
        param = QgsProcessingParameterFeatureSource(key, opt.label, [SOURCE_POLYGONS], optional=True)
    elif opt.kind in ("device", "choice"):
        choices = option_choices(opt)
        param = QgsProcessingParameterEnum(key, opt.label, options=choices, defaultValue=choices.index(default),
                                           optional=optional)
    elif opt.kind == "text" and name in ("model", "clip_model"):
        param = QgsProcessingParameterString(
            key, f"{opt.label} (hub id or folder; empty: the plugin settings, else the default)", optional=True)
    else:
        param = QgsProcessingParameterString(key, opt.label, defaultValue=default, optional=True)
    if opt.advanced:
        param.setFlags(param.flags() | PARAMETER_ADVANCED)
    param.setHelp(opt.help)
    return param


def option_choices(opt):
    """The values of an enumerated option, in the order of its Processing enum."""
    return list(DEVICES) if opt.kind == "device" else list(opt.choices)


def option_value(alg, name, opt, parameters, context, feedback=None):
    """The value of one run option's parameter; None where the option was left empty."""
    key = name.upper()
    if opt.kind == "bool":
        return alg.parameterAsBool(parameters, key, context)
    if opt.kind in ("int", "float") and parameters.get(key) is None:
        return None  # left out: the command's default, which an optional number without one cannot hold
    if opt.kind == "int":
        return alg.parameterAsInt(parameters, key, context)
    if opt.kind == "float":
        return alg.parameterAsDouble(parameters, key, context)
    if opt.kind == "texts":
        return caption_job.parse_queries(alg.parameterAsString(parameters, key, context))
    if opt.kind in ("device", "choice"):
        return option_choices(opt)[alg.parameterAsEnum(parameters, key, context)]
    if opt.kind in ("raster_output", "extent", "area") and parameters.get(key) in (None, ""):
        return None
    if opt.kind == "raster_output":
        return alg.parameterAsOutputLayer(parameters, key, context).strip() or None
    if opt.kind == "extent":
        return extent_text(alg.parameterAsExtent(parameters, key, context),
                           alg.parameterAsExtentCrs(parameters, key, context))
    if opt.kind == "area":
        # A file the worker can read: the layer's own, or its (selected) features written to a temporary GeoPackage.
        path, layer_name = alg.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, key, context, ["gpkg", "shp", "geojson"], "gpkg", feedback or QgsProcessingFeedback())
        return f"{path}|layername={layer_name}" if layer_name else path
    return alg.parameterAsString(parameters, key, context).strip() or None


class CaptionChangesAlgorithm(QgsProcessingAlgorithm):
    BEFORE, AFTER, LATER, OUTPUT = "BEFORE", "AFTER", "LATER", "OUTPUT"
    FEATURES, SKIPPED = "FEATURES", "SKIPPED"
    HEATMAP = "HEATMAP"  # the --heatmap option's raster destination (pipeline/caption_params.py)

    def createInstance(self):
        return CaptionChangesAlgorithm()

    def name(self):
        return "captionchanges"

    def displayName(self):
        return "Caption changes between two rasters"

    def shortHelpString(self):
        return CAPTION_HELP

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.BEFORE, "BEFORE raster"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.AFTER, "AFTER raster"))
        later = QgsProcessingParameterMultipleLayers(
            self.LATER, "Later rasters, oldest first (a time series)", SOURCE_RASTER, optional=True)
        later.setHelp(LATER_HELP)
        self.addParameter(later)
        for name, opt, default in form_options():
            self.addParameter(option_parameter(name, opt, default))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT, "Captioned changes", SOURCE_POLYGONS))
        self.addOutput(QgsProcessingOutputNumber(self.FEATURES, "Tiles captioned"))
        self.addOutput(QgsProcessingOutputNumber(self.SKIPPED, "Tiles skipped"))

    def later_layers(self, parameters, context):
        """The LATER rasters in the order given; BadParameter names one that cannot be opened
        (Processing would drop it from the list, and the series would silently skip a date)."""
        given = parameters.get(self.LATER)
        if given in (None, "", []):
            return []
        layers = []
        for index, entry in enumerate(given if isinstance(given, (list, tuple)) else [given], start=2):
            found = self.parameterAsLayerList({self.LATER: entry}, self.LATER, context)
            if not found:
                raise caption_job.BadParameter(f"{pair_checks.date_role(index)} (LATER): {entry} is not a "
                                               "raster layer QGIS can open.")
            layers += found
        return layers

    def processAlgorithm(self, parameters, context, feedback):
        try:
            values = {name: option_value(self, name, opt, parameters, context, feedback)
                      for name, opt, _ in form_options()}
            resolution = values.get("target_resolution")
            dates = [self.parameterAsRasterLayer(parameters, self.BEFORE, context),
                     self.parameterAsRasterLayer(parameters, self.AFTER, context), *self.later_layers(parameters, context)]
            values["before"] = caption_job.raster_path(dates[0], "BEFORE", resolution)
            values["after"] = caption_job.raster_path(dates[1], "AFTER", resolution)
            values["later"] = caption_job.later_paths(dates[2:], resolution)
            login = caption_job.worker_login(dates)
            destination = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
            values["output"] = output = caption_job.output_path(destination)
            args = caption_job.caption_args(values)
        except caption_job.BadParameter as exc:
            raise QgsProcessingException(str(exc)) from None

        def on_event(event):
            kind = event["event"]
            if kind == "start":
                feedback.pushInfo(f"Captioning {event.get('total')} tiles into {event.get('output')}")
            percent = protocol.progress_percent(event)
            if percent is not None:
                feedback.setProgress(percent)
            elif kind == "warning":
                feedback.pushWarning(event.get("message", ""))

        try:
            result = caption_job.run_caption_job(args, on_event=on_event,
                                             is_canceled=feedback.isCanceled,
                                             on_log=feedback.pushDebugInfo, env=login)
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
            retarget_loading(context, destination, uri, StyleResultLayer(when_view=True))
        results = {self.OUTPUT: uri, self.FEATURES: done.get("features"), self.SKIPPED: done.get("skipped")}
        heatmap = values.get("heatmap")
        if heatmap:
            results[self.HEATMAP] = heatmap
            if context.willLoadLayerOnCompletion(heatmap):
                details = context.layerToLoadOnCompletionDetails(heatmap)
                details.name = "Where changed"
                details.setPostProcessor(StyleHeatmapLayer(output))
        return results
