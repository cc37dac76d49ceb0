from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .caption_algorithm import CaptionChangesAlgorithm
from .search_algorithm import SearchChangesAlgorithm
from .train_algorithm import TrainModelAlgorithm

ICON = Path(__file__).resolve().parents[2] / "resources" / "icons" / "rsicrc.svg"


class RsicrcProvider(QgsProcessingProvider):
    def id(self):
        return "rsicrc"

    def name(self):
        return "RSICRC"

    def longName(self):
        return "RSICRC change captioning"

    def icon(self):
        return QIcon(str(ICON))

    def svgIconPath(self):
        return str(ICON)

    def loadAlgorithms(self):
        self.addAlgorithm(CaptionChangesAlgorithm())
        self.addAlgorithm(SearchChangesAlgorithm())
        self.addAlgorithm(TrainModelAlgorithm())

    # rsicrc writes GeoPackages itself: temporary outputs must be .gpkg files, never memory.
    def supportedOutputVectorLayerExtensions(self):
        return ["gpkg"]

    def defaultVectorFileExtension(self, hasGeometry=True):  # noqa: N803 - Qt signature
        return "gpkg"

    def supportsNonFileBasedOutput(self):
        return False
