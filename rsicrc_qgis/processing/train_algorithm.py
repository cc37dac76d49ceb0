"""rsicrc:trainmodel: `rsicrc train` in the worker, with Processing's progress and cancel."""
from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingParameterEnum,
                       QgsProcessingParameterFile, QgsProcessingParameterFolderDestination,
                       QgsProcessingParameterString)

from ...pipeline.caption_params import DEVICES, options
from ...pipeline.train.params import TrainParams
from .. import settings
from ..qgis_enums import FILE_BEHAVIOR_FILE, FILE_BEHAVIOR_FOLDER
from ..worker import protocol
from ..worker.environment import EnvironmentProblem
from ..worker.process import Canceled, CliFailure, run_cli
from .caption_algorithm import option_parameter, option_value

TRAIN_HELP = """Fine-tunes an RSICRC model on your own labelled pairs, with the official training objective
(caption cross-entropy plus the contrastive loss between pair and caption embeddings).

The data is a folder in LEVIR-CC's layout: an annotation JSON (records with split, changeflag and
five sentences each) and an images folder holding <filepath>/A/<filename> (before) and
<filepath>/B/<filename> (after). The 'train' split is learnt; after every epoch the 'val' split
chooses the best epoch and its BLEU and CIDEr are recorded. The output is a model folder that the
caption and search algorithms (and the RSICRC settings) accept as the model.

Cancelling stops the worker; running again with the same output goes on from the last saved step."""


class TrainModelAlgorithm(QgsProcessingAlgorithm):
    ANNOTATIONS, IMAGES, MODEL, DEVICE, OUTPUT = "ANNOTATIONS", "IMAGES", "MODEL", "DEVICE", "OUTPUT"

    def createInstance(self):
        return TrainModelAlgorithm()

    def name(self):
        return "trainmodel"

    def displayName(self):
        return "Fine-tune the model on your imagery"

    def shortHelpString(self):
        return TRAIN_HELP

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFile(self.ANNOTATIONS, "Annotation file (LEVIR-CC JSON)",
                                                     FILE_BEHAVIOR_FILE, extension="json"))
        self.addParameter(QgsProcessingParameterFile(self.IMAGES, "Images folder (<filepath>/A and /B)",
                                                     FILE_BEHAVIOR_FOLDER))
        self.addParameter(QgsProcessingParameterString(
            self.MODEL, "Model to start from (hub id or folder; empty: the plugin settings, else the default)",
            optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(DEVICES), defaultValue=0))
        for name, opt, default in options(TrainParams):
            self.addParameter(option_parameter(name, opt, default))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Trained model folder"))

    def _argv(self, parameters, context):
        output = self.parameterAsString(parameters, self.OUTPUT, context)
        model = self.parameterAsString(parameters, self.MODEL, context).strip() or settings.model_choice().value
        argv = ["train", "--annotations", self.parameterAsFile(parameters, self.ANNOTATIONS, context),
                "--images", self.parameterAsFile(parameters, self.IMAGES, context), "-o", output,
                "--device", DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)], "--progress", "json"]
        if model:
            argv += ["--model", model]
        for name, opt, _ in options(TrainParams):
            value = option_value(self, name, opt, parameters, context)
            if opt.kind == "bool":
                argv.append(opt.flag if value else "--no-" + opt.flag[2:])
            elif value is not None:
                argv += [opt.flag, str(value)]
        return argv, output

    def processAlgorithm(self, parameters, context, feedback):
        argv, output = self._argv(parameters, context)

        def on_event(event):
            if event["event"] == "start":
                feedback.pushInfo(f"Training {event.get('total')} steps into {event.get('output')}")
            percent = protocol.progress_percent(event)
            if percent is not None:
                feedback.setProgress(percent)
            elif event["event"] == "warning":
                feedback.pushInfo(event.get("message", ""))

        try:
            run_cli(argv, on_event=on_event, is_canceled=feedback.isCanceled, on_log=feedback.pushDebugInfo)
        except Canceled:
            raise QgsProcessingException(f"Cancelled. {output}.partial keeps the last saved step; run again with "
                                         "the same output to go on.") from None
        except (CliFailure, EnvironmentProblem) as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushInfo(f"Wrote the model folder {output}")
        return {self.OUTPUT: output}
