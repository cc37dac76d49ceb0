"""GDAL descriptions of web imagery: an XYZ/TMS tile URL or a WMS layer as a `<GDAL_WMS>` file, a
WMTS layer as a `WMTS:` connection string. The QGIS side turns a project's web layer into one of
these for the worker; they are also what a user may write by hand.

Standard library only (QGIS's own Python imports it). A description file is named by the hash of
its text in the user cache, written once: the same layer gives the same file, so a resumed run
finds the same input, and GDAL's tile cache (<Cache/>, in the user cache's gdalwmscache) spares
it the downloads.
"""
import hashlib
import math
import os
import re
from pathlib import Path
from html import escape

from ...model.user_cache import user_cache_dir

WORLD = 20037508.342789244  # EPSG:3857's half width, metres
# The ground pixel the released model was trained on (LEVIR-CC): the default zoom level is the
# finest one whose pixel is not finer than this.
TRAINING_PIXEL_M = 0.5
XYZ_TILE_PX = 256
_XYZ_TOKENS = {"{z}": "${z}", "{x}": "${x}", "{y}": "${y}", "{-y}": "${y}"}


class WebSourceError(ValueError):
    """A web layer that cannot be described for GDAL; the message says why, in one line."""


def xyz_zoom(target_m=None, zmin=0, zmax=19):
    """The finest zoom level in [zmin, zmax] whose EPSG:3857 pixel is not finer than `target_m`."""
    target = target_m or TRAINING_PIXEL_M
    level = math.floor(math.log2(2 * WORLD / XYZ_TILE_PX / target))
    return max(int(zmin), min(int(zmax), level))


def xyz_description(url, zoom):
    """<GDAL_WMS> of XYZ tiles at `url` ({z}, {x}, {y} or {-y}, as QGIS writes them) at level `zoom`:
    RGBA, a missing tile (204, 404) is nodata, tiles cached on disk."""
    if "{q}" in url or "{quadkey}" in url:
        raise WebSourceError("quadkey tile URLs ({q}) are not supported; use a {z}/{x}/{y} URL")
    origin = "bottom" if "{-y}" in url else "top"
    template = url
    for token, gdal in _XYZ_TOKENS.items():
        template = template.replace(token, gdal)
    if not all(t in template for t in ("${z}", "${x}", "${y}")):
        raise WebSourceError(f"the tile URL needs {{z}}, {{x}} and {{y}}: {url}")
    template = re.sub(r"(?<!\$)\{[^}]*\}", "", template)  # QGIS's {usr}-style tokens GDAL does not know
    return ("<GDAL_WMS>"
            f"<Service name=\"TMS\"><ServerUrl>{escape(template)}</ServerUrl></Service>"
            f"<DataWindow><UpperLeftX>{-WORLD!r}</UpperLeftX><UpperLeftY>{WORLD!r}</UpperLeftY>"
            f"<LowerRightX>{WORLD!r}</LowerRightX><LowerRightY>{-WORLD!r}</LowerRightY>"
            f"<TileLevel>{int(zoom)}</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>"
            f"<YOrigin>{origin}</YOrigin></DataWindow>"
            "<Projection>EPSG:3857</Projection><BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY>"
            "<BandsCount>4</BandsCount><ZeroBlockHttpCodes>204,404</ZeroBlockHttpCodes><Cache/>"
            "</GDAL_WMS>")


def wms_description(url, layers, styles, crs, image_format, extent, pixel):
    """<GDAL_WMS> of a WMS 1.3.0 layer over `extent` (xmin, ymin, xmax, ymax in `crs`) at `pixel`
    units a pixel, in blocks of 512 px, RGBA, cached on disk."""
    xmin, ymin, xmax, ymax = extent
    if not (xmax > xmin and ymax > ymin and pixel > 0):
        raise WebSourceError("the WMS layer has no extent to read")
    width, height = max(1, round((xmax - xmin) / pixel)), max(1, round((ymax - ymin) / pixel))
    return ("<GDAL_WMS>"
            f"<Service name=\"WMS\"><Version>1.3.0</Version><ServerUrl>{escape(url)}</ServerUrl>"
            f"<CRS>{escape(crs)}</CRS><ImageFormat>{escape(image_format or 'image/png')}</ImageFormat>"
            f"<Layers>{escape(layers)}</Layers><Styles>{escape(styles or '')}</Styles>"
            "<Transparent>TRUE</Transparent></Service>"
            f"<DataWindow><UpperLeftX>{xmin!r}</UpperLeftX><UpperLeftY>{ymax!r}</UpperLeftY>"
            f"<LowerRightX>{xmax!r}</LowerRightX><LowerRightY>{ymin!r}</LowerRightY>"
            f"<SizeX>{width}</SizeX><SizeY>{height}</SizeY></DataWindow>"
            "<BlockSizeX>512</BlockSizeX><BlockSizeY>512</BlockSizeY><BandsCount>4</BandsCount>"
            "<ZeroBlockHttpCodes>204,404</ZeroBlockHttpCodes><Cache/></GDAL_WMS>")


def wmts_connection(url, layer, tile_matrix_set, style=None):
    """GDAL's WMTS: connection string of a layer of the service whose capabilities are at `url`."""
    for name, value in (("url", url), ("layer", layer), ("tile matrix set", tile_matrix_set), ("style", style)):
        if value and "," in value:
            raise WebSourceError(f"the WMTS {name} holds a comma, which GDAL's WMTS: syntax cannot carry: {value}")
    parts = [f"WMTS:{url}", f"layer={layer}", f"tilematrixset={tile_matrix_set}"] + ([f"style={style}"] if style else [])
    return ",".join(parts)


def description_file(text, folder=None):
    """The cached file holding description `text` (written once, named by its hash)."""
    folder = Path(folder or _cache_folder())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(text.encode('utf-8')).hexdigest()[:24]}.xml"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        part = path.with_name(path.name + f".tmp-{os.getpid()}")
        part.write_text(text, encoding="utf-8")
        os.replace(part, path)
    return str(path)


def _cache_folder():
    return user_cache_dir() / "web-sources"
