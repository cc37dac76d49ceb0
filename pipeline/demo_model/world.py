"""The drawn world of the sample pair and of the demonstration model's training tiles.

Fields, trees, houses on a grid of lots, asphalt roads and ponds, painted in a fixed palette at
0.5 m a pixel. Every painter is a pure function of pixel coordinates and integer seeds, so a scene
can be drawn window by window in constant memory (the 16384 px benchmark rasters) and the same
seed always draws the same pixels. Numpy only.
"""
import numpy as np

PIXEL_M = 0.5
CRS = "EPSG:32632"
ORIGIN = (500000.0, 5000000.0)  # UTM 32N, an arbitrary rural spot
LOT = 40            # px side of a building lot
ROAD_WIDTH = 14     # px
TREE_CELL = 24      # px side of the grid on which trees stand


def _colour(rgb):
    return np.array(rgb, dtype=np.float64).reshape(3, 1, 1)


ROOFS = (_colour((170, 70, 55)), _colour((190, 190, 185)), _colour((110, 110, 120)))  # red, white, grey
ROAD = _colour((95, 95, 100))
WATER = _colour((38, 72, 105))


def noise(*ints):
    """Deterministic uniform [0, 1) from integer arrays (a small integer hash), broadcast."""
    h = np.uint64(0x9E3779B97F4A7C15)
    for v in ints:
        h = (h ^ np.asarray(v, dtype=np.uint64)) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def pixel_grid(row0, col0, height, width):
    """Row (h, 1) and column (1, w) coordinates of a window."""
    return (np.arange(row0, row0 + height, dtype=np.int64)[:, None],
            np.arange(col0, col0 + width, dtype=np.int64)[None, :])


def fields(r, c, seed):
    """Smooth bands of crop and grass with a little texture: (image (3, h, w) float, texture, grain)."""
    f = (np.sin(r / 97.0 + seed) + np.sin(c / 131.0 + 2 * seed) + np.sin((r + c) / 53.0)) / 3
    grain = (noise(r, c, seed) - 0.5) * 16
    return np.stack([120 + 25 * f, 140 + 20 * f, 70 + 10 * f]) + grain, f, grain


def tree_cells(r, c, seed, density=0.12):
    """Where trees stand: the cells of a coarse grid drawn with probability `density`."""
    return noise(r // TREE_CELL, c // TREE_CELL, seed + 1) < density


def cleared(r, c, seed, share):
    """Which trees a later date has cut: `share` of the cells."""
    return noise(r // TREE_CELL, c // TREE_CELL, seed + 2) <= share


def paint_trees(img, trees, f, grain):
    return np.where(trees, np.stack([45 + 0 * f, 75 + 10 * f, 40 + 0 * f]) + grain, img)


def lot_cells(r, c, offset=(0, 0)):
    """Each pixel's lot (row, column) and its place inside the lot."""
    rr, cc = r - offset[0], c - offset[1]
    return rr // LOT, cc // LOT, rr % LOT, cc % LOT


def paint_houses(img, built, lots, seed, grain):
    """A house with its shadow on every lot where `built` holds; size and roof drawn per lot."""
    lr, lc, pr, pc = lots
    inset = 6 + (noise(lr, lc, seed + 4) * 6).astype(np.int64)
    in_house = (pr >= inset) & (pr < LOT - inset) & (pc >= inset) & (pc < LOT - inset + 2)
    shadow = (pr >= inset + 2) & (pr < LOT - inset + 3) & (pc >= inset + 2) & (pc < LOT - inset + 4)
    kind = noise(lr, lc, seed + 5)
    roof = np.where(kind < 0.4, ROOFS[0], np.where(kind < 0.75, ROOFS[1], ROOFS[2]))
    img = np.where(built & shadow & ~in_house, img * 0.55, img)
    return np.where(built & in_house, roof + grain * 0.5, img)


def road_mask(r, c, rows=(), cols=()):
    """Horizontal roads centred on `rows`, vertical ones on `cols`."""
    road = np.zeros(np.broadcast_shapes(r.shape, c.shape), dtype=bool)
    for rr in rows:
        road |= np.abs(r - rr) < ROAD_WIDTH // 2
    for cc in cols:
        road |= np.abs(c - cc) < ROAD_WIDTH // 2
    return road


def paint_road(img, road, grain):
    return np.where(road, ROAD + grain * 0.5, img)


def pond_mask(r, c, centre, radii, seed):
    """An irregular pond: an ellipse with a wavy shore."""
    dr, dc = (r - centre[0]) / radii[0], (c - centre[1]) / radii[1]
    angle = np.arctan2(dr, dc)
    shore = 1 + 0.12 * np.sin(3 * angle + seed) + 0.08 * np.sin(5 * angle + 2 * seed)
    return dr ** 2 + dc ** 2 < shore ** 2


def paint_water(img, water, grain):
    return np.where(water, WATER + grain * 0.3, img)


def as_image(img):
    return np.clip(img, 0, 255).astype(np.uint8)


def sample_roads(size, seed, after):
    """The sample scene's roads: a few across the whole scene; the later date adds one."""
    rng = np.random.default_rng(seed)
    n = max(1, size // 700)
    rows = sorted(rng.integers(LOT, size - LOT, n).tolist())
    cols = sorted(rng.integers(LOT, size - LOT, n).tolist())
    new = int(rng.integers(size // 4, 3 * size // 4))
    return rows, cols, (new if after else None)


def scene_window(row0, col0, height, width, size, seed=7, after=False):
    """uint8 RGB (3, height, width) of the sample scene at [row0:row0+height, col0:col0+width].

    BEFORE: fields, trees (12 % of the cells), a house on 20 % of the lots, a few roads. AFTER: a
    further 30 % of the lots within 4 lots of a new road built, 3 % more anywhere, 30 % of the
    trees cut.
    """
    r, c = pixel_grid(row0, col0, height, width)
    img, f, grain = fields(r, c, seed)
    trees = tree_cells(r, c, seed)
    if after:
        trees &= ~cleared(r, c, seed, 0.3)
    img = paint_trees(img, trees, f, grain)
    lots = lot_cells(r, c)
    lr, lc = lots[:2]
    u = noise(lr, lc, seed + 3)
    road_rows, road_cols, new_road = sample_roads(size, seed, after)
    built = u < 0.2
    if after:
        near_new = np.abs(lr * LOT + LOT // 2 - new_road) < 4 * LOT
        built |= ((u < 0.5) & near_new) | (u > 0.97)
    img = paint_houses(img, built, lots, seed, grain)
    new = [new_road] if new_road is not None else []
    return as_image(paint_road(img, road_mask(r, c, road_rows + new, road_cols), grain))
