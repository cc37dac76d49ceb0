"""The dialog's "Area": the whole overlap, the map view, or the features of a polygon layer (the
selected ones if asked), turned into the run's --extent or --area."""
import os
import tempfile

from qgis.core import QgsProject, QgsVectorFileWriter
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QWidget

from ..qgis_enums import POLYGON_LAYERS, WRITER_NO_ERROR

CHOICES = ("Whole overlap", "Current map view", "Features of a layer")
WHOLE, VIEW, FEATURES = range(3)


def extent_text(rect, crs):
    """A QgsRectangle in `crs` as --extent's XMIN,YMIN,XMAX,YMAX[,CRS] (no CRS when it is invalid)."""
    bounds = ",".join(repr(v) for v in (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()))
    return f"{bounds},{crs.authid() or crs.toWkt()}" if crs.isValid() else bounds


class AreaError(ValueError):
    """The chosen area cannot be used; the message says why."""


class AreaChooser(QWidget):
    changed = pyqtSignal()

    def __init__(self, canvas=None, parent=None):
        super().__init__(parent)
        self.canvas = canvas
        self.choice = QComboBox()
        self.choice.addItems(CHOICES)
        self.choice.setObjectName("areaChoice")
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(POLYGON_LAYERS)
        self.selected_only = QCheckBox("Selected features only")
        self.selected_only.setChecked(True)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for widget, stretch in ((self.choice, 0), (self.layer_combo, 1), (self.selected_only, 0)):
            row.addWidget(widget, stretch)
        self.setToolTip("Caption only the tiles that touch this area; a web layer needs one")
        self.choice.currentIndexChanged.connect(self._changed)
        self.layer_combo.layerChanged.connect(self._changed)
        self.selected_only.toggled.connect(self._changed)
        self._changed()

    def _changed(self, *_):
        features = self.choice.currentIndex() == FEATURES
        self.layer_combo.setEnabled(features)
        self.selected_only.setEnabled(features)
        self.changed.emit()

    def is_whole(self):
        return self.choice.currentIndex() == WHOLE

    def values(self):
        """{"extent": ...} or {"area": ...} for the run (empty for the whole overlap); AreaError."""
        index = self.choice.currentIndex()
        if index == VIEW:
            if self.canvas is None:
                raise AreaError("there is no map view to take the extent of")
            return {"extent": extent_text(self.canvas.extent(), self.canvas.mapSettings().destinationCrs())}
        if index == FEATURES:
            return {"area": self._features_file()}
        return {}

    def _features_file(self):
        layer = self.layer_combo.currentLayer()
        if layer is None:
            raise AreaError("choose a polygon layer")
        selected = self.selected_only.isChecked()
        if selected and layer.selectedFeatureCount() == 0:
            raise AreaError(f"layer \"{layer.name()}\" has no selected feature (select some, or untick "
                            "\"Selected features only\")")
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.onlySelectedFeatures = selected
        handle, path = tempfile.mkstemp(prefix="rsicrc-area-", suffix=".gpkg")
        os.close(handle)
        os.remove(path)  # the writer creates it
        result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, QgsProject.instance().transformContext(),
                                                           options)
        if result[0] != WRITER_NO_ERROR:
            raise AreaError(f"the features of \"{layer.name()}\" cannot be written for the run ({result[1]})")
        return path
