"""`rsicrc info`: what a layer holds and how it was made."""
from collections import Counter

from . import gpkg_layer as gl
from .layer_file import open_layer

MODEL_KEYS = ("model_source", "model_sha256", "embedding_dim", "clip_model_source", "clip_model_sha256")


def layer_info(path):
    con, meta = open_layer(path)
    try:
        features, changed = con.execute(
            f'SELECT count(*), coalesce(sum(changed), 0) FROM "{gl.LAYER}"').fetchone()
        extent = con.execute("SELECT min_x, min_y, max_x, max_y FROM gpkg_contents WHERE table_name=?",
                             (gl.LAYER,)).fetchone()
        crs = con.execute(
            "SELECT s.organization, s.organization_coordsys_id, s.srs_name FROM gpkg_spatial_ref_sys s "
            "JOIN gpkg_geometry_columns g ON g.srs_id = s.srs_id WHERE g.table_name=?", (gl.LAYER,)).fetchone()
        captions = Counter(r[0] for r in con.execute(f'SELECT caption FROM "{gl.LAYER}" WHERE changed'))
        fields = [c for c in gl.columns(con) if c not in ("fid", "geom")]
    finally:
        con.close()
    params = meta.get("params") or {}
    return {
        "path": str(path),
        "features": features,
        "changed": int(changed),
        "skipped": len(meta.get("skipped_tiles") or []),
        "crs": f"{crs[0]}:{crs[1]}" if crs and crs[0] and crs[0].upper() != "NONE" else (crs[2] if crs else None),
        "extent": list(extent) if extent else None,
        "fields": fields,
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
        lines += [f"    {n:5d}  {c}" for c, n in info["top_captions"]]
    return "\n".join(lines)
