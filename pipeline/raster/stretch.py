"""How non-uint8 rasters become the uint8 RGB the model was trained on.

Rule (the same for both dates, each date measured on its own pixels): for every selected band,
the 2nd and 98th percentiles of the valid (not nodata, not masked, finite) pixels inside the
overlap of the two rasters are computed from a decimated read of at most
SAMPLE_SIDE x SAMPLE_SIDE pixels (GDAL answers it from an overview when the file has one);
values are mapped linearly from [p2, p98] to [0, 255] and clipped. uint8 rasters are used as
they are. Each date gets its own limits because two acquisitions rarely share gain and
illumination; a single shared stretch would render one of them too dark or too bright, which
the captioner would describe as a change.
"""
import numpy as np

LOW_PERCENTILE = 2.0
HIGH_PERCENTILE = 98.0
SAMPLE_SIDE = 1024


def needs_stretch(dtype):
    return np.dtype(dtype) != np.uint8


def sample_limits(src, bands, window, path):
    """Per-band (low, high) limits from a decimated read of `window` (a Window on `src`)."""
    from ..errors import BadInput

    scale = max(window.width, window.height) / SAMPLE_SIDE
    shape = (
        len(bands),
        max(1, int(round(window.height / max(scale, 1)))),
        max(1, int(round(window.width / max(scale, 1)))),
    )
    data = src.read(bands, window=window, out_shape=shape, masked=True)
    limits = []
    for b, band in enumerate(data):
        values = np.asarray(band.compressed(), dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise BadInput(f"band {bands[b]} has no valid pixels inside the overlap", path)
        low, high = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
        if high <= low:  # a flat band: keep it mid-grey instead of dividing by zero
            high = low + 1.0
        limits.append((float(low), float(high)))
    return limits


def to_uint8(data, limits):
    """(3, H, W) array of any real dtype -> uint8 with the per-band limits (None: already uint8)."""
    if limits is None:
        return data
    out = np.empty(data.shape, dtype=np.uint8)
    for b, (low, high) in enumerate(limits):
        band = (data[b].astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
        np.nan_to_num(band, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        out[b] = np.clip(band + 0.5, 0, 255).astype(np.uint8)
    return out

