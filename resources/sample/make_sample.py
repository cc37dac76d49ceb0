"""Generate the demo's BEFORE/AFTER pair: a synthetic suburb where buildings and a road appear.

No real public-domain before/after image pair of the LEVIR-CC kind (0.5 m, RGB, two dates,
georeferenced) could be obtained through the package registries this project may use, so the
sample is generated. It is a stand-in for trying the pipeline end to end, not for judging
caption quality: the model was trained on Google Earth imagery, not on drawings.

The scene is a pure function of (pixel row, column, seed, date), computed window by window,
so the same code writes a 1024 px sample and the 16384 px benchmark rasters in constant memory:
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

import numpy as np

PIXEL_M = 0.5
CRS = "EPSG:32632"
ORIGIN = (500000.0, 5000000.0)  # UTM 32N, an arbitrary rural spot
LOT = 40
ROAD_WIDTH = 14


def _hash(*ints):
    """Deterministic uniform [0, 1) from integer arrays (a small integer hash)."""
    h = np.uint64(0x9E3779B97F4A7C15)
    for v in ints:
        h = (h ^ np.asarray(v, dtype=np.uint64)) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _roads(size, seed, after):
    rng = np.random.default_rng(seed)
    n = max(1, size // 700)
    rows = sorted(rng.integers(LOT, size - LOT, n).tolist())
    cols = sorted(rng.integers(LOT, size - LOT, n).tolist())
    new = int(rng.integers(size // 4, 3 * size // 4))
    return rows, cols, (new if after else None)


def scene_window(row0, col0, height, width, size, seed=7, after=False):
    """uint8 RGB (3, height, width) of the scene at [row0:row0+height, col0:col0+width]."""
    r = np.arange(row0, row0 + height, dtype=np.int64)[:, None]
    c = np.arange(col0, col0 + width, dtype=np.int64)[None, :]
    # fields: smooth bands of crop and grass, a little texture
    f = (np.sin(r / 97.0 + seed) + np.sin(c / 131.0 + 2 * seed) + np.sin((r + c) / 53.0)) / 3
    crop = np.stack([120 + 25 * f, 140 + 20 * f, 70 + 10 * f])
    grain = (_hash(r, c, seed) - 0.5) * 16
    img = crop + grain
    # trees: dark green blobs on a coarse grid; AFTER clears some
    tr, tc = r // 24, c // 24
    tree = _hash(tr, tc, seed + 1) < 0.12
    if after:
        tree &= _hash(tr, tc, seed + 2) > 0.3
    img = np.where(tree, np.stack([45 + 0 * f, 75 + 10 * f, 40 + 0 * f]) + grain, img)
    # houses on lots
    lr, lc = r // LOT, c // LOT
    u = _hash(lr, lc, seed + 3)
    road_rows, road_cols, new_road = _roads(size, seed, after)
    built = u < 0.2
    if after:
        near_new = np.abs(lr * LOT + LOT // 2 - new_road) < 4 * LOT if new_road is not None else False
        built |= ((u < 0.5) & near_new) | (u > 0.97)
    pr, pc = r % LOT, c % LOT
    inset = 6 + (_hash(lr, lc, seed + 4) * 6).astype(np.int64)
    in_house = (pr >= inset) & (pr < LOT - inset) & (pc >= inset) & (pc < LOT - inset + 2)
    shadow = (pr >= inset + 2) & (pr < LOT - inset + 3) & (pc >= inset + 2) & (pc < LOT - inset + 4)
    roof_kind = _hash(lr, lc, seed + 5)
    roof = np.where(roof_kind < 0.4, np.array([[[170]], [[70]], [[55]]]),
                    np.where(roof_kind < 0.75, np.array([[[190]], [[190]], [[185]]]),
                             np.array([[[110]], [[110]], [[120]]])))
    img = np.where(built & shadow & ~in_house, img * 0.55, img)
    img = np.where(built & in_house, roof + grain * 0.5, img)
    # roads on top of everything
    road = np.zeros(np.broadcast_shapes(r.shape, c.shape), dtype=bool)
    for rr in road_rows:
        road |= np.abs(r - rr) < ROAD_WIDTH // 2
    for cc in road_cols:
        road |= np.abs(c - cc) < ROAD_WIDTH // 2
    if new_road is not None:
        road |= np.abs(r - new_road) < ROAD_WIDTH // 2
    img = np.where(road, np.array([[[95]], [[95]], [[100]]]) + grain * 0.5, img)
    return np.clip(img, 0, 255).astype(np.uint8)


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
