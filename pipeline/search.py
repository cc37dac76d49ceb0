"""`rsicrc search`: score every feature of a layer against a text from its stored embeddings.

No image is read again: the RSICRC text embedding (or, with --clip, the RS-M-CLIP one) is
compared with each tile's stored embedding, the scores are written to a field in one
transaction, and the best tiles are returned.
"""
from dataclasses import dataclass

import numpy as np

from . import gpkg_layer as gl
from .errors import BadInput
from .models import load_captioner, load_clip_encoder
from .layer_file import open_layer


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


def run_search(layer, text, reporter, top=10, field=None, model=None, device="auto", clip=False,
               clip_model=None, when="after", change=False, captioner=None, clip_encoder=None):
    if not text or not text.strip():
        raise BadInput("the search text is empty")
    if top < 1:
        raise BadInput(f"--top must be at least 1, got {top}")
    if when not in ("before", "after"):
        raise BadInput(f"--when must be before or after, got {when!r}")
    if field is not None:
        gl.check_field_name(field)
    con, meta = open_layer(layer)
    try:
        cols = gl.columns(con)
        if clip:
            scores, fids, field_name = _clip_scores(con, meta, cols, layer, text, field, clip_model, device,
                                                    when, change, clip_encoder)
        else:
            scores, fids, field_name = _rsicrc_scores(con, meta, cols, layer, text, field, model, device,
                                                      reporter, captioner)
        with con:
            gl.add_real_field(con, field_name)
            con.executemany(f'UPDATE "{gl.LAYER}" SET "{field_name}" = ? WHERE fid = ?',
                            zip(scores.astype(float).tolist(), fids.tolist()))
            queries = dict(meta.get("queries") or {})
            queries[field_name] = text
            record = {"queries": queries}
            if clip:
                clip_queries = dict(meta.get("clip_queries") or {})
                clip_queries[field_name] = {"text": text, "when": when, "change": bool(change)}
                record["clip_queries"] = clip_queries
            gl.write_metadata(con, record)
        order = np.argsort(-scores, kind="stable")[:top]
        hits = [_hit(con, int(fids[i]), float(scores[i])) for i in order]
        return SearchResult(field_name, hits, len(fids))
    finally:
        con.close()


def _hit(con, fid, score):
    tile_id, caption, geom = con.execute(
        f'SELECT tile_id, caption, geom FROM "{gl.LAYER}" WHERE fid = ?', (fid,)).fetchone()
    minx, maxx, miny, maxy = gl.blob_envelope(geom)
    return Hit(tile_id, score, caption, ((minx + maxx) / 2, (miny + maxy) / 2))


def _stored_clip(con, dim):
    """fids and the (N, dim) BEFORE and AFTER CLIP matrices; a missing BLOB is a row of NaN."""
    from .clip_fields import blobs_to_matrix

    rows = con.execute(f'SELECT fid, clip_before, clip_after FROM "{gl.LAYER}" ORDER BY fid').fetchall()
    fids = np.array([r[0] for r in rows], dtype=np.int64)
    return fids, blobs_to_matrix([r[1] for r in rows], dim), blobs_to_matrix([r[2] for r in rows], dim)


def _rsicrc_scores(con, meta, cols, layer, text, field, model, device, reporter, captioner):
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
    fids = np.zeros(0, dtype=np.int64)
    scores = []
    fid_parts = []
    for f, m in gl.iter_blobs(con, "embedding"):
        fid_parts.append(f)
        scores.append(m @ query)
    if fid_parts:
        fids = np.concatenate(fid_parts)
    # The same text always lands in the same field, so repeating a search updates it in place.
    name = field or gl.slug_field(text, [])
    return (np.concatenate(scores) if scores else np.zeros(0)), fids, name


def _clip_scores(con, meta, cols, layer, text, field, clip_model, device, when, change, clip_encoder):
    from .clip_fields import ClipFieldsMissingError, clip_scores, require_clip_fields

    try:
        require_clip_fields(cols, str(layer))
    except ClipFieldsMissingError as e:
        raise BadInput(str(e)) from None

    if clip_encoder is None:
        source = clip_model or meta.get("clip_model_source")
        clip_encoder = load_clip_encoder(source, device)
        if meta.get("clip_model_sha256") and clip_encoder.sha256 != meta.get("clip_model_sha256"):
            raise BadInput(f"its CLIP embeddings come from sha256 {meta.get('clip_model_sha256')}, but {source} "
                           f"has sha256 {clip_encoder.sha256}; search with the same CLIP model", layer)
    try:
        dim = int(meta.get("clip_embedding_dim") or clip_encoder.embedding_dim)
        fids, before, after = _stored_clip(con, dim)
        if not len(fids):
            return np.zeros(0), fids, field or "cq_" + gl.slug_field(text, [])[2:]
        scores = np.asarray(clip_scores(clip_encoder, text, before, after, when=when, change=change),
                            dtype=np.float64)
    except ValueError as e:  # e.g. embeddings of another CLIP model's width
        raise BadInput(str(e), layer) from None
    tag = "cq_" + gl.slug_field(text, [])[2:]
    if change:
        tag += "_chg"
    elif when == "before":
        tag += "_bef"
    return scores, fids, field or tag[:48]
