"""`rsicrc caption`: check the pair, cut tiles, run the model in batches, write the GeoPackage.

The layer is built in OUT + ".partial" next to the output and moved into place only once every
tile is written, so OUT is either absent, a previous complete file, or the new complete file.
Each batch is one SQLite transaction; an interrupted run (Ctrl-C, SIGTERM, a kill) leaves a
partial file of whole batches that `--resume` finishes. A resumed run must be the same job: its
fingerprint (inputs, grid, tiling, bands, model sha256, queries, CLIP settings) is compared with
the one stored in the partial file.
"""
import datetime
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import gpkg_layer as gl
from .errors import BadInput
from .gpkg_layer import partial_path
from .models import load_captioner, load_clip_encoder
from .raster_pair import parse_bands, plan_pair
from .tile_reader import TileReader
from .tiling import tile_grid

# The model package's defaults, repeated because importing rsicrc.model loads torch, which the
# CLI avoids until the pair checks have passed (tests/pipeline/test_caption.py pins them equal).
DEFAULT_MODEL = "rogerferrod/RSICRC"
DEFAULT_CLIP_MODEL = "hf-hub:joaodaniel/RS-M-CLIP"


def default_model():
    return os.environ.get("RSICRC_MODEL") or DEFAULT_MODEL


def default_clip_model():
    return os.environ.get("RSICRC_CLIP_MODEL") or DEFAULT_CLIP_MODEL


@dataclass
class CaptionParams:
    before: str
    after: str
    output: str
    model: str = field(default_factory=default_model)
    bands: object = None  # "4,3,2" or [4, 3, 2] or None
    tile_size: int = 256
    overlap: int = 0
    batch_size: int = 16
    device: str = "auto"
    queries: list = field(default_factory=list)
    resume: object = False  # True: continue the partial file; "auto": only if it is the same job
    reproject: bool = False
    target_resolution: float = None
    max_nodata: float = 0.5
    prefetch: int = 2
    clip: bool = False
    clip_model: str = field(default_factory=default_clip_model)
    classes: str = None


@dataclass
class RunSummary:
    output: str
    features: int
    skipped: int
    total: int
    resumed_tiles: int


def _check_params(p):
    if p.tile_size < 32:
        raise BadInput(f"--tile-size must be at least 32 px, got {p.tile_size}")
    if not 0 <= p.overlap < p.tile_size:
        raise BadInput(f"--overlap must be in [0, tile size), got {p.overlap}")
    if p.batch_size < 1:
        raise BadInput(f"--batch-size must be at least 1, got {p.batch_size}")
    if not 0.0 <= p.max_nodata <= 1.0:
        raise BadInput(f"--max-nodata must be a fraction in [0, 1], got {p.max_nodata}")
    out = Path(p.output)
    if not out.parent.is_dir():
        raise BadInput("output folder does not exist", out.parent)
    if out.is_dir():
        raise BadInput("is a folder; give a .gpkg file name", out)
    for src in (p.before, p.after):
        if os.path.exists(src) and os.path.exists(out) and os.path.samefile(src, out):
            raise BadInput("output would overwrite an input raster", out)
    if any(not q.strip() for q in p.queries):
        raise BadInput("--query texts must not be empty")


def _file_stamp(path):
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
    }


def _load_clip(p, classes):
    from .clip_fields import ClipTileAnnotator

    clip = load_clip_encoder(p.clip_model, p.device)
    return clip, ClipTileAnnotator(clip, classes)


class _Resume:
    """What a partial file already holds."""

    def __init__(self, path):
        self.path = path
        con = gl.connect(path)
        try:
            self.meta = gl.read_metadata(con) or {}
            self.done = {r[0] for r in con.execute(f'SELECT tile_id FROM "{gl.LAYER}"')}
        finally:
            con.close()
        self.skipped = list(self.meta.get("skipped_tiles") or [])


def _open_resume(p, part, fingerprint):
    if not os.path.exists(part):
        return None
    try:
        state = _Resume(part)
    except Exception as e:
        raise BadInput(f"cannot be resumed ({e}); rerun without --resume", part) from None
    stored = state.meta.get("run_fingerprint")
    if stored is None:
        raise BadInput("is not an rsicrc partial layer; rerun without --resume", part)
    # Compare as stored: JSON turns tuples (e.g. stretch limits) into lists.
    fingerprint = json.loads(json.dumps(fingerprint))
    differing = sorted(k for k, v in fingerprint.items() if v is not None and stored.get(k) != v)
    if differing:
        raise BadInput(f"was made by a different job (differs in: {', '.join(differing)}); "
                       f"rerun without --resume to start over", part)
    return state


