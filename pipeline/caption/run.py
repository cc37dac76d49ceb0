"""`rsicrc caption`: check the pair, cut tiles, run the model in batches, write the GeoPackage.

A time series (`caption D1 D2 D3 ...`) is captioned on the same tiles, interval by interval
(D1 -> D2 is interval 0): a batch reads every date of its tiles once, preprocesses each date's
images once and captions all its (tile, interval) pairs in one model call, so that the decoder's
batch stays big. A pair is the series of two dates: one interval, the layer it always was plus
the series fields (interval 0).

The layer is built in OUT + ".partial" next to the output and moved into place only once every
tile is written, so OUT is either absent, a previous complete file, or the new complete file.
Each batch is one transaction; an interrupted run (Ctrl-C, SIGTERM, a kill) leaves a partial file
of whole batches that `--resume` finishes. A resumed run must be the same job: its fingerprint
(inputs, grid, tiling, bands, model sha256, queries, CLIP settings) is compared with the one
stored in the partial file. Skipped tiles (nodata) are recorded when the run finishes; a resumed
run reads them again, which costs a read and no model work. One batch's transaction holds every
interval of its tiles, so a tile in the partial file lacks only intervals that were skipped; a
resumed run reads such a tile again for their skip records, and captions nothing of it.
"""
import datetime
import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from ..caption_params import CaptionParams, ParamError, band_list  # noqa: F401 - CaptionParams: the API
from ..errors import BadInput
from ..layer import gpkg as gl
from ..layer.gpkg import partial_path
from ..models import load_captioner, load_clip_encoder
from ..output_file import OutputLock, check_output, check_replaceable, discard_partial, is_rsicrc_layer, move_into_place
from ..raster.pair_plan import plan_pair
from ..raster.tile_reader import TileReader
from ..raster.tiling import tile_grid
from .heatmap import build_heatmap, check_heatmap_output


@dataclass
class RunSummary:
    output: str
    features: int
    skipped: int
    total: int
    resumed_tiles: int


def source_path(path):
    """A local path made absolute; a GDAL path (/vsicurl/..., s3://...) as given."""
    path = str(path)
    return path if path.startswith("/vsi") or "://" in path else os.path.abspath(path)


def _file_stamp(path):
    if source_path(path) != os.path.abspath(path):  # remote: GDAL reads it, there is nothing to stat
        return {"path": str(path)}
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _fingerprint(p, plan, model_sha=None, clip_sha=None):
    return {
        "before": _file_stamp(p.before),
        "after": _file_stamp(p.after),
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
        "later": [_file_stamp(d) for d in p.later],
    }


# Fingerprint keys newer than some partial files: what their absence stands for.
_ABSENT_FINGERPRINT = {"attention": False, "later": [], "precision": "fp32"}


def driver_device(p):
    """Where this process loads the models: the Ray engine's workers load their own, so here they
    only give the metadata and the query embeddings, on the CPU."""
    return "cpu" if p.engine == "ray" else p.device


def driver_precision(p):
    """The number format of the model this process loads: the run's, but fp32 beside Ray's workers
    (this CPU may lack bf16, and the driver's model only embeds the queries)."""
    return "fp32" if p.engine == "ray" else p.precision


def parsed_classes(p):
    """--classes as a list of names (with --clip; None without), or BadInput."""
    if not p.clip:
        return None
    from .clip_annotator import parse_classes

    try:
        return parse_classes(p.classes)
    except ValueError as e:
        raise BadInput(str(e)) from None


def _load_clip(p, classes, device):
    from .clip_annotator import ClipTileAnnotator

    clip = load_clip_encoder(p.clip_model, device)
    return clip, ClipTileAnnotator(clip, classes)


