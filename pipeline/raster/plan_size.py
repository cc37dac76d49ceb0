"""How big a caption plan is, and the limits above which it runs only with --yes-large.

A plan is refused before any work (no model loaded, no pixel read) when it has more than
MAX_TILES tiles, when --target-resolution multiplies the overlap's pixels by more than
MAX_PIXEL_GROWTH (each source pixel blown up to 10 x 10 or more: likely metres taken for
degrees, or a typo), or when --overlap multiplies the tiles by more than MAX_OVERLAP_GROWTH and
makes more than OVERLAP_FLOOR_TILES of them (a small job with a dense overlap is just slow).
The message says how many tiles and about how long they would take.
"""
from ..errors import BadInput

MAX_TILES = 10_000_000
MAX_PIXEL_GROWTH = 100.0
MAX_OVERLAP_GROWTH = 100.0
OVERLAP_FLOOR_TILES = 100_000
# Seconds a tile of the released model takes on the reference 2-core CPU (caption, embedding and
# change score, `make bench`); only used to tell the user how long a plan would take.
CPU_SECONDS_PER_TILE = 0.93


def _duration(seconds):
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.0f} {unit}"
    return f"{seconds:,.0f} seconds"


def check_plan_size(tiles, tiles_without_overlap, pixel_growth, tile_size, yes_large, path):
    """BadInput naming `path` when the plan is beyond a limit and yes_large is not given."""
    if yes_large:
        return
    reasons = []
    if tiles > MAX_TILES:
        reasons.append(f"more than {MAX_TILES:,} tiles")
    if pixel_growth > MAX_PIXEL_GROWTH:
        reasons.append(f"--target-resolution multiplies the pixels {pixel_growth:,.0f}x "
                       f"(more than {MAX_PIXEL_GROWTH:g}x)")
    if tiles > OVERLAP_FLOOR_TILES and tiles / max(1, tiles_without_overlap) > MAX_OVERLAP_GROWTH:
        reasons.append(f"--overlap multiplies the tiles {tiles / tiles_without_overlap:,.0f}x "
                       f"(more than {MAX_OVERLAP_GROWTH:g}x)")
    if reasons:
        raise BadInput(f"the run would caption {tiles:,} tiles of {tile_size} px, about "
                       f"{_duration(tiles * CPU_SECONDS_PER_TILE)} on a 2-core CPU ({'; '.join(reasons)}); "
                       f"check the options, or pass --yes-large to run it anyway", path)
