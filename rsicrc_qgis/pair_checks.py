"""Quick checks of a BEFORE/AFTER pair from the QGIS layers, shown in the dialog at once.

They mirror the pipeline's own checks (pipeline/raster_pair.py), which still run in the child
and have the last word; here they only spare the analyst a run that is bound to fail.
"""
import math
from dataclasses import dataclass

from qgis.core import QgsCoordinateTransform, QgsProject, QgsRasterDataProvider, QgsRectangle

OK, WARN, ERROR = "ok", "warning", "error"
PIXEL_SIZE_RTOL = 1e-4


@dataclass(frozen=True)
class Check:
    level: str
    text: str


def _colour_bands(layer):
    provider = layer.dataProvider()
    alpha = QgsRasterDataProvider.ColorInterpretation.AlphaBand \
        if hasattr(QgsRasterDataProvider, "ColorInterpretation") else 6
    return [b for b in range(1, layer.bandCount() + 1)
            if provider.colorInterpretation(b) != alpha]


def file_crs(layer):
    """The CRS the raster's file declares, which rsicrc uses; the layer's may be a user's override."""
    return layer.dataProvider().crs()


def _crs_name(crs):
    return crs.authid() or crs.description() or "custom"


def check_pair(before, after, bands=None, tile_size=256, reproject=False):
    """List of Check; any ERROR means the run would fail."""
    checks = []
    for role, layer in (("BEFORE", before), ("AFTER", after)):
        if layer is None or not layer.isValid():
            return [Check(ERROR, f"{role}: choose a valid raster layer.")]
        if layer.providerType() != "gdal":
            checks.append(Check(ERROR, f"{role} is a {layer.providerType()} layer; rsicrc reads "
                                       "raster files."))
            continue
        crs = file_crs(layer)
        if not crs.isValid():
            checks.append(Check(ERROR, f"{role}'s file has no coordinate reference system"
                                       + (f" (QGIS shows it in {_crs_name(layer.crs())}, but rsicrc reads the "
                                          "file; assign the CRS to the file, e.g. with Assign Projection)."
                                          if layer.crs().isValid() else ".")))
        elif layer.crs() != crs:
            checks.append(Check(WARN, f"{role}'s layer CRS in QGIS ({_crs_name(layer.crs())}) is not its file's "
                                      f"({_crs_name(crs)}); rsicrc uses the file's."))
        if bands:
            if max(bands) > layer.bandCount():
                checks.append(Check(ERROR, f"{role} has {layer.bandCount()} band(s); bands "
                                           f"{','.join(map(str, bands))} ask for band {max(bands)}."))
        elif len(_colour_bands(layer)) != 3:
            checks.append(Check(ERROR, f"{role} has {len(_colour_bands(layer))} non-alpha band(s); "
                                       "choose three bands for red, green, blue."))
    if any(c.level == ERROR for c in checks):
        return checks
    grid_level = WARN if reproject else ERROR
    grid_hint = ("AFTER will be reprojected onto BEFORE's grid." if reproject
                 else "turn on reprojection of AFTER onto BEFORE's grid.")
    before_crs, after_crs = file_crs(before), file_crs(after)
    if before_crs != after_crs:
        checks.append(Check(grid_level, f"CRS differ (BEFORE {_crs_name(before_crs)}, "
                                        f"AFTER {_crs_name(after_crs)}): {grid_hint}"))
    bx, by = before.rasterUnitsPerPixelX(), before.rasterUnitsPerPixelY()
    ax, ay = after.rasterUnitsPerPixelX(), after.rasterUnitsPerPixelY()
    if before_crs == after_crs and not (math.isclose(ax, bx, rel_tol=PIXEL_SIZE_RTOL)
                                            and math.isclose(ay, by, rel_tol=PIXEL_SIZE_RTOL)):
        checks.append(Check(grid_level, f"Pixel sizes differ (BEFORE {bx:g}, AFTER {ax:g}): "
                                        f"{grid_hint}"))
    # The extents are the providers' own, in the files' CRS whatever the layers' CRS says.
    after_extent = after.dataProvider().extent()
    if before_crs != after_crs:
        try:
            xform = QgsCoordinateTransform(after_crs, before_crs, QgsProject.instance())
            after_extent = xform.transformBoundingBox(after_extent)
        except Exception:  # noqa: BLE001 - a CRS pair proj cannot relate: say so, don't crash
            checks.append(Check(ERROR, "AFTER's extent cannot be transformed into BEFORE's CRS."))
            return checks
    overlap = QgsRectangle(before.dataProvider().extent()).intersect(after_extent)
    if overlap.isEmpty() or overlap.width() <= 0 or overlap.height() <= 0:
        checks.append(Check(ERROR, "The two rasters do not overlap."))
        return checks
    cols, rows = overlap.width() / bx, overlap.height() / by
    if cols < tile_size or rows < tile_size:
        checks.append(Check(ERROR, f"The overlap is {cols:.0f} x {rows:.0f} pixels, smaller than "
                                   f"one {tile_size} px tile; choose a smaller tile size."))
        return checks
    tiles = math.ceil(cols / tile_size) * math.ceil(rows / tile_size)
    share = overlap.area() / max(before.dataProvider().extent().area(), 1e-12)
    checks.append(Check(OK, f"Same place: the overlap is {cols:.0f} x {rows:.0f} pixels "
                            f"({share:.0%} of BEFORE), about {tiles} tile(s) of {tile_size} px."))
    return checks


def blocking(checks):
    return any(c.level == ERROR for c in checks)