class _Resume:
    """What a partial file already holds."""

    def __init__(self, path, intervals=1):
        self.path = path
        self.meta = gl.read_metadata(path)
        fields = set(gl.layer_info(path)["fields"])
        # A partial file of a version before time series: one interval, its fields to be added.
        self.missing = [name for name, _ in gl.SERIES_FIELDS if name not in fields]
        columns = gl.read_columns(path, ["tile_id"] + (["interval"] if "interval" in fields else []))
        ids = columns["tile_id"].astype(np.int64)
        which = columns["interval"].astype(np.int64) if "interval" in columns else np.zeros_like(ids)
        tiles, counts = np.unique(ids, return_counts=True)
        # Sorted ids of the tiles with every interval (8 bytes a finished tile): the grid walk
        # skips them in step.
        self.done = tiles[counts >= intervals]
        # The (tile, interval) keys of the others, read again for the skip records of the rest.
        partial = ~np.isin(ids, self.done)
        self.present = np.unique(ids[partial] * intervals + which[partial])


def _open_resume(part, fingerprint, intervals=1):
    if not os.path.exists(part):
        return None
    try:
        state = _Resume(part, intervals)
    except gl.LayerError as e:
        raise BadInput(f"cannot be resumed ({e}); rerun without --resume", part) from None
    stored = state.meta.get("run_fingerprint")
    if not isinstance(stored, dict):
        raise BadInput("is not an rsicrc partial layer; rerun without --resume", part)
    # Compare as stored: JSON turns tuples (e.g. stretch limits) into lists.
    fingerprint = json.loads(json.dumps(fingerprint))
    differing = sorted(k for k, v in fingerprint.items()
                       if v is not None and stored.get(k, _ABSENT_FINGERPRINT.get(k)) != v)
    if differing:
        raise BadInput(f"was made by a different job (differs in: {', '.join(differing)}); "
                       f"rerun without --resume to start over", part)
    return state


def run_caption(p, reporter, captioner=None, clip_annotator=None):
    """Run one caption job; returns RunSummary. `captioner`: an already loaded Captioner."""
    try:
        p.check()
    except ParamError as e:
        raise BadInput(str(e)) from None
    if p.engine == "ray":
        from .ray_engine import import_ray

        import_ray()  # before any work: is the extra installed?
    out = str(p.output)
    part = partial_path(out)
    check_output(out, p.dates, overwrite=p.overwrite)
    if p.heatmap:
        check_heatmap_output(p.heatmap, p.dates, out, overwrite=p.overwrite)
    with OutputLock(out):
        check_replaceable(out)
        return _run_locked(p, reporter, out, part, captioner, clip_annotator)


