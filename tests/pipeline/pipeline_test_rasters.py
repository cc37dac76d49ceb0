"""Rasters made by the pipeline tests (GeoTIFFs written with rasterio)."""
import numpy as np
import rasterio
from rasterio.transform import from_origin

ORIGIN = (600000.0, 5100000.0)


def scene(shape, seed):
    """(3, h, w) float field with blobs and edges, different for every seed."""
    rng = np.random.default_rng(seed)
    h, w = shape
    coarse = rng.random((3, h // 16 + 2, w // 16 + 2))
    img = coarse.repeat(16, axis=1).repeat(16, axis=2)[:, :h, :w]
    return img + 0.2 * rng.random((3, h, w))


def write_raster(path, data, crs="EPSG:32632", origin=ORIGIN, res=0.5, nodata=None, colorinterp=None):
    data = np.asarray(data)
    count, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=data.dtype,
                       crs=crs, transform=from_origin(origin[0], origin[1], res, res) if crs or origin else None,
                       nodata=nodata) as dst:
        dst.write(data)
        if colorinterp:
            dst.colorinterp = colorinterp
    return str(path)


def uint8_scene(shape, seed):
    return (scene(shape, seed) / 1.2 * 255).astype(np.uint8)
