"""The area of interest of a run (--extent, --area): its polygons on the working grid, the tiles
that touch them, and the fraction of each tile that lies inside.

A tile is captioned when its square touches the area; its feature keeps the whole square and
says in `area_fraction` how much of it is inside. The area is read once, reprojected onto the
working grid's CRS (densified first, so that a long straight edge bends as it should), and never
written back: the run metadata keeps it as WKT in its own CRS.
"""
import math
import re
from dataclasses import dataclass

import numpy as np

from ..caption_params import parse_extent
from ..errors import BadInput
from .sources import check_regular

# An area of more features than this is a whole data set picked by mistake (an --area-where left out).
MAX_AREA_FEATURES = 100_000
# Vertices added along each ring before reprojection: an edge bends at most 1/DENSIFY of the area's size.
DENSIFY = 256
_LAYERNAME = re.compile(r"^(?P<path>.*?)\|layername=(?P<layer>[^|]+)$")


@dataclass
class Area:
    geometry: object  # shapely (Multi)Polygon in the working grid's CRS
    source: str  # what the user gave: the --extent text or the --area file
    wkt: str  # the area as given, in its own CRS
    crs: str  # that CRS, as WKT

    def describe(self):
        """The area as the plan (and so the run's fingerprint) knows it: its shape, not the name of the
        file it came from (QGIS writes a layer's selected features to a new temporary file each run)."""
        return {"wkt": self.wkt, "crs": self.crs}

    def fractions(self, bounds):
        """The fraction of each (left, bottom, right, top) box inside the area, float64."""
        import shapely

        boxes = _boxes(bounds)
        inside = shapely.area(shapely.intersection(boxes, self.geometry))
        return np.clip(inside / np.maximum(shapely.area(boxes), 1e-300), 0.0, 1.0)

    def touches(self, bounds):
        """Whether each (left, bottom, right, top) box reaches inside the area (an edge shared is not enough)."""
        import shapely

        boxes = _boxes(bounds)
        return shapely.intersects(boxes, self.geometry) & ~shapely.touches(boxes, self.geometry)


def _boxes(bounds):
    import shapely

    bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    return shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3])


@dataclass(frozen=True)
class AreaSpec:
    """The run's area options: extent text, or an area file with its optional WHERE clause."""

    extent: str = None
    area: str = None
    where: str = None

    def __bool__(self):
        return bool(self.extent or self.area)


def area_spec(p):
    """The AreaSpec of CaptionParams `p`."""
    return AreaSpec(p.extent, p.area, p.area_where)


def read_area(spec, crs):
    """The Area of `spec` on CRS `crs` (rasterio CRS); BadInput naming the file or option at fault."""
    import shapely

    if spec.extent is not None:
        (xmin, ymin, xmax, ymax), crs_text = parse_extent(spec.extent)
        own_crs = _crs(crs_text, "--extent") if crs_text else crs
        geometry, source, path = shapely.box(xmin, ymin, xmax, ymax), spec.extent, None
    else:
        geometry, own_crs, path = _read_polygons(spec.area, spec.where)
        source = spec.area
    on_grid = _reproject(geometry, own_crs, crs, path or source)
    if on_grid.is_empty or on_grid.area <= 0:
        raise BadInput("leaves no area once reprojected onto BEFORE's CRS", path or f"--extent {source}")
    return Area(on_grid, source, shapely.to_wkt(geometry, rounding_precision=-1), own_crs.to_wkt())


def _crs(text, where):
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(text.strip())
    except CRSError:
        raise BadInput(f"{where}: {text.strip()!r} is not a CRS GDAL knows (e.g. EPSG:4326)") from None


def split_layer(text):
    """"FILE|layername=NAME" -> (FILE, NAME); "FILE" -> (FILE, None)."""
    match = _LAYERNAME.match(text)
    return (match.group("path"), match.group("layer")) if match else (text, None)


