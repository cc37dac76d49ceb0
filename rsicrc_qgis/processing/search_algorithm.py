from qgis.core import (QgsFeature, QgsField, QgsFields, QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingParameterBoolean, QgsProcessingParameterEnum, QgsProcessingParameterFeatureSink,
                       QgsProcessingParameterNumber, QgsProcessingParameterString, QgsProcessingParameterVectorLayer,
                       QgsProject, QgsVectorLayerFeatureSource)
from qgis.PyQt.QtCore import QVariant

from .. import settings
from ...pipeline.scores import top_indices
from ..layers import result_layer
from ..qgis_enums import FAST_INSERT, NUMBER_INTEGER, SOURCE_POLYGONS
from ..search import core as search_core
from ..search.layer_search import SearchProblem, check_all_read, check_score_field
from ..worker.environment import EnvironmentProblem
from ..worker.process import Canceled
from ..worker.serve_client import WorkerError, shared_worker
from .layer_post_processor import StyleResultLayer

SEARCH_HELP = """Scores every tile of a layer made by "Caption changes between two rasters" (or by
`rsicrc caption`) against a text, from the embeddings stored in the layer: no image is read
again. The output is a copy of the layer with the score field; the TOP best tiles are
selected in the input layer and in the output.

Method "RSICRC" compares with the captioning model's text embedding (English, the model's
vocabulary; unknown words are reported). "Multilingual (RS-M-CLIP)" needs a layer captioned
with RS-M-CLIP embeddings; it compares with the BEFORE or AFTER image, or with "appeared"
ranks what matches the text after but not before."""

METHODS = ("RSICRC (caption model)", "Multilingual (RS-M-CLIP)")
WHEN = ("after", "before")


def select_expression(tile_ids):
    """The best tiles as an expression on tile_id, which the output keeps (its fids may not)."""
    if not tile_ids:
        return None
    return f'"tile_id" IN ({", ".join(str(int(t)) for t in tile_ids)})'


