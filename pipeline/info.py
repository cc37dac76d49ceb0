"""`rsicrc info`: what a layer holds and how it was made."""
from collections import Counter

import numpy as np

from .errors import BadInput
from .layer.existing_layer import open_layer, read_checked
from .layer.gpkg import LayerError, iter_column_batches, layer_error_reason, read_info
from .layer.schema import date_name

MODEL_INFO_KEYS = ("model_source", "model_sha256", "embedding_dim", "clip_model_source", "clip_model_sha256")


def layer_info(path):
    """A summary of the layer; open_layer has checked the metadata read here (types included)."""
    meta = open_layer(path)
    try:
        info = read_info(path)
    except LayerError as exc:
        raise BadInput(f"cannot be read ({layer_error_reason(exc)})", path) from None
    captions = Counter()
    changed = 0
    per_interval = Counter(), Counter()  # features, changed ones
    columns = ["caption", "changed"] + (["interval"] if "interval" in info["fields"] else [])

    def count():
        nonlocal changed
        for _, table in iter_column_batches(path, columns):
            flags = np.asarray([bool(c) for c in table["changed"]], dtype=bool)
            changed += int(flags.sum())
            # A caption emptied by hand (NULL) is not a caption to count.
            captions.update(c for c, f in zip(table["caption"], flags) if f and isinstance(c, str))
            for k, f in zip(table.get("interval") or [0] * len(flags), flags):
                per_interval[0][k] += 1
                per_interval[1][k] += int(f)

    read_checked(path, "its tiles cannot be read", columns, count)
    params = meta.get("params") or {}
    skipped = meta.get("skipped_tiles") or []
    # skipped_count counts every skipped tile; skipped_tiles lists at most the first 1000 of them
    # (layers made before skipped_count list them all).
    n_skipped = meta["skipped_count"] if meta.get("skipped_count") is not None else len(skipped)
    dates, intervals = _series(meta, params, path)
    for item in intervals:
        k = item["interval"]
        item.update(features=per_interval[0].get(k, 0), changed=per_interval[1].get(k, 0))
    bounds = info.get("total_bounds")
    extent = [float(v) for v in bounds] if bounds is not None else None
    if extent is not None and not all(np.isfinite(extent)):  # an empty layer: no extent, not NaN
        extent = None
    return {
        "path": str(path),
        "features": int(info["features"]),
        "changed": changed,
        "skipped": int(n_skipped),
        "crs": info.get("crs"),
        "extent": extent,
        "fields": [str(f) for f in info["fields"]],
        "queries": meta.get("queries") or {},
        "tile_size": params.get("tile_size"),
        "before": params.get("before"),
        "after": params.get("after"),
        "dates": dates,
        "intervals": intervals,
        "created": meta.get("created"),
        "software_version": meta.get("software_version"),
        "top_captions": captions.most_common(5),
        **{k: meta[k] for k in MODEL_INFO_KEYS if k in meta},
    }


def _series(meta, params, path):
    """(dates, intervals) of the layer: from its metadata, or for a layer older than time series
    its two rasters and one interval; BadInput when the metadata was edited into something else."""
    dates, intervals = meta.get("dates"), meta.get("intervals")
    if dates is None:
        dates = [d for d in (params.get("before"), params.get("after")) if d is not None]
    if not (isinstance(dates, list) and all(isinstance(d, str) for d in dates)):
        raise BadInput(f"its run metadata item dates is not a list of paths ({str(dates)[:40]!r})", path)
    if intervals is None:
        intervals = [{"interval": 0, "before": date_name(dates[0]), "after": date_name(dates[1])}] \
            if len(dates) == 2 else []
    if not (isinstance(intervals, list) and all(
            isinstance(i, dict) and isinstance(i.get("interval"), int) and not isinstance(i["interval"], bool)
            and isinstance(i.get("before"), str) and isinstance(i.get("after"), str) for i in intervals)):
        raise BadInput(f"its run metadata item intervals is not a list of {{interval, before, after}} "
                       f"({str(intervals)[:40]!r})", path)
    return dates, [dict(i) for i in intervals]


def format_info(info):
    if len(info["dates"]) > 2:
        rasters = f"  dates: {', '.join(str(d) for d in info['dates'])} ({info['tile_size']} px tiles, {info['crs']})"
    else:
        rasters = f"  rasters: {info['before']} -> {info['after']} ({info['tile_size']} px tiles, {info['crs']})"
    what = "tiles" if len(info["intervals"]) <= 1 else "features (a tile an interval)"
    lines = [
        f"{info['path']}: {info['features']} {what}, {info['changed']} changed, {info['skipped']} skipped (nodata)",
        rasters,
        f"  extent: {info['extent']}",
        f"  model: {info.get('model_source')} (sha256 {str(info.get('model_sha256'))[:12]}..., "
        f"embedding {info.get('embedding_dim')})",
    ]
    if "clip_model_source" in info:
        lines.append(f"  RS-M-CLIP: {info['clip_model_source']} (sha256 {str(info.get('clip_model_sha256'))[:12]}...)")
    lines.append(f"  created {info['created']} by rsicrc {info['software_version']}")
    if len(info["intervals"]) > 1:
        lines += [f"  interval {i['interval']}: {i['before']} -> {i['after']}: {i['features']} tiles, "
                  f"{i['changed']} changed" for i in info["intervals"]]
    lines.append(f"  fields: {', '.join(info['fields'])}")
    for name, text in info["queries"].items():
        lines.append(f"  query {name}: {text!r}")
    if info["top_captions"]:
        lines.append("  most frequent change captions:")
        lines += [f"    {n:5d}  {' '.join(c.split())}" for c, n in info["top_captions"]]
    return "\n".join(lines)
