"""`rsicrc info`: what a layer holds and how it was made."""
from collections import Counter

import numpy as np

from . import gpkg_layer as gl
from .layer_file import open_layer

MODEL_KEYS = ("model_source", "model_sha256", "embedding_dim", "clip_model_source", "clip_model_sha256")


def layer_info(path):
    meta = open_layer(path)
    info = gl.layer_info(path)
    captions = Counter()
    changed = 0
    for _, table in gl.iter_column_batches(path, ["caption", "changed"]):
        flags = np.asarray([bool(c) for c in table["changed"]], dtype=bool)
        changed += int(flags.sum())
        captions.update(c for c, f in zip(table["caption"], flags) if f)
    params = meta.get("params") or {}
    skipped = meta.get("skipped_tiles")
    return {
        "path": str(path),
        "features": int(info["features"]),
        "changed": changed,
        "skipped": len(skipped) if isinstance(skipped, list) else 0,
        "crs": info.get("crs"),
        "extent": [float(v) for v in info["total_bounds"]] if info.get("total_bounds") is not None else None,
        "fields": [str(f) for f in info["fields"]],
        "queries": meta.get("queries") if isinstance(meta.get("queries"), dict) else {},
        "tile_size": params.get("tile_size") if isinstance(params, dict) else None,
        "before": params.get("before") if isinstance(params, dict) else None,
        "after": params.get("after") if isinstance(params, dict) else None,
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
        lines += [f"    {n:5d}  {c}" for c, n in info["top_captions"]]
    return "\n".join(lines)
