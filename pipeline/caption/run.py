"""`rsicrc caption`: check the pair, cut tiles, run the model in batches, write the GeoPackage.

The run is the steps of steps.py in order, under the output's one-writer lock: open the pair and
plan its tiles, find what a partial file already holds (resume.py), load the models, open the
partial layer (job.py), caption the tiles not yet done (here batch after batch, or on Ray), then
finish: the heat map and the move into place.

A time series (`caption D1 D2 D3 ...`) is captioned on the same tiles, interval by interval
(D1 -> D2 is interval 0): a batch reads every date of its tiles once and captions all its (tile,
interval) pairs in one model call (describe.py). A pair is the series of two dates: one
interval, the layer it always was plus the series fields (interval 0).
"""
import itertools
import os

from ..caption_params import CaptionParams, ParamError  # noqa: F401 - CaptionParams: the API
from ..errors import BadInput
from ..layer.gpkg import LayerError, layer_error_reason
from ..layer.schema import partial_path
from ..output_file import LAYER_OUTPUT, OutputLock, check_output, check_replaceable, discard_partial
from ..raster.sources import SourceUnreachable
from ..raster.tile_reader import TileReader
from .clip_annotator import parsed_classes
from .describe import embed_queries
from .heatmap import check_heatmap_output
from .job import open_job
from .resume import resume_state, run_fingerprint, same_models
from .steps import describer, load_models, open_pair, plan_tiles

MAX_MODEL_FILES = 1000  # a model folder's files checked against the output (a folder of millions is not one)


def run_caption(p, reporter, captioner=None, clip_annotator=None):
    """Run one caption job; returns RunSummary. `captioner`, `clip_annotator`: models already loaded."""
    try:
        p.check()
    except ParamError as e:
        raise BadInput(str(e)) from None
    if p.engine == "ray":
        from .ray_engine import import_ray

        import_ray()  # before any work: is the extra installed?
    out = str(p.output)
    found = {"layer": check_output(out, LAYER_OUTPUT, [(d, "an input raster") for d in p.dates] + model_files(p),
                                   overwrite=p.overwrite, partial=partial_path(out))}
    if p.heatmap:
        found["heatmap"] = check_heatmap_output(p.heatmap, p.dates, out, overwrite=p.overwrite)
    with OutputLock(out):
        check_replaceable(out)
        return _run_locked(p, reporter, captioner, clip_annotator, found)


def model_files(p):
    """[(file, what it is)] of the local model folders of the run: never to be its output."""
    folders = [(p.model, "a file of the model")] + ([(p.clip_model, "a file of the RS-M-CLIP model")] if p.clip else [])
    return [(entry.path, what) for folder, what in folders if folder and os.path.isdir(folder)
            for entry in itertools.islice(os.scandir(folder), MAX_MODEL_FILES)]


def _run_locked(p, reporter, captioner, clip_annotator, found):
    plan = open_pair(p)
    for note in plan.warnings:
        reporter.warning(note)
    tiles = plan_tiles(p, plan)
    classes = parsed_classes(p)
    part = partial_path(p.output)
    state = resume_state(p, part, run_fingerprint(p, plan), reporter)
    models = load_models(p, classes, captioner=captioner, clip_annotator=clip_annotator)
    fingerprint = run_fingerprint(p, plan, models.captioner.sha256, models.clip_sha256)
    state = same_models(state, fingerprint, p, part, reporter)
    queries = embed_queries(models.captioner, p.queries, reporter)
    job = open_job(p, plan, tiles, state, models, queries, fingerprint, classes, reporter, found)
    reporter.start(len(tiles), str(p.output))
    reporter.advance(job.count, len(tiles))
    features = _caption(job, models, resumed=state is not None)
    return job.finish(features)


def _caption(job, models, resumed):
    """Caption the job's tiles not yet done with the run's engine; the layer's feature count.
    A failed write or an unreadable input keeps the partial file only when it is worth resuming."""
    part = job.writer.path
    try:
        if job.params.engine == "ray":
            from .ray_engine import caption_on_ray

            caption_on_ray(job, resumed=resumed)
        else:
            caption_here(job, describer(job.params, job.plan, models, job.queries))
        return job.complete()
    except LayerError as exc:
        if not resumed and not job.appended:  # nothing of this run to keep
            discard_partial(part)
            raise BadInput(f"cannot be written ({layer_error_reason(exc)}; is the disk full?)", job.output) from None
        # Whole batches are in the file (one transaction each): once there is room, --resume goes on.
        raise BadInput(f"writing stopped ({layer_error_reason(exc)}; is the disk full?); {part} keeps the finished "
                       f"tiles: make room and rerun with --resume", job.output) from None
    except SourceUnreachable as exc:  # the server may answer again: the finished tiles are kept
        raise BadInput(f"{exc}; {part} keeps the {job.count:,} finished tiles: rerun with --resume once it answers"
                       ) from None
    except BadInput:
        if not resumed:  # an unreadable input: what this run wrote cannot be resumed usefully
            discard_partial(part)
        raise


def caption_here(job, batch_describer):
    """The local engine: this process reads the tiles and runs the model, batch after batch."""
    with TileReader(job.plan, job.tiles.iter_from(0, job.done), job.params.batch_size) as reader:
        for batch in reader:
            job.write(batch_describer.describe(batch, present=job.present))