class SearchChangesAlgorithm(QgsProcessingAlgorithm):
    INPUT, QUERY, FIELD, TOP = "INPUT", "QUERY", "FIELD", "TOP"
    METHOD, WHEN, APPEARED, OUTPUT = "METHOD", "WHEN", "APPEARED", "OUTPUT"

    def __init__(self):
        super().__init__()
        self._select = self._prepared = self._layer = self._field = self._problem = self._copy_source = None

    def createInstance(self):
        return SearchChangesAlgorithm()

    def name(self):
        return "searchchanges"

    def displayName(self):
        return "Search changes by text"

    def shortHelpString(self):
        return SEARCH_HELP

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.INPUT, "Result layer (from Caption changes)", [SOURCE_POLYGONS]))
        self.addParameter(QgsProcessingParameterString(self.QUERY, "Text to look for"))
        self.addParameter(QgsProcessingParameterString(
            self.FIELD, "Score field", defaultValue=settings.DEFAULT_SEARCH_FIELD))
        self.addParameter(QgsProcessingParameterNumber(
            self.TOP, "Number of best tiles to select", NUMBER_INTEGER,
            10, minValue=1))
        self.addParameter(QgsProcessingParameterEnum(
            self.METHOD, "Method", options=list(METHODS), defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            self.WHEN, "RS-M-CLIP: compare with the image", options=list(WHEN), defaultValue=0))
        self.addParameter(QgsProcessingParameterBoolean(
            self.APPEARED, "RS-M-CLIP: rank what appeared (matches now, not before)",
            defaultValue=False))
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, "Scored changes", SOURCE_POLYGONS))

    def prepareAlgorithm(self, parameters, context, feedback):
        # The main thread: the only place to touch the project layer. processAlgorithm (a worker
        # thread) reads the snapshot taken here.
        # A problem found here is raised by processAlgorithm, so that every face (toolbox,
        # processing.run, qgis_process) reports its message rather than a generic failure.
        self._problem = None
        try:
            self._prepare(parameters, context)
        except QgsProcessingException as exc:
            self._problem = str(exc)
        return True

    def _prepare(self, parameters, context):
        layer = self.parameterAsVectorLayer(parameters, self.INPUT, context)
        mode = (search_core.MODE_CLIP if self.parameterAsEnum(parameters, self.METHOD, context)
                else search_core.MODE_CAPTION)
        field_name = self.parameterAsString(parameters, self.FIELD, context).strip()
        if layer is None:
            raise QgsProcessingException("INPUT: choose a result layer.")
        if not field_name or not field_name.replace("_", "").isalnum():
            raise QgsProcessingException(f"FIELD: \"{field_name}\" is not a usable field name "
                                         "(letters, digits and _).")
        try:
            check_score_field(layer.fields(), field_name, layer.name())
            self._prepared = search_core.prepare(layer, None, mode)
            # The copy into OUTPUT runs in the worker thread: from a snapshot, even of an edited layer.
            self._copy_source = QgsVectorLayerFeatureSource(layer)
        except (result_layer.NotAResultLayer, SearchProblem) as exc:
            raise QgsProcessingException(str(exc)) from None
        self._layer = (layer.id(), layer.name(), layer.wkbType(), layer.sourceCrs())
        self._field = field_name

    def processAlgorithm(self, parameters, context, feedback):
        if self._problem:
            raise QgsProcessingException(self._problem)
        prepared, field_name = self._prepared, self._field
        layer_id, layer_name, wkb_type, crs = self._layer
        text = self.parameterAsString(parameters, self.QUERY, context)
        top = self.parameterAsInt(parameters, self.TOP, context)
        when = WHEN[self.parameterAsEnum(parameters, self.WHEN, context)]
        appeared = self.parameterAsBool(parameters, self.APPEARED, context)
        feedback.pushInfo(f"Scoring the tiles of \"{layer_name}\" against \"{text}\"")
        try:
            worker = shared_worker(device=settings.device())
            outcome = search_core.score_features(prepared, text, worker, when, appeared,
                                                 is_canceled=feedback.isCanceled)
        except Canceled:
            raise QgsProcessingException("Cancelled.") from None
        except (SearchProblem, WorkerError, EnvironmentProblem) as exc:
            raise QgsProcessingException(str(exc)) from None
        if outcome.unknown_words:
            feedback.pushWarning("Words the model does not know (ignored): "
                                 + ", ".join(outcome.unknown_words))
        if outcome.skipped:
            feedback.pushWarning(f"{len(outcome.skipped)} features have no usable embedding; "
                                 "their score is empty.")
        feedback.setProgress(50)

        fields = QgsFields(prepared.fields)
        if fields.indexOf(field_name) < 0:
            fields.append(QgsField(field_name, QVariant.Double))
        sink, dest = self.parameterAsSink(parameters, self.OUTPUT, context, fields, wkb_type, crs)
        if sink is None:
            raise QgsProcessingException("OUTPUT cannot be created.")
        score_of = {fid: float(s) for fid, s in zip(outcome.fids, outcome.scores)}
        score_idx = fields.indexOf(field_name)
        best_fids = [outcome.fids[i] for i in top_indices(outcome.scores, top)]
        best = {fid: None for fid in best_fids}  # fid -> the feature, kept while copying
        copied = 0
        for feature in self._copy_source.getFeatures():
            copied += 1
            if feedback.isCanceled():
                raise QgsProcessingException("Cancelled.")
            attrs = list(feature.attributes())
            attrs += [None] * (fields.count() - len(attrs))
            attrs[score_idx] = score_of.get(feature.id())
            out = QgsFeature(fields)
            out.setGeometry(feature.geometry())
            out.setAttributes(attrs)
            sink.addFeature(out, FAST_INSERT)
            if feature.id() in best:
                best[feature.id()] = feature
        try:
            check_all_read(layer_name, copied, prepared.expected)
        except SearchProblem as exc:
            raise QgsProcessingException(str(exc)) from None
        has = {name: fields.indexOf(name) >= 0 for name in ("caption", "tile_id")}
        for rank, fid in enumerate(best_fids[:5], 1):
            feedback.pushInfo(f"{rank}. {score_of[fid]:.3f}  {best[fid]['caption'] if has['caption'] else fid}")
        self._select = (layer_id, best_fids)
        if context.willLoadLayerOnCompletion(dest):
            tile_ids = [best[f]["tile_id"] for f in best_fids] if has["tile_id"] else None
            details = context.layerToLoadOnCompletionDetails(dest)
            details.setPostProcessor(StyleResultLayer(select_expression(tile_ids)))
        feedback.setProgress(100)
        return {self.OUTPUT: dest}

    def postProcessAlgorithm(self, context, feedback):
        # Runs on the main thread: the only safe place to change a project layer's selection.
        if self._select:
            layer_id, fids = self._select
            layer = QgsProject.instance().mapLayer(layer_id) or context.getMapLayer(layer_id)
            if layer is not None:
                layer.selectByIds(fids)
        return {}