def _run_locked(p, reporter, out, part, captioner, clip_annotator):
    plan = plan_pair(p.before, p.after, bands=band_list(p.bands), tile_size=p.tile_size,
                     reproject=p.reproject, target_resolution=p.target_resolution, overlap=p.overlap,
                     yes_large=p.yes_large, later=p.later)
    intervals = len(p.dates) - 1
    for note in plan.warnings:
        reporter.warning(note)
    tiles = tile_grid(plan.window, p.tile_size, p.overlap)

    classes = parsed_classes(p)

    state = None
    if p.resume:
        try:
            state = _open_resume(part, _fingerprint(p, plan), intervals)
        except BadInput as e:
            if p.resume != "auto":
                raise
            reporter.warning(f"{e}; starting over")
        if state is None and p.resume != "auto":
            reporter.warning(f"{part}: nothing to resume, starting a new run")
    elif os.path.exists(part):
        reporter.warning(f"{part}: discarding an earlier unfinished run (pass --resume to continue it)")

    cap = captioner or load_captioner(p.model, driver_device(p), driver_precision(p))
    clip = None
    if p.clip and clip_annotator is None:
        clip, clip_annotator = _load_clip(p, classes, driver_device(p))
    elif clip_annotator is not None:
        clip = getattr(clip_annotator, "clip", None)
    clip_sha = clip_annotator.metadata().get("clip_model_sha256") if clip_annotator is not None else None
    fingerprint = _fingerprint(p, plan, cap.sha256, clip_sha)
    if state is not None:
        stored = state.meta["run_fingerprint"]
        changed = [key for key in ("model_sha256", "clip_model_sha256") if stored.get(key) != fingerprint[key]]
        if changed and p.resume != "auto":
            raise BadInput(f"was made with a different model ({changed[0]} differs); rerun without --resume", part)
        if changed:
            reporter.warning(f"{part}: was made with a different model; starting over")
            state = None

    query_fields, query_matrix = _embed_queries(cap, p.queries, reporter)
    fields = list(gl.CORE_FIELDS + gl.SERIES_FIELDS) + [(name, "real") for name in query_fields] + \
        [("embedding", "blob")]
    if p.heatmap:
        fields.append((gl.ATTENTION_FIELD, "blob"))
    if clip_annotator is not None:
        fields += list(clip_annotator.fields)
    writer = gl.LayerWriter(part, plan.grid.crs.to_wkt(), fields)
    metadata = _metadata(p, plan, cap, query_fields, fingerprint, clip_annotator, clip)
    if state is None:
        if os.path.exists(part) and is_rsicrc_layer(part):
            discard_partial(part)
        try:
            writer.create({**metadata, "complete": False})
            gl.layer_info(part)  # on a full disk GDAL may leave a file without its system tables
        except gl.LayerError as exc:
            discard_partial(part)  # nothing of this run is in it
            raise BadInput(f"cannot be written ({gl.layer_error_reason(exc)}; is the disk full?)", out) from None
    else:
        metadata["created"] = state.meta.get("created", metadata["created"])
        metadata["resumed"] = _now()
        if state.missing:
            _add_series_fields(part, p)
        writer.set_metadata(metadata)

    done = state.done if state is not None else np.zeros(0, dtype=np.int64)
    job = CaptionJob(p, plan, tiles, done, writer, reporter, query_fields, query_matrix, classes,
                     cap.sha256, clip_sha)
    if state is not None:
        job.present = state.present
    reporter.start(len(tiles), out)
    reporter.advance(job.count, len(tiles))
    try:
        if p.engine == "ray":
            from .ray_engine import caption_on_ray

            caption_on_ray(job, resumed=state is not None)
        else:
            _caption_here(job, cap, clip_annotator)
        features = gl.layer_info(part)["features"]
        writer.set_metadata({"complete": True, "features": features, "finished": _now(),
                             **job.skipped.metadata()})
    except gl.LayerError as exc:
        if state is None and not job.appended:  # nothing of this run to keep
            discard_partial(part)
            raise BadInput(f"cannot be written ({gl.layer_error_reason(exc)}; is the disk full?)", out) from None
        # Whole batches are in the file (one transaction each): once there is room, --resume goes on.
        raise BadInput(f"writing stopped ({gl.layer_error_reason(exc)}; is the disk full?); {part} keeps the finished "
                       f"tiles: make room and rerun with --resume", out) from None
    except BadInput:
        if state is None:  # an unreadable input: what this run wrote cannot be resumed usefully
            discard_partial(part)
        raise
    if p.heatmap:
        _write_heatmap(p, plan, tiles, part, out, writer)
    move_into_place(part, out)
    reporter.done(out, features, job.skipped.count)
    return RunSummary(out, features, job.skipped.count, len(tiles), len(done))


def _add_series_fields(part, p):
    """A pair's partial file from before time series gets the fields its features would have had."""
    try:
        gl.add_fields(part, [("interval", "int", 0), ("before_name", "text", gl.date_name(p.before)),
                             ("after_name", "text", gl.date_name(p.after)), ("most_changed_interval", "int", 0)])
    except gl.LayerError as exc:
        raise BadInput(f"cannot be resumed ({gl.layer_error_reason(exc)}); rerun without --resume", part) from None


def _caption_here(job, cap, clip_annotator):
    """The local engine: this process reads the tiles and runs the model, batch after batch."""
    p = job.params
    with TileReader(job.plan, job.tiles.iter_from(0, job.done), p.batch_size) as reader:
        for batch in reader:
            columns, bounds, skips = _describe_batch(batch, cap, job.plan, p.max_nodata, job.query_matrix,
                                                     job.query_fields, clip_annotator, bool(p.heatmap),
                                                     present=job.present)
            job.write(columns, bounds, skips, len(batch.tiles))