def _read_polygons(text, where):
    """(one valid shapely geometry of the polygons, their CRS, the file) of an --area source."""
    import pyogrio
    import shapely
    from pyogrio.errors import DataLayerError, DataSourceError, FieldError, GeometryError

    path, layer = split_layer(text)
    check_regular(path, "vector")
    try:
        meta, _, wkb, _ = pyogrio.raw.read(path, layer=layer, where=where, columns=[], read_geometry=True,
                                           force_2d=True, max_features=MAX_AREA_FEATURES + 1)
    except (DataSourceError, DataLayerError, FieldError, GeometryError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "cannot be read"
        if where and ("where" in reason.lower() or "sql" in reason.lower()):
            raise BadInput(f"--area-where {where!r} is not a WHERE clause this layer takes ({reason})", path) from None
        raise BadInput(f"cannot be read as a vector layer ({reason})", path) from None
    if len(wkb) > MAX_AREA_FEATURES:
        raise BadInput(f"has more than {MAX_AREA_FEATURES:,} features; select the area's with --area-where", path)
    geometries = [g for g in shapely.from_wkb([b for b in wkb if b is not None]) if g is not None and not g.is_empty]
    polygons = [g for g in geometries if g.geom_type in ("Polygon", "MultiPolygon")] + \
        [p for g in geometries if g.geom_type == "GeometryCollection" for p in g.geoms
         if p.geom_type in ("Polygon", "MultiPolygon")]
    if not polygons:
        kinds = sorted({g.geom_type for g in geometries})
        held = f"holds {', '.join(kinds)}" if kinds else "holds no geometry" + (" the --area-where selects" if where else "")
        raise BadInput(f"{held}; --area needs polygons", path)
    if meta.get("crs") is None:
        raise BadInput("has no coordinate reference system; --area needs one to place it on the rasters", path)
    merged = shapely.union_all(shapely.make_valid(np.array(polygons, dtype=object)))
    polygonal = shapely.get_parts(merged)
    return shapely.union_all([g for g in polygonal if g.geom_type in ("Polygon", "MultiPolygon")]), \
        _crs(meta["crs"], path), path


def _reproject(geometry, src_crs, dst_crs, name):
    import shapely
    from rasterio.errors import CRSError
    from rasterio.warp import transform_geom

    if src_crs == dst_crs:
        return geometry
    xmin, ymin, xmax, ymax = geometry.bounds
    step = max(xmax - xmin, ymax - ymin) / DENSIFY
    dense = shapely.segmentize(geometry, step) if step > 0 else geometry
    try:
        moved = shapely.geometry.shape(transform_geom(src_crs, dst_crs, shapely.geometry.mapping(dense)))
    except (CRSError, ValueError) as exc:
        raise BadInput(f"cannot be reprojected onto BEFORE's CRS ({exc})", name) from None
    coords = shapely.get_coordinates(moved)
    if not np.isfinite(coords).all():
        raise BadInput("lies outside what BEFORE's CRS can hold (its reprojection has no finite coordinates)", name)
    return shapely.make_valid(moved)


def area_window(grid, window, area, tile_size, overlap, name):
    """The part of `window` (col, row, w, h on `grid`) whose tiles cover the area: cut on the
    window's own tile lattice, so that a tile is the same square a run on the whole overlap makes;
    BadInput when the area lies outside `window`."""
    inv = ~grid.transform
    xmin, ymin, xmax, ymax = area.geometry.bounds
    cols, rows = zip(*(inv @ (x, y) for x, y in ((xmin, ymin), (xmax, ymax))))
    col0, col1 = max(window[0], math.floor(min(cols))), min(window[0] + window[2], math.ceil(max(cols)))
    row0, row1 = max(window[1], math.floor(min(rows))), min(window[1] + window[3], math.ceil(max(rows)))
    if col1 <= col0 or row1 <= row0:
        left, top = grid.transform @ (window[0], window[1])
        right, bottom = grid.transform @ (window[0] + window[2], window[1] + window[3])
        raise BadInput(f"the area ({_bounds((xmin, ymin, xmax, ymax))}) lies outside the rasters' overlap "
                       f"({_bounds((left, bottom, right, top))}, in {grid.crs.to_string()})", name)
    stride = tile_size - overlap
    col0, col1 = _on_lattice(col0, col1, window[0], window[0] + window[2], tile_size, stride)
    row0, row1 = _on_lattice(row0, row1, window[1], window[1] + window[3], tile_size, stride)
    return col0, row0, col1 - col0, row1 - row0


def _on_lattice(lo, hi, start, stop, size, stride):
    """[lo, hi) grown to whole tiles of the lattice start + k * stride, within [start, stop)."""
    first = start + (lo - start) // stride * stride
    last = start + max(0, -(-(hi - start - size) // stride)) * stride  # the first tile ending at or past hi
    return first, min(stop, max(last + size, first + size))


def _bounds(b):
    return ", ".join(f"{v:.6g}" for v in b)


def tile_mask(grid, tiles, area):
    """Per tile id of `tiles` (a TileGrid), whether its square touches the area; a tile row at a time."""
    keep = np.zeros(len(tiles.rows) * len(tiles.cols), dtype=bool)
    cols = np.fromiter(tiles.cols, dtype=np.int64)
    t = grid.transform
    for i, row in enumerate(tiles.rows):
        lefts, rights = t.c + cols * t.a, t.c + (cols + tiles.size) * t.a
        top, bottom = t.f + row * t.e, t.f + (row + tiles.size) * t.e
        bounds = np.column_stack([np.minimum(lefts, rights), np.full(len(cols), min(top, bottom)),
                                  np.maximum(lefts, rights), np.full(len(cols), max(top, bottom))])
        keep[i * len(cols):(i + 1) * len(cols)] = area.touches(bounds)
    return keep