def run_caption(p, reporter, captioner=None, clip_annotator=None):
    """Run one caption job; returns RunSummary. `captioner`: an already loaded Captioner."""
    if not isinstance(p.bands, (list, type(None))):
        p.bands = parse_bands(p.bands)
    p.queries = list(p.queries or [])
    _check_params(p)
    plan = plan_pair(p.before, p.after, bands=p.bands, tile_size=p.tile_size, reproject=p.reproject,
                     target_resolution=p.target_resolution)
    for note in plan.warnings:
        reporter.warning(note)
    tiles = tile_grid(plan.window, p.tile_size, p.overlap)

    classes = None
    if p.clip:
        from .clip_fields import parse_classes

        try:
            classes = parse_classes(p.classes)
        except ValueError as e:
            raise BadInput(str(e)) from None

    out = str(p.output)
    part = partial_path(out)
    state = None
    if p.resume:
        try:
            state = _open_resume(p, part, _fingerprint(p, plan))
        except BadInput as e:
            if p.resume != "auto":
                raise
            reporter.warning(f"{e}; starting over")
        if state is None and p.resume != "auto":
            reporter.warning(f"{part}: nothing to resume, starting a new run")
    elif os.path.exists(part):
        reporter.warning(f"{part}: discarding an earlier unfinished run (pass --resume to continue it)")

    cap = captioner or load_captioner(p.model, p.device)
    clip = None
    if p.clip and clip_annotator is None:
        clip, clip_annotator = _load_clip(p, classes)
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
    if state is None:
        if os.path.exists(part):
            os.remove(part)
        _remove_journal(part)
        extra = [(name, "real") for name in query_fields] + [("embedding", "blob")]
        if clip_annotator is not None:
            extra += list(clip_annotator.fields)
        gl.create_layer(part, plan.grid.crs.to_wkt(), extra)

    metadata = _metadata(p, plan, cap, query_fields, fingerprint, clip_annotator, clip)
    if state is not None and "created" in state.meta:
        metadata["created"] = state.meta["created"]
        metadata["resumed"] = _now()
    done_ids = state.done if state else set()
    skipped = state.skipped if state else []
    skipped_ids = {s["tile_id"] for s in skipped}
    todo = [t for t in tiles if t.tile_id not in done_ids and t.tile_id not in skipped_ids]

    con = gl.connect(part)
    try:
        srs = gl.srs_id(con)
        with con:
            gl.write_metadata(con, {**metadata, "complete": False, "skipped_tiles": skipped})
        count = len(tiles) - len(todo)
        reporter.start(len(tiles), out)
        reporter.advance(count, len(tiles))
        with TileReader(plan, todo, p.batch_size, p.prefetch) as reader:
            for batch in reader:
                rows, new_skips = _describe_batch(batch, cap, plan, srs, p.max_nodata, query_matrix,
                                                  query_fields, clip_annotator)
                skipped.extend(new_skips)
                with con:  # one transaction: the batch is in the file whole or not at all
                    gl.insert_features(con, rows)
                    if new_skips:
                        gl.write_metadata(con, {"skipped_tiles": skipped})
                count += len(batch.tiles)
                reporter.advance(count, len(tiles))
        features = con.execute(f'SELECT count(*) FROM "{gl.LAYER}"').fetchone()[0]
        with con:
            gl.update_extent(con)
            gl.write_metadata(con, {"complete": True, "features": features,
                                    "finished": _now()})
    except BaseException:
        con.rollback()
        con.close()
        raise
    con.close()
    os.replace(part, out)
    reporter.done(out, features, len(skipped))
    return RunSummary(out, features, len(skipped), len(tiles), len(tiles) - len(todo))


def _remove_journal(part):
    for suffix in ("-journal", "-wal", "-shm"):
        if os.path.exists(part + suffix):
            os.remove(part + suffix)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _embed_queries(cap, queries, reporter):
    if not queries:
        return [], None
    fields = []
    taken = [f for f, _ in gl.CORE_FIELDS] + ["embedding", "fid", "geom"]
    for q in queries:
        unknown = cap.unknown_words(q)
        if unknown:
            reporter.warning(f"query {q!r}: words outside the model's vocabulary: {', '.join(unknown)}")
        name = gl.slug_field(q, taken + fields)
        fields.append(name)
    return fields, cap.embed_text(list(queries)).numpy().astype(np.float32)


def _describe_batch(batch, cap, plan, srs, max_nodata, query_matrix, query_fields, clip_annotator):
    keep = np.flatnonzero(batch.nodata_fraction <= max_nodata)
    skips = [{"tile_id": t.tile_id, "row": t.row, "col": t.col,
              "nodata_fraction": round(float(batch.nodata_fraction[i]), 6)}
             for i, t in enumerate(batch.tiles) if batch.nodata_fraction[i] > max_nodata]
    if keep.size == 0:
        return [], skips
    before, after = batch.before[keep], batch.after[keep]
    result = cap.describe_pairs(cap.preprocess(before), cap.preprocess(after))
    emb = result.embeddings.numpy().astype(np.float32)
    scores = np.asarray(result.change_scores, dtype=np.float64)
    q_scores = emb @ query_matrix.T if query_matrix is not None else None
    clip_rows = clip_annotator.annotate(before, after) if clip_annotator is not None else None
    rows = []
    for j, i in enumerate(keep):
        t = batch.tiles[i]
        row = {
            "geom": gl.polygon_blob(plan.grid.tile_bounds(t.row, t.col, t.size), srs),
            "tile_id": t.tile_id, "row": t.row, "col": t.col,
            "caption": result.captions[j],
            "changed": bool(result.changed[j]),
            "change_score": float(scores[j]),
            "nodata_fraction": float(batch.nodata_fraction[i]),
        }
        for k, name in enumerate(query_fields):
            row[name] = float(q_scores[j, k])
        row["embedding"] = gl.embedding_blob(emb[j])
        if clip_rows is not None:
            row.update(clip_rows[j])
        rows.append(row)
    return rows, skips


def _metadata(p, plan, cap, query_fields, fingerprint, clip_annotator, clip):
    from rsicrc import __version__

    params = {k: v for k, v in asdict(p).items() if k not in ("output",)}
    params.update(before=os.path.abspath(p.before), after=os.path.abspath(p.after))
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
    }
    if clip_annotator is not None:
        meta.update(clip_annotator.metadata())
        dim = getattr(clip, "embedding_dim", None)
        if dim is not None:
            meta["clip_embedding_dim"] = int(dim)
    return meta
