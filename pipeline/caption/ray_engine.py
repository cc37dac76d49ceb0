"""`--engine ray`: the tiles of one caption job captioned by Ray workers (Ray Data).

This process, the driver, plans the job, holds the lock and writes the partial layer as the local
engine does (caption/run.py); only the captioning moves. The tiles not yet done are cut into shards
(pipeline/layer/shards.py), one Ray Data row each; a pool of actors (`map_batches` with a callable
class) loads the models once per actor, reads each shard's windows from the rasters itself (no
pixels pass through the driver, so BEFORE and AFTER must be readable from every node: a shared
path, /vsicurl/ or /vsis3/), describes each batch as the local engine does (describe.py) and
writes the shard's part file.
The driver appends each part to the partial layer as it arrives and removes it.

A worker that dies stops the run rather than being restarted: a crash on a big tile or an
out-of-memory kill would only repeat. The finished shards are in the partial layer or in part
files; `--resume` appends those parts and captions the other shards only.
"""
import contextlib
import dataclasses
import logging
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import BadInput, PipelineFailure
from ..layer.schema import GEOMETRY_COLUMN
from ..layer.shards import (PartBuilder, Shard, clear_parts, list_parts, mark_done, part_first, part_schema, parts_dir,
                            plan_shards, read_markers, read_part, shard_tiles)

# A shard is this many batches: big enough that per-task overhead (milliseconds) vanishes next to
# the model work, small enough that a dead worker loses little and progress moves.
SHARD_BATCHES = 16
# Test-only: a folder where workers note their pid and shards and may hold after their first
# shard (tests/pipeline/test_ray_engine.py kills them there).
TEST_HOOK_ENV = "RSICRC_RAY_TEST_HOOK"


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise BadInput("--engine ray needs Ray, which is not installed: pip install 'rsicrc[ray]'") from None
    return ray


@dataclass
class WorkerSpec:
    """What every actor gets (pickled once per actor)."""

    params: object  # CaptionParams
    plan: object
    tile_grid: object
    classes: object
    queries: object  # describe.Queries
    model_sha256: str
    clip_model_sha256: str
    device: str
    folder: str
    schema: object  # the part files' pyarrow schema
    hook: str = None


class ShardWorker:
    """A Ray Data actor: the models, loaded once; each call captions a batch of shards."""

    def __init__(self, spec):
        self.spec, self.error = spec, None
        self._note("pid", f"{os.getpid()}\n", f"pid-{os.getpid()}")
        try:
            self._load()
        except BadInput as exc:  # said for each shard it is given: Ray would only retry the load
            self.error = str(exc)

    def _load(self):
        from .steps import describer, load_models

        spec = self.spec
        models = load_models(spec.params, spec.classes, spec.device, spec.params.precision)
        if models.captioner.sha256 != spec.model_sha256:
            raise BadInput(f"the model on this Ray worker ({os.uname().nodename}) is not the driver's (sha256 "
                           f"{models.captioner.sha256[:12]} against {spec.model_sha256[:12]})", spec.params.model)
        self.describer = describer(spec.params, spec.plan, models, spec.queries)

    def __call__(self, batch):
        """{"part": path, "error": ""} a shard, or a BadInput's one line as "error": returned, not
        raised, because Ray's wrapping of a raised error loses the error itself."""
        parts, errors = [], []
        for first, stop, skip in zip(batch["first"], batch["stop"], batch["skip"]):
            path, error = "", self.error
            if error is None:
                try:
                    path = self._caption(Shard(int(first), int(stop), [int(i) for i in skip.split()]))
                except BadInput as exc:
                    error = str(exc)
            parts.append(path)
            errors.append(error or "")
        return {"part": np.array(parts), "error": np.array(errors)}

    def _caption(self, shard):
        from ..raster.tile_reader import TileReader

        s = self.spec
        self._note("started", f"{shard.first}\n")
        part = PartBuilder(s.schema, shard)
        with TileReader(s.plan, shard_tiles(s.tile_grid, shard), s.params.batch_size) as reader:
            for batch in reader:
                part.add(self.describer.describe(batch))
        path = part.write(s.folder)
        self._note("done", "", f"done-{shard.first}")
        self._hold()
        return path

    def _note(self, what, text, name=None):
        if self.spec.hook:
            with open(os.path.join(self.spec.hook, name or what), "a") as f:
                f.write(text)

    def _hold(self):
        """Test hook: with `hold` in the folder, stop here until `release` appears (or a kill)."""
        import time

        hook = self.spec.hook
        while hook and os.path.exists(os.path.join(hook, "hold")) and \
                not os.path.exists(os.path.join(hook, "release")):
            time.sleep(0.05)


