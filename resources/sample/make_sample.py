"""Generate the demo's BEFORE/AFTER pair: a synthetic suburb where buildings and a road appear.

No real public-domain before/after image pair of the LEVIR-CC kind (0.5 m, RGB, two dates,
georeferenced) could be obtained through the package registries this project may use, so the
sample is generated. It is a stand-in for trying the pipeline end to end, not for judging
caption quality: the model was trained on Google Earth imagery, not on drawings.

The scene (`rsicrc/pipeline/demo_model/world.py`, the world the demonstration model is trained
on) is a pure function of (pixel row, column, seed, date), computed window by window, so the
same code writes a 1024 px sample and the 16384 px benchmark rasters in constant memory:
- fields: smooth two-tone farmland/grass texture, plus fine noise;
- roads: a few straight asphalt bands (AFTER adds one more);
- lots: a 40 px grid of parcels; a parcel holds a house (a roof-coloured rectangle with a
  shadow) with probability 0.2 in BEFORE; in AFTER a further 30% of the parcels near the new
  road are built and a few trees are cleared.

Run `python resources/sample/make_sample.py` to rewrite before.tif and after.tif here
(GeoTIFF, uint8 RGB, EPSG:32632, 0.5 m pixels, deflate, tiled).
"""
import argparse
from pathlib import Path

from rsicrc.pipeline.demo_model.world import CRS, ORIGIN, PIXEL_M, scene_window

__all__ = ["CRS", "ORIGIN", "PIXEL_M", "scene_window", "write_scene"]


def write_scene(path, size, after, seed=7, block=1024, origin=ORIGIN, pixel=PIXEL_M, crs=CRS):
    """Write a size x size uint8 RGB GeoTIFF of the scene, one block of rows at a time."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=crs,
                   transform=from_origin(origin[0], origin[1], pixel, pixel), tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", photometric="RGB",
                   BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, block):
            h = min(block, size - row)
            dst.write(scene_window(row, 0, h, size, size, seed, after), window=Window(0, row, size, h))
    return Path(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--out", default=str(Path(__file__).parent))
    args = ap.parse_args(argv)
    out = Path(args.out)
    for name, after in (("before.tif", False), ("after.tif", True)):
        write_scene(out / name, args.size, after)
        print(out / name)


if __name__ == "__main__":
    main()