@dataclass
class CaptionJob:
    """A planned run with its partial layer open: what an engine needs to caption the tiles not yet
    `done` and hand the results to `write`, whichever process made them."""

    params: CaptionParams
    plan: object
    tiles: object  # TileGrid
    done: np.ndarray  # sorted tile ids already in the partial layer
    writer: gl.LayerWriter
    reporter: object
    query_fields: list
    query_matrix: object  # (queries, dim) float32 or None
    classes: object  # parsed --classes (with --clip)
    model_sha256: str
    clip_model_sha256: str = None

    def __post_init__(self):
        self.skipped = _Skips()
        self.count = len(self.done)  # tiles finished, for progress
        self.appended = 0  # features this run wrote
        # Sorted keys tile_id * intervals + interval of the features in the partial layer whose tile
        # lacks some interval (skipped ones): never written again.
        self.present = np.zeros(0, dtype=np.int64)

    def write(self, columns, bounds, skips, tiles_read):
        """One transaction of results into the partial layer, and progress."""
        self.skipped.extend(skips)
        self.writer.append(columns, bounds)
        self.appended += len(bounds)
        self.count += tiles_read
        self.reporter.advance(self.count, len(self.tiles))


class _Skips:
    """The tiles skipped for nodata: all counted, the first MAX_LISTED listed in the metadata
    (a sparse mosaic may skip millions; memory and metadata stay bounded)."""

    MAX_LISTED = 1000

    def __init__(self):
        self.count, self.listed = 0, []

    def extend(self, skips):
        self.count += len(skips)
        self.listed.extend(skips[:max(0, self.MAX_LISTED - len(self.listed))])

    def metadata(self):
        # In tile order, as the local engine meets them; Ray's workers finish shards in any order.
        listed = sorted(self.listed, key=lambda t: (t["tile_id"], t.get("interval", 0)))
        return {"skipped_count": self.count, "skipped_tiles": listed,
                "skipped_tiles_listed": len(self.listed)}


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _embed_queries(cap, queries, reporter):
    if not queries:
        return [], None
    fields = []
    taken = [f for f, _ in gl.CORE_FIELDS + gl.SERIES_FIELDS] + ["embedding", "fid", gl.GEOMETRY_COLUMN]
    for q in queries:
        unknown = cap.unknown_words(q)
        if unknown:
            reporter.warning(f"query {q!r}: words outside the model's vocabulary: {', '.join(unknown)}")
        name = gl.slug_field(q, taken + fields)
        fields.append(name)
    return fields, cap.embed_text(list(queries)).numpy().astype(np.float32)


def _write_heatmap(p, plan, tiles, part, out, writer):
    """The GeoTIFF from the finished layer's attention maps; its path goes into the metadata."""
    target = os.path.abspath(p.heatmap)
    names = [gl.date_name(d) for d in p.dates]
    # A pair keeps its one "attention" band; a series gets a band an interval.
    bands = None if len(names) == 2 else [(k, f"{names[k]} -> {names[k + 1]}") for k in range(len(names) - 1)]
    try:
        build_heatmap(part, plan.grid, tiles, p.heatmap_scale, target, bands=bands,
                      tags={"RSICRC_LAYER": os.path.abspath(out), "RSICRC_SCALE": str(p.heatmap_scale)})
    except OSError as exc:
        # Every tile is in the partial file: a resume writes the heat map without model work.
        raise BadInput(f"cannot be written ({exc.strerror or exc}; is the disk full?); {part} keeps every tile: "
                       f"make room and rerun with --resume", p.heatmap) from None
    writer.set_metadata({"heatmap": target, "heatmap_scale": p.heatmap_scale})


