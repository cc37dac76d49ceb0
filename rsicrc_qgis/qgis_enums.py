"""The QGIS enum values the plugin uses, by the name the running QGIS has for each.

QGIS 3.22 has most of them unscoped on their classes (Qgis.Info, QgsProcessing.TypeRaster); later
releases moved them into scoped enums, most into Qgis (Qgis.MessageLevel.Info, 3.36's
Qgis.ProcessingSourceType.Raster), where an old name may even name another enum's value
(QgsPalLayerSettings.OverPoint is a LabelPredefinedPointPosition since 3.26), and QGIS 4 (PyQt6)
has only scoped names. Each value here is the first of its names, newest first, that this QGIS has.
"""
from qgis import core, gui

_MODULES = {"core": core, "gui": gui}


def first_of(*names):
    """The value of the first dotted name ("core.Qgis.MessageLevel.Info") that resolves."""
    for name in names:
        module, *path = name.split(".")
        value = _MODULES[module]
        try:
            for part in path:
                value = getattr(value, part)
        except AttributeError:
            continue
        return value
    raise AttributeError(f"this QGIS has none of {', '.join(names)}")


INFO = first_of("core.Qgis.MessageLevel.Info", "core.Qgis.Info")
WARNING = first_of("core.Qgis.MessageLevel.Warning", "core.Qgis.Warning")
CRITICAL = first_of("core.Qgis.MessageLevel.Critical", "core.Qgis.Critical")
SUCCESS = first_of("core.Qgis.MessageLevel.Success", "core.Qgis.Success")
NUMBER_INTEGER = first_of("core.Qgis.ProcessingNumberParameterType.Integer",
                          "core.QgsProcessingParameterNumber.Type.Integer", "core.QgsProcessingParameterNumber.Integer")
NUMBER_DOUBLE = first_of("core.Qgis.ProcessingNumberParameterType.Double",
                         "core.QgsProcessingParameterNumber.Type.Double", "core.QgsProcessingParameterNumber.Double")
PARAMETER_ADVANCED = first_of("core.Qgis.ProcessingParameterFlag.Advanced",
                              "core.QgsProcessingParameterDefinition.Flag.FlagAdvanced",
                              "core.QgsProcessingParameterDefinition.FlagAdvanced")
SOURCE_RASTER = first_of("core.Qgis.ProcessingSourceType.Raster", "core.QgsProcessing.SourceType.TypeRaster",
                         "core.QgsProcessing.TypeRaster")
SOURCE_POLYGONS = first_of("core.Qgis.ProcessingSourceType.VectorPolygon",
                           "core.QgsProcessing.SourceType.TypeVectorPolygon", "core.QgsProcessing.TypeVectorPolygon")
FAST_INSERT = first_of("core.QgsFeatureSink.Flag.FastInsert", "core.QgsFeatureSink.FastInsert")
POLYGON_LAYERS = first_of("core.Qgis.LayerFilter.PolygonLayer", "core.QgsMapLayerProxyModel.Filter.PolygonLayer",
                          "core.QgsMapLayerProxyModel.PolygonLayer")
WRITER_NO_ERROR = first_of("core.QgsVectorFileWriter.WriterError.NoError", "core.QgsVectorFileWriter.NoError")
RASTER_LAYERS = first_of("core.Qgis.LayerFilter.RasterLayer", "core.QgsMapLayerProxyModel.Filter.RasterLayer",
                         "core.QgsMapLayerProxyModel.RasterLayer")
NO_GEOMETRY = first_of("core.Qgis.FeatureRequestFlag.NoGeometry", "core.QgsFeatureRequest.Flag.NoGeometry",
                       "core.QgsFeatureRequest.NoGeometry")
SET_SELECTION = first_of("core.Qgis.SelectBehavior.SetSelection", "core.QgsVectorLayer.SelectBehavior.SetSelection",
                         "core.QgsVectorLayer.SetSelection")
BAND_MAXIMUM = first_of("core.Qgis.RasterBandStatistic.Max", "core.QgsRasterBandStats.Stats.Max",
                        "core.QgsRasterBandStats.Max")
RAMP_INTERPOLATED = first_of("core.Qgis.ShaderInterpolationMethod.Linear", "core.QgsColorRampShader.Type.Interpolated",
                             "core.QgsColorRampShader.Interpolated")
LABEL_OVER_POINT = first_of("core.Qgis.LabelPlacement.OverPoint", "core.QgsPalLayerSettings.Placement.OverPoint",
                            "core.QgsPalLayerSettings.OverPoint")
ALPHA_BAND = first_of("core.Qgis.RasterColorInterpretation.AlphaBand", "core.QgsRaster.ColorInterpretation.AlphaBand",
                      "core.QgsRaster.AlphaBand")
SAVE_FILE = first_of("gui.QgsFileWidget.StorageMode.SaveFile", "gui.QgsFileWidget.SaveFile")
TASK_CAN_CANCEL = first_of("core.QgsTask.Flag.CanCancel", "core.QgsTask.CanCancel")
POLYGON_GEOMETRY = first_of("core.Qgis.GeometryType.Polygon", "core.QgsWkbTypes.GeometryType.PolygonGeometry",
                            "core.QgsWkbTypes.PolygonGeometry")
WKT_PREFERRED_GDAL = first_of("core.Qgis.CrsWktVariant.PreferredGdal",
                              "core.QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED_GDAL",
                              "core.QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL")
FILE_BEHAVIOR_FILE = first_of("core.Qgis.ProcessingFileParameterBehavior.File",
                              "core.QgsProcessingParameterFile.Behavior.File", "core.QgsProcessingParameterFile.File")
FILE_BEHAVIOR_FOLDER = first_of("core.Qgis.ProcessingFileParameterBehavior.Folder",
                                "core.QgsProcessingParameterFile.Behavior.Folder",
                                "core.QgsProcessingParameterFile.Folder")
