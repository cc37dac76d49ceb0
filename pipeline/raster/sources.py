"""What a date's source is: a local file or a GDAL path, how it is named, stamped and opened.

Standard library at module level (rasterio is imported when a raster is opened): the layer schema
and the QGIS side use the naming rules here.
"""
import html
import os
import re
import stat
import warnings

from ..errors import BadInput

# GDAL's block cache defaults to 5% of RAM and would grow with the rasters; tiles are read once,
# row by row, so a small cache loses nothing. The CLI sets it before GDAL's first read.
GDAL_CACHE_MB = 32
# GDAL waits for ever on a server that accepts and never answers; these bound a network read
# (seconds, retries with a growing delay on timeouts and 5xx). Each is the user's to set in the
# environment: only absent ones are set.
GDAL_NETWORK_DEFAULTS = {"GDAL_HTTP_CONNECTTIMEOUT": "15", "GDAL_HTTP_TIMEOUT": "60", "GDAL_HTTP_MAX_RETRY": "3",
                         "GDAL_HTTP_RETRY_DELAY": "2"}


# A GDAL connection string: DRIVER:... (WMTS:, WMS:, GPKG:, NETCDF:), two letters or more, so never
# a Windows drive; or a service description given inline (<GDAL_WMS>...</GDAL_WMS>).
_CONNECTION = re.compile(r"^[A-Z][A-Z0-9_]+:")


def is_gdal_path(path):
    """Whether `path` is for GDAL to resolve (/vsicurl/..., s3://..., WMTS:..., an inline
    <GDAL_WMS> description) rather than a local file."""
    path = str(path)
    return path.startswith(("/vsi", "<")) or "://" in path or _CONNECTION.match(path) is not None


def source_path(path):
    """A local path made absolute; a GDAL path (/vsicurl/..., s3://...) as given."""
    return str(path) if is_gdal_path(path) else os.path.abspath(path)


def file_stamp(path):
    """{path, size, mtime_ns} of a local file (OSError when it is gone), {path} of a GDAL path:
    what tells that a file is still the one a run started from."""
    if is_gdal_path(path):  # GDAL reads it; there is nothing to stat
        return {"path": str(path)}
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# A VRT may name VRTs; a chain this long is a loop or a trap.
MAX_VRT_DEPTH = 8
MAX_VRT_BYTES = 64 * 2**20
_VRT_SOURCE = re.compile(r"<(SourceFilename|SourceDataset)\b([^>]*)>([^<]*)</\1\s*>")


def special_file_problem(path):
    """Why the local file at `path` must not be opened (a FIFO, socket or device would block the
    read or never end), or None: a regular file, a folder (some formats are), a GDAL path, or
    nothing there (the opener says "no such file")."""
    if is_gdal_path(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    for test, what in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return f"is {what}, not a file"
    return None


def check_regular(path, what="raster"):
    """BadInput naming `path` when it is a FIFO, socket or device; for a VRT, the same for every
    file it names (a VRT on a FIFO blocks GDAL's read just as well)."""
    problem = special_file_problem(path)
    if problem:
        raise BadInput(f"{problem}; give a {what} file", path)
    _check_vrt_sources(path, 0)


def _check_vrt_sources(path, depth):
    if is_gdal_path(path) or not os.path.isfile(path) or depth > MAX_VRT_DEPTH:
        return
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if not head.startswith(b"<VRTDataset"):
        return
    if os.path.getsize(path) > MAX_VRT_BYTES:
        raise BadInput(f"is a VRT of more than {MAX_VRT_BYTES:,} bytes", path)
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    folder = os.path.dirname(os.path.abspath(path))
    # The names only, read as text: GDAL parses the XML itself when it opens it, and an XML parser
    # here would be one more place for entity tricks.
    for match in _VRT_SOURCE.finditer(text):
        name = html.unescape(match.group(3)).strip()
        if not name:
            continue
        relative = re.search(r"""relative[Tt]oVRT\s*=\s*["']1["']""", match.group(2)) is not None
        source = os.path.join(folder, name) if relative and not os.path.isabs(name) else name
        problem = special_file_problem(source)
        if problem:
            raise BadInput(f"names {source}, which {problem}", path)
        _check_vrt_sources(source, depth + 1)


# GDAL drivers of tiled web services: their rasters cover a continent or the world.
WEB_SERVICE_DRIVERS = ("WMS", "WMTS")
_URL_HOST = re.compile(r"://(?:[^/@\s]*@)?([^/?#\s<>\"']+)")
_SERVICE_URL = re.compile(r"<(ServerUrl|GetCapabilitiesUrl|ServerURL)>([^<]+)<")


def network_host(path):
    """host[:port] of the server behind a network source (a URL, /vsicurl/, a WMS/WMTS description
    inline or in a local file), or None: what a failed read names, never a URL's credentials or query."""
    text = str(path)
    if not is_gdal_path(text) and os.path.isfile(text) and not special_file_problem(text):
        with open(text, encoding="utf-8", errors="replace") as f:
            head = f.read(65536)
        if not head.lstrip().startswith(("<GDAL_WMS", "<GDAL_WMTS")):
            return None
        text = head
    service = _SERVICE_URL.search(text)
    match = _URL_HOST.search(html.unescape(service.group(2)) if service else text)
    return match.group(1) if match else None


class SourceUnreachable(BadInput):
    """A network source failed during the run (a dead or failing server): the finished tiles are
    worth keeping for --resume."""


def gdal_reason(exc):
    """GDAL's own message behind a rasterio error ("Read failed. See previous exception" hides it)."""
    messages = []
    while exc is not None:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if text and "See previous exception" not in text:
            messages.append(text)
        exc = exc.__cause__ or exc.__context__
    return messages[-1] if messages else "GDAL gave no reason"


def open_raster(path):
    """The rasterio dataset of `path`, or BadInput naming it (missing, or not a raster GDAL reads)."""
    import rasterio

    check_regular(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        first_line = str(e).splitlines()[0] if str(e) else "cannot be read"
        reason = "no such file" if "No such file" in first_line else f"cannot be opened as a raster ({first_line})"
        raise BadInput(reason, path) from None