def _describe_batch(batch, cap, plan, max_nodata, query_matrix, query_fields, clip_annotator, attention=False,
                    present=None):
    """({field: values}, bounds (n, 4), skipped (tile, interval)s) for one batch of tiles: a feature
    per captioned (tile, interval), tile by tile, then interval. `present`: sorted keys
    tile_id * intervals + interval of features already written, neither captioned nor skipped again."""
    fraction = batch.nodata_fractions  # (tiles, intervals)
    n_intervals = fraction.shape[1]
    keys = np.array([t.tile_id for t in batch.tiles], dtype=np.int64)[:, None] * n_intervals + \
        np.arange(n_intervals)
    written = np.isin(keys, present) if present is not None and len(present) else np.zeros(keys.shape, bool)
    # A tile without one valid pixel is never captioned, whatever --max-nodata says.
    skip = ((fraction > max_nodata) | (fraction >= 1.0)) & ~written
    skips = [{"tile_id": batch.tiles[i].tile_id, "row": batch.tiles[i].row, "col": batch.tiles[i].col,
              "nodata_fraction": round(float(fraction[i, k]), 6), "interval": int(k)}
             for i, k in zip(*np.nonzero(skip))]
    which, intervals = np.nonzero(~skip & ~written)  # row-major: tile by tile, then interval
    if which.size == 0:
        return {}, np.zeros((0, 4)), skips
    images, before_rows, after_rows = batch.interval_images(which, intervals)
    # Each date's images preprocessed once, in one call; every interval indexes into them.
    pre = cap.preprocess(images)
    pairs = (pre[before_rows], pre[after_rows])
    result = cap.describe_pairs(*pairs, attention=True) if attention else cap.describe_pairs(*pairs)
    emb = result.embeddings.numpy().astype(np.float32)
    scores = np.asarray(result.change_scores, dtype=np.float64)
    tiles = [batch.tiles[i] for i in which]
    names = [gl.date_name(sp.path) for sp in plan.dates]
    columns = {
        "tile_id": [t.tile_id for t in tiles], "row": [t.row for t in tiles], "col": [t.col for t in tiles],
        "caption": list(result.captions),
        "changed": [bool(c) for c in result.changed],
        "change_score": scores,
        "nodata_fraction": fraction[which, intervals].astype(np.float64),
        "interval": intervals.astype(np.int64),
        "before_name": [names[k] for k in intervals],
        "after_name": [names[k + 1] for k in intervals],
        "most_changed_interval": _most_changed(which, intervals, scores),
        "embedding": [gl.embedding_blob(e) for e in emb],
    }
    if attention:
        columns[gl.ATTENTION_FIELD] = [gl.embedding_blob(m) for m in result.attention.numpy()]
    if query_matrix is not None:
        q_scores = emb @ query_matrix.T
        for k, name in enumerate(query_fields):
            columns[name] = q_scores[:, k].astype(np.float64)
    if clip_annotator is not None:
        clip_rows = clip_annotator.annotate(images[before_rows], images[after_rows])
        for name, _ in clip_annotator.fields:
            columns[name] = [row[name] for row in clip_rows]
    bounds = np.array([plan.grid.tile_bounds(t.row, t.col, t.size) for t in tiles], dtype=np.float64)
    return columns, bounds, skips


def _most_changed(which, intervals, scores):
    """Per feature, its tile's captioned interval with the highest change score (ties: the earliest)."""
    out = np.empty(len(which), dtype=np.int64)
    for tile in np.unique(which):
        mine = np.flatnonzero(which == tile)  # in interval order
        out[mine] = intervals[mine[int(np.argmax(scores[mine]))]]
    return out


def _metadata(p, plan, cap, query_fields, fingerprint, clip_annotator, clip):
    from rsicrc import __version__

    params = {k: v for k, v in asdict(p).items() if k not in ("output",)}
    params.update(before=source_path(p.before), after=source_path(p.after), later=[source_path(d) for d in p.later])
    names = [gl.date_name(d) for d in p.dates]
    meta = {
        "model_source": cap.source,
        "model_sha256": cap.sha256,
        "model_config": cap.config,
        "embedding_dim": int(cap.embedding_dim),
        "queries": dict(zip(query_fields, p.queries)),
        "params": {**params, "grid": plan.describe()},
        "software_version": __version__,
        "created": _now(),
        "run_fingerprint": fingerprint,
        "dates": [source_path(d) for d in p.dates],
        "intervals": [{"interval": k, "before": names[k], "after": names[k + 1]} for k in range(len(names) - 1)],
    }
    if clip_annotator is not None:
        meta.update(clip_annotator.metadata())
        dim = getattr(clip, "embedding_dim", None)
        if dim is not None:
            meta["clip_embedding_dim"] = int(dim)
    return meta
