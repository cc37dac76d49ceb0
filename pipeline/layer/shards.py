"""Shards of a caption job and their part files (the Ray engine's unit of work and of resume).

A shard is a range of tile ids [first, stop) of the grid, less the tiles that the partial layer
already holds. The worker that captions it writes its results to one part file in OUT + ".parts/"
(Parquet: the layer's fields plus each tile's bounds; the skipped tiles in the file's metadata),
written under a temporary name and renamed, so a part file is always whole. The driver appends
each part to the partial layer in one transaction and then removes it; a part left by a driver
that died is appended on --resume, less any tile the layer already holds, so no tile is written
twice. In its place the driver leaves a marker (shard-N.done) listing the shard's skipped tiles,
which the layer does not hold: a resumed run counts them without reading the shard again.
"""
import json
import os
import re
from dataclasses import dataclass, field

import numpy as np

from .tile_rows import TileRows

PARTS_SUFFIX = ".parts"
BOUNDS = ("_left", "_bottom", "_right", "_top")
_META_KEY = b"rsicrc_shard"
_PART = re.compile(r"^shard-\d{12}\.parquet$")
_MARKER = re.compile(r"^shard-(\d{12})\.done$")
_TEMP = re.compile(r"^shard-\d{12}\.(parquet|done)\.tmp-\d+$")


@dataclass
class Shard:
    first: int
    stop: int
    skip: list = field(default_factory=list)  # tile ids in [first, stop) already done

    @property
    def size(self):
        return self.stop - self.first - len(self.skip)


def parts_dir(output):
    return str(output) + PARTS_SUFFIX


def plan_shards(n_tiles, done, shard_tiles, keep=None):
    """[Shard] of `shard_tiles` consecutive ids covering the tiles not in `done` (sorted ids);
    `keep` (a bool per id, an area's): shards of that many consecutive kept tiles, the others left out."""
    done = np.asarray(done, dtype=np.int64)
    ids = np.arange(n_tiles, dtype=np.int64) if keep is None else np.flatnonzero(keep)
    shards = []
    for k in range(0, len(ids), shard_tiles):
        first, stop = int(ids[k]), int(ids[min(len(ids), k + shard_tiles) - 1]) + 1
        lo, hi = np.searchsorted(done, [first, stop])
        if hi - lo < min(shard_tiles, len(ids) - k):
            shards.append(Shard(first, stop, done[lo:hi].tolist()))
    return shards


def shard_tiles(grid, shard):
    """The Tiles of `shard` on a TileGrid, in id order."""
    for tile in grid.iter_from(shard.first, np.asarray(shard.skip, dtype=np.int64)):
        if tile.tile_id >= shard.stop:
            return
        yield tile


def part_schema(layer_schema, geometry_column):
    """The part file's Arrow schema: the layer's fields (its geometry left out) and tile bounds."""
    import pyarrow as pa

    kept = [f for f in layer_schema if f.name != geometry_column]
    return pa.schema(kept + [(name, pa.float64()) for name in BOUNDS])


class PartBuilder:
    """One shard's results, batch by batch, then written as its part file."""

    def __init__(self, schema, shard):
        self.schema, self.shard = schema, shard
        self.columns = {f.name: [] for f in schema}
        self.skips, self.tiles_read = [], 0

    def add(self, rows):
        """A batch's TileRows."""
        bounds = np.asarray(rows.bounds, dtype=np.float64).reshape(-1, 4)
        if len(bounds):
            for name in self.columns:
                if name not in BOUNDS:
                    self.columns[name].extend(list(rows.columns[name]))
            for k, name in enumerate(BOUNDS):
                self.columns[name].extend(bounds[:, k].tolist())
        self.skips.extend(rows.skips)
        self.tiles_read += rows.tiles_read

    def write(self, folder):
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays = [pa.array(self.columns[f.name], type=f.type) for f in self.schema]
        meta = {"first": self.shard.first, "stop": self.shard.stop, "tiles_read": self.tiles_read,
                "skips": self.skips}
        schema = self.schema.with_metadata({_META_KEY: json.dumps(meta).encode()})
        path = os.path.join(folder, f"shard-{self.shard.first:012d}.parquet")
        temp = f"{path}.tmp-{os.getpid()}"
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), temp)
        os.replace(temp, path)
        return path


def part_first(path):
    """The first tile id of the shard whose part file (or marker) this is."""
    return int(os.path.basename(path).split("-")[1].split(".")[0])


def mark_done(folder, first, skips):
    """The marker of a shard whose part is in the layer: its skipped tiles, {tile_id, ...} each."""
    path = os.path.join(folder, f"shard-{first:012d}.done")
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "w") as f:
        json.dump(skips, f)
    os.replace(temp, path)


def read_markers(folder):
    """{first tile id: skipped tiles} of the shards marked done."""
    if not os.path.isdir(folder):
        return {}
    out = {}
    for name in sorted(os.listdir(folder)):
        match = _MARKER.match(name)
        if match:
            with open(os.path.join(folder, name)) as f:
                out[int(match.group(1))] = json.load(f)
    return out


def read_part(path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[_META_KEY])
    columns = {name: table.column(name).to_pylist() for name in table.column_names if name not in BOUNDS}
    bounds = np.column_stack([table.column(name).to_numpy() for name in BOUNDS]).reshape(-1, 4)
    return TileRows(columns, bounds, meta["skips"], int(meta["tiles_read"]))


def list_parts(folder):
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if _PART.match(n))


def clear_parts(folder):
    """Remove the part files and markers (whole and temporary), then the folder when nothing else is in it."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if _PART.match(name) or _MARKER.match(name) or _TEMP.match(name):
            os.remove(os.path.join(folder, name))
    if not os.listdir(folder):
        os.rmdir(folder)
