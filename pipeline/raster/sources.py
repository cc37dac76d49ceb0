"""What a date's source is: a local file or a GDAL path, how it is named, stamped and opened.

Standard library at module level (rasterio is imported when a raster is opened): the layer schema
and the QGIS side use the naming rules here.
"""
import os
import warnings

from ..errors import BadInput

# GDAL's block cache defaults to 5% of RAM and would grow with the rasters; tiles are read once,
# row by row, so a small cache loses nothing. The CLI sets it before GDAL's first read.
GDAL_CACHE_MB = 32


def is_gdal_path(path):
    """Whether `path` is for GDAL to resolve (/vsicurl/..., s3://...) rather than a local file."""
    path = str(path)
    return path.startswith("/vsi") or "://" in path


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

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        first_line = str(e).splitlines()[0] if str(e) else "cannot be read"
        reason = "no such file" if "No such file" in first_line else f"cannot be opened as a raster ({first_line})"
        raise BadInput(reason, path) from None
