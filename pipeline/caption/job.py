"""A caption job with its partial layer open: batches are written into OUT.partial, one transaction
each, and the finished file is moved into place.

The layer is built in OUT + ".partial" next to the output and moved into place only once every
tile is written, so OUT is either absent, a previous complete file, or the new complete file. An
interrupted run (Ctrl-C, SIGTERM, a kill) leaves a partial file of whole batches that `--resume`
finishes. Skipped tiles (nodata) are recorded when the run finishes; a resumed run reads them
again, which costs a read and no model work.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadInput
from ..layer.gpkg import LayerError, LayerWriter, layer_error_reason, read_info
from ..layer.schema import (AREA_FRACTION_FIELD, ATTENTION_FIELD, CORE_FIELDS, EMBEDDING_FIELD, SERIES_FIELDS, date_name,
                            partial_path)
from ..layer.sqlite_edits import add_fields
from ..output_file import discard_partial, is_rsicrc_layer, move_into_place
from .heatmap import write_run_heatmap
from .run_metadata import run_metadata, utc_now


@dataclass
class RunSummary:
    output: str
    features: int
    skipped: int
    total: int
    resumed_tiles: int


class Skips:
    """The tiles skipped for nodata: all counted, the first MAX_LISTED listed in the metadata
    (a sparse mosaic may skip millions; memory and metadata stay bounded)."""

    MAX_LISTED = 1000

    def __init__(self):
        self.count, self.listed = 0, []

    def extend(self, skips):
        self.add(skips, len(skips))

    def add(self, listed, count):
        """`count` skipped tiles, of which `listed` are listed (a layer's own list may be cut)."""
        self.count += count
        self.listed.extend(listed[:max(0, self.MAX_LISTED - len(self.listed))])

    def metadata(self):
        # In tile order, as the local engine meets them; Ray's workers finish shards in any order.
        listed = sorted(self.listed, key=lambda t: (t["tile_id"], t.get("interval", 0)))
        return {"skipped_count": self.count, "skipped_tiles": listed, "skipped_tiles_listed": len(self.listed)}


@dataclass
class CaptionJob:
    """A planned run with its partial layer open: what an engine needs to caption the tiles not yet
    `done` and hand the results to `write`, whichever process made them."""

    params: object  # CaptionParams
    plan: object  # PairPlan
    tiles: object  # TileGrid
    done: np.ndarray  # sorted tile ids already in the partial layer
    writer: LayerWriter
    reporter: object
    queries: object  # describe.Queries
    classes: object  # parsed --classes (with --clip)
    model_sha256: str
    clip_model_sha256: str = None
    # Sorted keys tile_id * intervals + interval of the features in the partial layer whose tile
    # lacks some interval (skipped ones): never written again.
    present: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # output_file.identity() of OUT (and of the heat map) at the run's checks: the final moves
    # replace only those, never a file that appeared meanwhile.
    found: dict = field(default_factory=dict)

    def __post_init__(self):
        self.skipped = Skips()
        self.resumed = len(self.done)  # tiles the partial layer held when the run started
        self.count = len(self.done)  # tiles finished, for progress
        self.appended = 0  # features this run wrote

    @property
    def output(self):
        return str(self.params.output)

    def write(self, rows):
        """One transaction of a batch's TileRows into the partial layer, and progress."""
        self.skipped.extend(rows.skips)
        self.writer.append(rows.columns, rows.bounds)
        self.appended += len(rows.bounds)
        self.count += rows.tiles_read
        self.reporter.advance(self.count, len(self.tiles))

    def complete(self):
        """Mark the partial layer complete (every tile written); its feature count."""
        features = read_info(self.writer.path)["features"]
        self.writer.set_metadata({"complete": True, "features": features, "finished": utc_now(),
                                  **self.skipped.metadata()})
        return features

    def finish(self, features):
        """The heat map when asked, then the partial layer moved into place."""
        p, part = self.params, self.writer.path
        if p.heatmap:
            target = write_run_heatmap(p, self.plan, self.tiles, part, self.output, self.found.get("heatmap"))
            self.writer.set_metadata({"heatmap": target, "heatmap_scale": p.heatmap_scale})
        move_into_place(part, self.output, self.found.get("layer"))
        self.reporter.done(self.output, features, self.skipped.count)
        return RunSummary(self.output, features, self.skipped.count, len(self.tiles), self.resumed)


def layer_fields(queries, attention, clip_annotator, area=False):
    """[(name, kind)] of a caption layer, in layer order."""
    fields = list(CORE_FIELDS + SERIES_FIELDS) + ([(AREA_FRACTION_FIELD, "real")] if area else []) + \
        [(name, "real") for name in queries.fields] + [(EMBEDDING_FIELD, "blob")]
    if attention:
        fields.append((ATTENTION_FIELD, "blob"))
    if clip_annotator is not None:
        fields += list(clip_annotator.fields)
    return fields


def open_job(p, plan, tiles, state, models, queries, fingerprint, classes, reporter, found):
    """The CaptionJob of a run: a new partial layer, or the resumed one (`state`) brought up to date."""
    part = partial_path(p.output)
    writer = LayerWriter(part, plan.grid.crs.to_wkt(), layer_fields(queries, bool(p.heatmap), models.clip_annotator,
                                                                    area=plan.area is not None))
    metadata = run_metadata(p, plan, models, queries, fingerprint)
    if state is None:
        _create(writer, str(p.output), metadata)
    else:
        metadata["created"] = state.meta.get("created", metadata["created"])
        metadata["resumed"] = utc_now()
        if state.missing:
            _add_series_fields(part, p)
        writer.set_metadata(metadata)
    done = state.done if state is not None else np.zeros(0, dtype=np.int64)
    job = CaptionJob(p, plan, tiles, done, writer, reporter, queries, classes, models.captioner.sha256,
                     models.clip_sha256, found=found)
    if state is not None:
        job.present = state.present
    return job


def _create(writer, out, metadata):
    part = writer.path
    if os.path.exists(part) and is_rsicrc_layer(part):
        discard_partial(part)
    try:
        writer.create({**metadata, "complete": False})
        read_info(part)  # on a full disk GDAL may leave a file without its system tables
    except LayerError as exc:
        discard_partial(part)  # nothing of this run is in it
        raise BadInput(f"cannot be written ({layer_error_reason(exc)}; is the disk full?)", out) from None


def _add_series_fields(part, p):
    """A pair's partial file from before time series gets the fields its features would have had."""
    try:
        add_fields(part, [("interval", "int", 0), ("before_name", "text", date_name(p.before)),
                          ("after_name", "text", date_name(p.after)), ("most_changed_interval", "int", 0)])
    except LayerError as exc:
        raise BadInput(f"cannot be resumed ({layer_error_reason(exc)}); rerun without --resume", part) from None
