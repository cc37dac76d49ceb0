"""The rows a batch of tiles gives the layer, whichever process made them (the local engine, a Ray
worker's part file)."""
from dataclasses import dataclass

import numpy as np


@dataclass
class TileRows:
    """A feature per captioned (tile, interval) ({field: values} and their tiles' bounds), the skip
    records of the (tile, interval)s skipped for nodata, and how many tiles were read."""

    columns: dict  # {field: sequence}
    bounds: np.ndarray  # (n, 4) left, bottom, right, top
    skips: list
    tiles_read: int

    def without(self, done):
        """This part less the tiles whose ids are in `done` (sorted), and their count."""
        ids = np.asarray(self.columns["tile_id"], dtype=np.int64)
        keep = ~np.isin(ids, done)
        if keep.all():
            return self, 0
        index = np.flatnonzero(keep)
        columns = {k: [v[i] for i in index] for k, v in self.columns.items()}
        return TileRows(columns, self.bounds[keep], self.skips, self.tiles_read), int((~keep).sum())
