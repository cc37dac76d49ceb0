"""The run metadata of a caption layer (docs/interfaces.md): the models, the queries, the options
and grid, the dates and intervals, the fingerprint a resumed run is compared with."""
import datetime
from dataclasses import asdict

from ..layer.schema import date_name
from ..raster.sources import source_path


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_metadata(p, plan, models, queries, fingerprint):
    from rsicrc import __version__

    cap, clip_annotator = models.captioner, models.clip_annotator
    params = {k: v for k, v in asdict(p).items() if k not in ("output",)}
    params.update(before=source_path(p.before), after=source_path(p.after), later=[source_path(d) for d in p.later])
    names = [date_name(d) for d in p.dates]
    meta = {
        "model_source": cap.source,
        "model_sha256": cap.sha256,
        "model_config": cap.config,
        "embedding_dim": int(cap.embedding_dim),
        "queries": dict(zip(queries.fields, p.queries)),
        "params": {**params, "grid": plan.describe()},
        "software_version": __version__,
        "created": utc_now(),
        "run_fingerprint": fingerprint,
        "dates": [source_path(d) for d in p.dates],
        "intervals": [{"interval": k, "before": names[k], "after": names[k + 1]} for k in range(len(names) - 1)],
    }
    if plan.area is not None:  # the area as given, in its own CRS, and the tiles it planned
        meta["area"] = {"source": plan.area.source, **plan.area.describe(), "tiles": int(plan.keep.sum())}
    if clip_annotator is not None:
        meta.update(clip_annotator.metadata())
        dim = getattr(getattr(clip_annotator, "clip", None), "embedding_dim", None)
        if dim is not None:
            meta["clip_embedding_dim"] = int(dim)
    return meta
