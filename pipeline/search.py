"""`rsicrc search`: score every feature of a layer against a text from its stored embeddings.

No image is read again: the RSICRC text embedding (or, with --clip, the RS-M-CLIP one) is
compared with each tile's stored embedding, the scores are written to a field in one
transaction, and the best tiles are returned. A tile without a usable embedding (NULL, e.g.
hand-edited) gets no score (NULL) and is never a hit.
"""
from dataclasses import dataclass

import numpy as np

from . import gpkg_layer as gl
from .errors import BadInput
from .layer_file import open_layer
from .models import load_captioner, load_clip_encoder
from .output_file import OutputLock

READ_CHUNK = 4096


@dataclass
class Hit:
    tile_id: int
    score: float
    caption: str
    centroid: tuple


@dataclass
class SearchResult:
    field: str
    hits: list
    features: int
    scored: int


def run_search(layer, text, reporter, top=10, field=None, model=None, device="auto", clip=False,
               clip_model=None, when=None, change=False, captioner=None, clip_encoder=None):
    if not text or not text.strip():
        raise BadInput("the search text is empty")
    if top < 1:
        raise BadInput(f"--top must be at least 1, got {top}")
    if not clip and (when is not None or change):
        raise BadInput("--when and --change need --clip (they choose which RS-M-CLIP image is compared)")
    when = when or "after"
    if when not in ("before", "after"):
        raise BadInput(f"--when must be before or after, got {when!r}")
    if field is not None:
        gl.check_field_name(field)
    meta = open_layer(layer)
    with OutputLock(layer):
        if clip:
            fids, scores, field_name = _clip_scores(meta, layer, text, field, clip_model, device, when, change,
                                                    clip_encoder)
        else:
            fids, scores, field_name = _rsicrc_scores(meta, layer, text, field, model, device, reporter,
                                                      captioner)
        try:
            gl.write_scores(layer, field_name, fids, scores)
        except Exception as exc:  # sqlite3 errors: read-only file, locked database, disk full
            raise BadInput(f"the scores cannot be written ({exc})", layer) from None
        queries = dict(meta.get("queries") or {})
        queries[field_name] = text
        record = {"queries": queries}
        if clip:
            clip_queries = dict(meta.get("clip_queries") or {})
            clip_queries[field_name] = {"text": text, "when": when, "change": bool(change)}
            record["clip_queries"] = clip_queries
        gl.write_metadata(layer, record)
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.argsort(-scores[finite], kind="stable")][:top]
    return SearchResult(field_name, _hits(layer, fids[order], scores[order]), len(fids), int(finite.size))


def _hits(layer, fids, scores):
    import shapely

    if not len(fids):
        return []
    rows = gl.read_columns(layer, ["tile_id", "caption"], fids=fids, geometry=True)
    by_fid = {int(f): i for i, f in enumerate(rows["fid"])}
    hits = []
    for fid, score in zip(fids, scores):
        i = by_fid[int(fid)]
        geom = rows[gl.GEOMETRY_COLUMN][i]
        centre = shapely.centroid(shapely.from_wkb(geom)) if geom is not None else None
        hits.append(Hit(int(rows["tile_id"][i]), float(score), rows["caption"][i],
                        (float(centre.x), float(centre.y)) if centre is not None else (float("nan"),) * 2))
    return hits


def _stored(layer, columns, dim):
    """fids and one (N, dim) matrix per BLOB column; a missing BLOB is a row of NaN."""
    fid_parts, parts = [], {c: [] for c in columns}
    try:
        for fids, table in gl.iter_column_batches(layer, columns, READ_CHUNK):
            fid_parts.append(fids)
            for c in columns:
                parts[c].append(gl.blobs_to_matrix(table[c], dim))
    except ValueError as exc:  # a BLOB of the wrong length: tampered, or another model's
        raise BadInput(f"{exc}; the layer's embeddings do not fit its metadata", layer) from None
    fids = np.concatenate(fid_parts) if fid_parts else np.zeros(0, np.int64)
    return fids, [np.concatenate(parts[c]) if parts[c] else np.zeros((0, dim), np.float32) for c in columns]


def _rsicrc_scores(meta, layer, text, field, model, device, reporter, captioner):
    source = model or meta.get("model_source")
    if captioner is None:
        captioner = load_captioner(source, device)
    if captioner.sha256 != meta.get("model_sha256"):
        raise BadInput(f"its embeddings come from model sha256 {meta.get('model_sha256')}, but {source} has "
                       f"sha256 {captioner.sha256}; search with the model that made the layer (--model)", layer)
    unknown = captioner.unknown_words(text)
    if unknown:
        reporter.warning(f"words outside the model's vocabulary (ignored as unknown): {', '.join(unknown)}")
    query = captioner.embed_text([text]).numpy().astype(np.float32)[0]
    fids, (matrix,) = _stored(layer, ["embedding"], int(meta["embedding_dim"]))
    # The same text always lands in the same field, so repeating a search updates it in place.
    return fids, (matrix @ query).astype(np.float64), field or gl.slug_field(text, [])


def _clip_scores(meta, layer, text, field, clip_model, device, when, change, clip_encoder):
    from .clip_fields import ClipFieldsMissingError, clip_scores, require_clip_fields

    try:
        require_clip_fields(gl.layer_info(layer)["fields"], str(layer))
    except ClipFieldsMissingError as e:
        raise BadInput(str(e)) from None

    if clip_encoder is None:
        source = clip_model or meta.get("clip_model_source")
        clip_encoder = load_clip_encoder(source, device)
        if meta.get("clip_model_sha256") and clip_encoder.sha256 != meta.get("clip_model_sha256"):
            raise BadInput(f"its CLIP embeddings come from sha256 {meta.get('clip_model_sha256')}, but {source} "
                           f"has sha256 {clip_encoder.sha256}; search with the same CLIP model", layer)
    tag = "cq_" + gl.slug_field(text, [])[2:]
    if change:
        tag += "_chg"
    elif when == "before":
        tag += "_bef"
    dim = int(meta.get("clip_embedding_dim") or clip_encoder.embedding_dim)
    fids, (before, after) = _stored(layer, ["clip_before", "clip_after"], dim)
    if not len(fids):
        return fids, np.zeros(0), field or tag[:48]
    try:
        scores = np.asarray(clip_scores(clip_encoder, text, before, after, when=when, change=change),
                            dtype=np.float64)
    except ValueError as e:  # e.g. embeddings of another CLIP model's width
        raise BadInput(str(e), layer) from None
    return fids, scores, field or tag[:48]
