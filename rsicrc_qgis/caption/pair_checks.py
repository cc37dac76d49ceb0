"""Quick checks of the dates of a run (BEFORE, AFTER, later ones) from the QGIS layers, shown in
the dialog at once.

They mirror the pipeline's own checks (pipeline/raster/pair_plan.py), which still run in the child
and have the last word; here they only spare the analyst a run that is bound to fail.
"""
import math
from dataclasses import dataclass

from qgis.core import QgsCoordinateTransform, QgsProject, QgsRectangle

from ...pipeline.raster.grid_rules import PIXEL_SIZE_RTOL
from ..qgis_enums import ALPHA_BAND

OK, WARN, ERROR = "ok", "warning", "error"


@dataclass(frozen=True)
class Check:
    level: str
    text: str


def _colour_bands(layer):
    provider = layer.dataProvider()
    return [b for b in range(1, layer.bandCount() + 1) if provider.colorInterpretation(b) != ALPHA_BAND]


def file_crs(layer):
    """The CRS the raster's file declares, which rsicrc uses; the layer's may be a user's override."""
    return layer.dataProvider().crs()


def _crs_name(crs):
    return crs.authid() or crs.description() or "custom"


def date_role(index, layer=None):
    """How messages name date `index` (0-based) of a run: BEFORE, AFTER, then 'Date 3 "name"'."""
    if index < 2:
        return ("BEFORE", "AFTER")[index]
    name = layer.name() if layer is not None else ""
    return f'Date {index + 1} "{name}"' if name else f"Date {index + 1}"


def _layer_checks(role, layer, bands):
    """What one date must be on its own: a GDAL raster with a CRS and the bands asked for (a web
    layer is read through its GDAL description: the worker checks it)."""
    if layer.providerType() == "wms":
        return [Check(WARN, f"{role} is a web layer: rsicrc reads it through GDAL at the zoom level nearest "
                            "0.5 m pixels, and only inside the Area chosen below (not the whole overlap).")]
    if layer.providerType() != "gdal":
        return [Check(ERROR, f"{role} is a {layer.providerType()} layer; rsicrc reads raster files.")]
    checks = []
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
    return checks


def _grid_checks(before, other, role, reproject):
    """`other` against BEFORE's grid, as the pipeline checks every date against the first."""
    checks = []
    level = WARN if reproject else ERROR
    hint = (f"{role} will be reprojected onto BEFORE's grid." if reproject
            else f"turn on reprojection of {role} onto BEFORE's grid.")
    before_crs, other_crs = file_crs(before), file_crs(other)
    if before_crs != other_crs:
        checks.append(Check(level, f"CRS differ (BEFORE {_crs_name(before_crs)}, "
                                   f"{role} {_crs_name(other_crs)}): {hint}"))
    bx, by = before.rasterUnitsPerPixelX(), before.rasterUnitsPerPixelY()
    ox, oy = other.rasterUnitsPerPixelX(), other.rasterUnitsPerPixelY()
    if before_crs == other_crs and not (math.isclose(ox, bx, rel_tol=PIXEL_SIZE_RTOL)
                                            and math.isclose(oy, by, rel_tol=PIXEL_SIZE_RTOL)):
        checks.append(Check(level, f"Pixel sizes differ (BEFORE {bx:g}, {role} {ox:g}): {hint}"))
    return checks


def _extent_on(before, other):
    """`other`'s extent in BEFORE's file CRS (providers' extents: the files', whatever the layers say)."""
    extent = other.dataProvider().extent()
    if file_crs(other) != file_crs(before):
        xform = QgsCoordinateTransform(file_crs(other), file_crs(before), QgsProject.instance())
        extent = xform.transformBoundingBox(extent)
    return QgsRectangle(extent)


def check_pair(before, after, bands=None, tile_size=256, reproject=False):
    """List of Check; any ERROR means the run would fail."""
    return check_dates([before, after], bands, tile_size, reproject)


def check_dates(layers, bands=None, tile_size=256, reproject=False):
    """The checks of a run on `layers` (BEFORE, AFTER, later dates oldest first): every date on
    its own and against BEFORE, then the area they all share. Any ERROR means the run would fail."""
    checks = []
    for index, layer in enumerate(layers):
        if layer is None or not layer.isValid():
            return [Check(ERROR, f"{date_role(index, layer)}: choose a valid raster layer.")]
        checks += _layer_checks(date_role(index, layer), layer, bands)
    if any(c.level == ERROR for c in checks):
        return checks
    before = layers[0]
    # A series refuses a date repeated in a row (the pipeline does); a pair of one file only warns.
    first = 1 if len(layers) > 2 else len(layers)
    for index, layer in enumerate(layers[first:], start=first):
        if _source_file(layer) == _source_file(layers[index - 1]):
            checks.append(Check(ERROR, f"{date_role(index, layer)} is the same file as the date before it "
                                       f"({_source_file(layer)}); a series needs a new date each step."))
    if any(c.level == ERROR for c in checks) or any(layer.providerType() == "wms" for layer in layers):
        return checks
    overlap = QgsRectangle(before.dataProvider().extent())
    for index, layer in enumerate(layers[1:], start=1):
        role = date_role(index, layer)
        checks += _grid_checks(before, layer, role, reproject)
        try:
            overlap = overlap.intersect(_extent_on(before, layer))
        except Exception:  # noqa: BLE001 - a CRS pair proj cannot relate: say so, don't crash
            checks.append(Check(ERROR, f"{role}'s extent cannot be transformed into BEFORE's CRS."))
            return checks
        if overlap.isEmpty() or overlap.width() <= 0 or overlap.height() <= 0:
            checks.append(Check(ERROR, "The two rasters do not overlap." if len(layers) == 2 else
                                f"{role} does not overlap the area the dates before it share."))
            return checks
    bx, by = before.rasterUnitsPerPixelX(), before.rasterUnitsPerPixelY()
    cols, rows = overlap.width() / bx, overlap.height() / by
    if cols < tile_size or rows < tile_size:
        checks.append(Check(ERROR, f"The overlap is {cols:.0f} x {rows:.0f} pixels, smaller than "
                                   f"one {tile_size} px tile; choose a smaller tile size."))
        return checks
    tiles = math.ceil(cols / tile_size) * math.ceil(rows / tile_size)
    share = overlap.area() / max(before.dataProvider().extent().area(), 1e-12)
    intervals = f", {len(layers) - 1} intervals each" if len(layers) > 2 else ""
    checks.append(Check(OK, f"Same place: the overlap is {cols:.0f} x {rows:.0f} pixels "
                            f"({share:.0%} of BEFORE), about {tiles} tile(s) of {tile_size} px{intervals}."))
    return checks


def _source_file(layer):
    return layer.source().split("|")[0]


def blocking(checks):
    return any(c.level == ERROR for c in checks)
