"""A reader thread that cuts tiles from both dates and hands batches over a bounded queue.

The queue holds at most `prefetch` batches, so memory stays flat however big the rasters are:
the reader blocks when the model falls behind. GDAL's block cache is capped for the same reason
(its default is 5% of RAM). The datasets are opened inside the thread, so no GDAL handle is
shared between threads.
"""
import itertools
import queue
import threading
from dataclasses import dataclass

import numpy as np
import rasterio

from .raster_pair import open_on_grid

GDAL_CACHE_MB = 32
_END = object()


@dataclass
class TileBatch:
    tiles: list  # Tile
    before: np.ndarray  # uint8 (N,3,T,T)
    after: np.ndarray
    nodata_fraction: np.ndarray  # float (N,)


class TileReader:
    def __init__(self, plan, tiles, batch_size, prefetch=2):
        """tiles: any iterable of Tile (walked once, in the reader thread)."""
        self._plan = plan
        self._tiles = tiles
        self._batch_size = batch_size
        self._queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="rsicrc-tile-reader", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._stop.set()
        while self._thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self):
        try:
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), \
                    open_on_grid(self._plan.before, self._plan.grid) as rb, \
                    open_on_grid(self._plan.after, self._plan.grid) as ra:
                tiles = iter(self._tiles)
                while not self._stop.is_set():
                    chunk = list(itertools.islice(tiles, self._batch_size))
                    if not chunk:
                        break
                    if not self._put(self._read_batch(chunk, rb, ra)):
                        return
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._error = e
        self._put(_END)

    @staticmethod
    def _read_batch(chunk, rb, ra):
        size = chunk[0].size
        before = np.empty((len(chunk), 3, size, size), dtype=np.uint8)
        after = np.empty_like(before)
        nodata = np.empty(len(chunk), dtype=np.float64)
        for i, t in enumerate(chunk):
            win = (t.col, t.row, size, size)
            before[i], valid_b = rb.read(win)
            after[i], valid_a = ra.read(win)
            valid = valid_b & valid_a
            # A pixel missing on one date is blanked on both, so that the model does not read
            # "image against black" as a change.
            before[i][:, ~valid] = 0
            after[i][:, ~valid] = 0
            nodata[i] = 1.0 - np.count_nonzero(valid) / valid.size
        return TileBatch(chunk, before, after, nodata)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item
