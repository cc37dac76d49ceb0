"""Whether a run may finish an unfinished layer (OUT.partial), and what that layer already holds.

A resumed run must be the same job: its fingerprint (inputs, grid, tiling, bands, model sha256,
queries, CLIP settings, precision, the later dates) is compared with the one stored in the
partial file. One batch's transaction holds every interval of its tiles, so a tile in the partial
file lacks only intervals that were skipped; a resumed run reads such a tile again for their skip
records, and captions nothing of it.
"""
import json
import os

import numpy as np

from ..errors import BadInput
from ..layer.gpkg import LayerError, read_columns, read_info, read_metadata
from ..layer.schema import SERIES_FIELDS
from ..raster.sources import file_stamp

# Fingerprint keys newer than some partial files: what their absence stands for.
ABSENT_FINGERPRINT = {"attention": False, "later": [], "precision": "fp32"}
MODEL_SHA_KEYS = ("model_sha256", "clip_model_sha256")


def run_fingerprint(p, plan, model_sha=None, clip_sha=None):
    """What makes two runs the same job (None for what is not known yet: the models' sha256)."""
    return {
        "before": file_stamp(p.before),
        "after": file_stamp(p.after),
        "grid": plan.describe(),
        "tile_size": p.tile_size,
        "overlap": p.overlap,
        "max_nodata": p.max_nodata,
        "queries": list(p.queries),
        "clip": bool(p.clip),
        "classes": p.classes if p.clip else None,
        "model_sha256": model_sha,
        "clip_model_sha256": clip_sha,
        "attention": bool(p.heatmap),
        "precision": p.precision,
        "later": [file_stamp(d) for d in p.later],
    }


class ResumeState:
    """What a partial file already holds."""

    def __init__(self, path, intervals=1):
        self.path = path
        self.meta = read_metadata(path)
        fields = set(read_info(path)["fields"])
        # A partial file of a version before time series: one interval, its fields to be added.
        self.missing = [name for name, _ in SERIES_FIELDS if name not in fields]
        columns = read_columns(path, ["tile_id"] + (["interval"] if "interval" in fields else []))
        ids = columns["tile_id"].astype(np.int64)
        which = columns["interval"].astype(np.int64) if "interval" in columns else np.zeros_like(ids)
        tiles, counts = np.unique(ids, return_counts=True)
        # Sorted ids of the tiles with every interval (8 bytes a finished tile): the grid walk
        # skips them in step.
        self.done = tiles[counts >= intervals]
        # The (tile, interval) keys of the others, read again for the skip records of the rest.
        partial = ~np.isin(ids, self.done)
        self.present = np.unique(ids[partial] * intervals + which[partial])


def open_resume(part, fingerprint, intervals=1):
    """The ResumeState of `part` when it holds the job of `fingerprint` (None when there is no
    such file); BadInput when it is another job's or not an rsicrc layer."""
    if not os.path.exists(part):
        return None
    try:
        state = ResumeState(part, intervals)
    except LayerError as e:
        raise BadInput(f"cannot be resumed ({e}); rerun without --resume", part) from None
    stored = state.meta.get("run_fingerprint")
    if not isinstance(stored, dict):
        raise BadInput("is not an rsicrc partial layer; rerun without --resume", part)
    # Compare as stored: JSON turns tuples (e.g. stretch limits) into lists.
    fingerprint = json.loads(json.dumps(fingerprint))
    differing = sorted(k for k, v in fingerprint.items()
                       if v is not None and stored.get(k, ABSENT_FINGERPRINT.get(k)) != v)
    if differing:
        raise BadInput(f"was made by a different job (differs in: {', '.join(differing)}); "
                       f"rerun without --resume to start over", part)
    return state


def resume_state(p, part, fingerprint, reporter):
    """The partial file's state when `p.resume` asks to finish it, else None. With resume "auto" a
    partial file of another job is started over (a warning); with True it is refused."""
    intervals = len(p.dates) - 1
    if not p.resume:
        if os.path.exists(part):
            reporter.warning(f"{part}: discarding an earlier unfinished run (pass --resume to continue it)")
        return None
    state = None
    try:
        state = open_resume(part, fingerprint, intervals)
    except BadInput as e:
        if p.resume != "auto":
            raise
        reporter.warning(f"{e}; starting over")
    if state is None and p.resume != "auto":
        reporter.warning(f"{part}: nothing to resume, starting a new run")
    return state


def same_models(state, fingerprint, p, part, reporter):
    """`state` when its models are those of `fingerprint` (now that they are loaded), else None
    ("auto") or BadInput (--resume)."""
    if state is None:
        return None
    stored = state.meta["run_fingerprint"]
    changed = [key for key in MODEL_SHA_KEYS if stored.get(key) != fingerprint[key]]
    if not changed:
        return state
    if p.resume != "auto":
        raise BadInput(f"was made with a different model ({changed[0]} differs); rerun without --resume", part)
    reporter.warning(f"{part}: was made with a different model; starting over")
    return None
