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


def check_pair(before, after, bands=None, tile_size=256, reproject=False):
    """List of Check; any ERROR means the run would fail."""
    checks = []
    for role, layer in (("BEFORE", before), ("AFTER", after)):
        if layer is None or not layer.isValid():
            return [Check(ERROR, f"{role}: choose a valid raster layer.")]
        if layer.providerType() != "gdal":
            checks.append(Check(ERROR, f"{role} is a {layer.providerType()} layer; rsicrc reads "
                                       "raster files."))
        if not layer.crs().isValid():
            checks.append(Check(ERROR, f"{role} has no coordinate reference system."))
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
    if before.crs() != after.crs():
        checks.append(Check(grid_level, f"CRS differ (BEFORE {before.crs().authid() or 'custom'}, "
                                        f"AFTER {after.crs().authid() or 'custom'}): {grid_hint}"))
    bx, by = before.rasterUnitsPerPixelX(), before.rasterUnitsPerPixelY()
    ax, ay = after.rasterUnitsPerPixelX(), after.rasterUnitsPerPixelY()
    if before.crs() == after.crs() and not (math.isclose(ax, bx, rel_tol=PIXEL_SIZE_RTOL)
                                            and math.isclose(ay, by, rel_tol=PIXEL_SIZE_RTOL)):
        checks.append(Check(grid_level, f"Pixel sizes differ (BEFORE {bx:g}, AFTER {ax:g}): "
                                        f"{grid_hint}"))
    after_extent = after.extent()
    if before.crs() != after.crs():
        try:
            xform = QgsCoordinateTransform(after.crs(), before.crs(), QgsProject.instance())
            after_extent = xform.transformBoundingBox(after_extent)
        except Exception:  # noqa: BLE001 - a CRS pair proj cannot relate: say so, don't crash
            checks.append(Check(ERROR, "AFTER's extent cannot be transformed into BEFORE's CRS."))
            return checks
    overlap = QgsRectangle(before.extent()).intersect(after_extent)
    if overlap.isEmpty() or overlap.width() <= 0 or overlap.height() <= 0:
        checks.append(Check(ERROR, "The two rasters do not overlap."))
        return checks
    cols, rows = overlap.width() / bx, overlap.height() / by
    if cols < tile_size or rows < tile_size:
        checks.append(Check(ERROR, f"The overlap is {cols:.0f} x {rows:.0f} pixels, smaller than "
                                   f"one {tile_size} px tile; choose a smaller tile size."))
        return checks
    tiles = math.ceil(cols / tile_size) * math.ceil(rows / tile_size)
    share = overlap.area() / max(before.extent().area(), 1e-12)
    checks.append(Check(OK, f"Same place: the overlap is {cols:.0f} x {rows:.0f} pixels "
                            f"({share:.0%} of BEFORE), about {tiles} tile(s) of {tile_size} px."))
    return checks


def blocking(checks):
    return any(c.level == ERROR for c in checks)
