"""The steps of a caption run, shared by every way of running one: open the pair, plan the tiles,
load the models, describe a batch (describe.py), write a batch and finish (job.py).

`rsicrc caption` (run.py: the local engine, time series included), the Ray engine's driver and
workers (ray_engine.py), caption-batch (batch.py) and the map tool's point caption (point.py) are
each these steps in their own order; none has a copy of one.
"""
from dataclasses import dataclass

from ..caption_params import band_list
from ..models import load_captioner
from ..raster.pair_plan import plan_pair
from ..raster.area import area_spec
from .clip_annotator import load_clip_annotator
from .describe import BatchDescriber


def open_pair(p, yes_large=None, windows_only=False):
    """Check the dates of `p` (CaptionParams) and plan their working grid; BadInput naming the file
    at fault. `yes_large` overrides p.yes_large; `windows_only`: a point caption, which reads one
    window of any plan (a web service's too)."""
    return plan_pair(p.before, p.after, bands=band_list(p.bands), tile_size=p.tile_size, reproject=p.reproject,
                     target_resolution=p.target_resolution, overlap=p.overlap,
                     yes_large=p.yes_large if yes_large is None else yes_large, later=p.later,
                     area=area_spec(p), windows_only=windows_only)


def plan_tiles(p, plan):
    """The TileGrid covering the plan's window (the overlap, or its part in the area) with p's tile
    size and overlap, less the tiles outside the area."""
    return plan.tiles(p.tile_size, p.overlap)


@dataclass
class Models:
    captioner: object
    clip_annotator: object = None  # with --clip

    @property
    def clip_sha256(self):
        return self.clip_annotator.metadata().get("clip_model_sha256") if self.clip_annotator is not None else None


def driver_device(p):
    """Where this process loads the models: the Ray engine's workers load their own, so here they
    only give the metadata and the query embeddings, on the CPU."""
    return "cpu" if p.engine == "ray" else p.device


def driver_precision(p):
    """The number format of the model this process loads: the run's, but fp32 beside Ray's workers
    (this CPU may lack bf16, and the driver's model only embeds the queries)."""
    return "fp32" if p.engine == "ray" else p.precision


def load_models(p, classes, device=None, precision=None, captioner=None, clip_annotator=None):
    """The run's Models on `device` (default: the driver's), loading only what is not given."""
    device = device or driver_device(p)
    cap = captioner or load_captioner(p.model, device, precision or driver_precision(p))
    if p.clip and clip_annotator is None:
        clip_annotator = load_clip_annotator(p.clip_model, classes, device)
    return Models(cap, clip_annotator)


def describer(p, plan, models, queries):
    """The BatchDescriber of a run: its models, queries and p's nodata and heat map settings."""
    return BatchDescriber(models.captioner, plan, p.max_nodata, queries, models.clip_annotator,
                          attention=bool(p.heatmap))
