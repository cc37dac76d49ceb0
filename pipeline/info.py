"""`rsicrc info`: what a layer holds and how it was made."""
from collections import Counter

import numpy as np

from . import gpkg_layer as gl
from .errors import BadInput
from .layer_file import open_layer, read_checked

MODEL_KEYS = ("model_source", "model_sha256", "embedding_dim", "clip_model_source", "clip_model_sha256")


def layer_info(path):
    """A summary of the layer; open_layer has checked the metadata read here (types included)."""
    meta = open_layer(path)
    try:
        info = gl.layer_info(path)
    except gl.LayerError as exc:
        raise BadInput(f"cannot be read ({gl.layer_error_reason(exc)})", path) from None
    captions = Counter()
    changed = 0
    columns = ["caption", "changed"]

    def count():
        nonlocal changed
        for _, table in gl.iter_column_batches(path, columns):
            flags = np.asarray([bool(c) for c in table["changed"]], dtype=bool)
            changed += int(flags.sum())
            # A caption emptied by hand (NULL) is not a caption to count.
            captions.update(c for c, f in zip(table["caption"], flags) if f and isinstance(c, str))

    read_checked(path, "its tiles cannot be read", columns, count)
    params = meta.get("params") or {}
    skipped = meta.get("skipped_tiles") or []
    # skipped_count counts every skipped tile; skipped_tiles lists at most the first 1000 of them
    # (layers made before skipped_count list them all).
    n_skipped = meta["skipped_count"] if meta.get("skipped_count") is not None else len(skipped)
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
        "created": meta.get("created"),
        "software_version": meta.get("software_version"),
        "top_captions": captions.most_common(5),
        **{k: meta[k] for k in MODEL_KEYS if k in meta},
    }


def format_info(info):
    lines = [
        f"{info['path']}: {info['features']} tiles, {info['changed']} changed, {info['skipped']} skipped (nodata)",
        f"  rasters: {info['before']} -> {info['after']} ({info['tile_size']} px tiles, {info['crs']})",
        f"  extent: {info['extent']}",
        f"  model: {info.get('model_source')} (sha256 {str(info.get('model_sha256'))[:12]}..., "
        f"embedding {info.get('embedding_dim')})",
    ]
    if "clip_model_source" in info:
        lines.append(f"  RS-M-CLIP: {info['clip_model_source']} (sha256 {str(info.get('clip_model_sha256'))[:12]}...)")
    lines.append(f"  created {info['created']} by rsicrc {info['software_version']}")
    lines.append(f"  fields: {', '.join(info['fields'])}")
    for name, text in info["queries"].items():
        lines.append(f"  query {name}: {text!r}")
    if info["top_captions"]:
        lines.append("  most frequent change captions:")
        lines += [f"    {n:5d}  {' '.join(c.split())}" for c, n in info["top_captions"]]
    return "\n".join(lines)