def caption_on_ray(job, resumed):
    """Caption the tiles `job` has not done on Ray workers, appending their results to its layer."""
    ray = import_ray()
    p = job.params
    folder = parts_dir(job.output)
    if resumed:
        _append_left_parts(job, folder)
    else:
        clear_parts(folder)  # of an earlier run whose partial layer was discarded
    shards = plan_shards(job.tiles.n_ids, job.done, p.batch_size * SHARD_BATCHES, job.tiles.keep)
    if not shards:
        clear_parts(folder)
        return
    os.makedirs(folder, exist_ok=True)
    # Ray prints its workers' and raylet's messages to sys.stdout, which --progress json keeps for
    # JSON lines (the reporter holds the stream itself): Ray's go to stderr meanwhile.
    with contextlib.redirect_stdout(sys.stderr):
        _caption_shards(ray, job, shards, folder)
    clear_parts(folder)


def _caption_shards(ray, job, shards, folder):
    p = job.params
    started = connect(ray, p)
    # Ray Data logs each run and, on a failed task, its traceback: the reporter and the one-line
    # error below say what matters.
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.CRITICAL)
    try:
        rows = iter(_dataset(ray, job, shards, folder).iter_rows())
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except Exception as exc:  # from Ray or a worker; the driver's own writes are not in here
                raise PipelineFailure(f"a Ray worker failed ({_one_line(exc)}); {job.writer.path} and {folder} "
                                      f"keep the finished shards: rerun with --resume") from None
            if row["error"]:  # bad input met by a worker (an unreadable block, a model): as here
                clear_parts(folder)
                raise BadInput(str(row["error"]))
            _append_part(job, row["part"])
    finally:
        data_log.setLevel(level)
        if started:
            ray.shutdown()


def _append_part(job, path):
    part = read_part(path)
    job.write(part)
    mark_done(os.path.dirname(path), part_first(path), part.skips)
    os.remove(path)


def _append_left_parts(job, folder):
    """What the runs before this one finished: markers, and the parts that a driver which died had
    not appended yet (or appended and not removed). Their tiles join `job.done`, skipped ones too."""
    markers = read_markers(folder)
    for path in list_parts(folder):
        part, _ = read_part(path).without(job.done)
        job.write(dataclasses.replace(part, skips=[], tiles_read=len(part.bounds)))  # its skips: with the markers
        job.done = np.union1d(job.done, np.asarray(part.columns["tile_id"], dtype=np.int64))
        if part_first(path) not in markers:
            markers[part_first(path)] = part.skips
            mark_done(folder, part_first(path), part.skips)
        os.remove(path)
    skips = [t for first in sorted(markers) for t in markers[first]]
    job.skipped.extend(skips)
    job.count += len(skips)
    job.done = np.union1d(job.done, np.array([t["tile_id"] for t in skips], dtype=np.int64))
    for name in os.listdir(folder) if os.path.isdir(folder) else []:  # workers that died while writing
        if ".tmp-" in name:
            os.remove(os.path.join(folder, name))


def connect(ray, p):
    """ray.init as the options say; False when this process was already connected."""
    if ray.is_initialized():
        return False
    options = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        if p.ray_address:
            ray.init(address=p.ray_address, **options)
        else:
            # "local": a new Ray of this process, even where `ray start` runs one here.
            ray.init(address="local", num_cpus=p.workers or os.cpu_count(), **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = p.ray_address or "a local Ray"
        raise BadInput(f"--ray-address {where}: cannot connect ({str(exc).splitlines()[0]})"
                       if p.ray_address else f"cannot start {where} ({str(exc).splitlines()[0]})") from None
    return True


def _dataset(ray, job, shards, folder):
    p = job.params
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = gpus > 0 and p.device not in ("cpu", "mps")
    workers = p.workers or (gpus if use_gpu else max(1, int(resources.get("CPU", 1))))
    workers = max(1, min(workers, len(shards)))
    spec = WorkerSpec(p, job.plan, job.tiles, job.classes, job.queries, job.model_sha256, job.clip_model_sha256,
                      "cuda" if use_gpu else p.device, folder, part_schema(job.writer.schema, GEOMETRY_COLUMN),
                      os.environ.get(TEST_HOOK_ENV))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the job's reporter shows progress
    context.print_on_execution_start = False
    rows = [{"first": s.first, "stop": s.stop, "skip": " ".join(map(str, s.skip))} for s in shards]
    # One block a shard: a shard is one task, so shards spread over the actors and finish one by one.
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    with warnings.catch_warnings():
        # Ray Data's documented way to turn its actor restarts off is still the remote-args keywords.
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(ShardWorker, fn_constructor_kwargs={"spec": spec}, batch_size=1,
                              batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
                              max_restarts=0, max_task_retries=0,
                              **({"num_gpus": 1} if use_gpu else {"num_cpus": 1}))


def _one_line(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
