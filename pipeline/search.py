"""`rsicrc search`: score every feature of a layer against a text from its stored embeddings.

No image is read again: the RSICRC text embedding (or, with --clip, the RS-M-CLIP one) is
compared with each tile's stored embedding, the scores are written to a field in one
transaction, and the best tiles are returned. A tile without a usable embedding (NULL, e.g.
hand-edited) gets no score (NULL) and is never a hit; an embedding of the wrong length is refused
(exit code 2), naming the tile. The file is checked to be writable before any model is loaded.
On a layer with the time-series fields (every layer since time series, a pair's at interval 0) a
hit also says which interval of the dates it is: one tile can be a hit once per interval.
"""
import json
from dataclasses import dataclass

import numpy as np

from .caption_params import MAX_TEXT_CHARS
from .errors import BadInput
from .layer.blobs import BlobLengthError, blobs_to_matrix
from .layer.existing_layer import check_writable, field_dtypes, open_layer, read_checked
from .layer.gpkg import iter_column_batches, read_columns, write_metadata
from .layer.schema import GEOMETRY_COLUMN, check_field_name, slug_field
from .layer.sqlite_edits import write_scores
from .models import load_captioner, load_clip_encoder
from .output_file import OutputLock
from .scores import top_indices

READ_CHUNK = 4096
# The fields that say which interval a hit captions (layer/schema.SERIES_FIELDS), in hit order;
# a layer from before time series has none of them, and its hits go without.
HIT_SERIES_FIELDS = ("interval", "before_name", "after_name")


@dataclass
class Hit:
    tile_id: object  # int; None when the tile's tile_id was emptied by hand
    score: float
    caption: object  # str or None
    centroid: object  # (x, y), or None when the tile's geometry is missing or broken
    interval: object = None  # int, or None when emptied by hand or the layer has no such field
    before_name: object = None  # str or None, as interval
    after_name: object = None


@dataclass
class SearchResult:
    field: str
    hits: list
    features: int
    scored: int
    series: tuple = ()  # which of HIT_SERIES_FIELDS the layer has: those go into each hit

    def as_json(self):
        """The result as strict JSON (never NaN or Infinity: a missing value is null)."""
        return json.dumps({"field": self.field, "features": self.features, "scored": self.scored,
                           "hits": [_json_hit(h, self.series) for h in self.hits]}, allow_nan=False)

    def as_text(self):
        """The lines `rsicrc search` prints: a summary, a header, one line a hit."""
        unscored = self.features - self.scored
        lines = [f"{self.scored} tiles scored into field {self.field}"
                 + (f" ({unscored} without an embedding left empty)" if unscored else "")
                 + f"; top {len(self.hits)}:"]
        # Which interval goes after the centroid, padded so that the captions start in one column.
        dates = [_dates_label(h) for h in self.hits] if self.series else None
        width = max([len("dates"), *map(len, dates)]) if dates is not None else 0
        head = f"  {'interval':>8}  {'dates':<{width}}" if dates is not None else ""
        lines.append(f"{'tile_id':>7}  {'score':>7}  {'centroid x':>14} {'centroid y':>14}{head}  caption")
        for i, h in enumerate(self.hits):
            x, y = (f"{v:14.2f}" for v in h.centroid) if h.centroid is not None else (f"{'-':>14}",) * 2
            tile = h.tile_id if h.tile_id is not None else "-"
            interval = h.interval if h.interval is not None else "-"
            when = f"  {interval:>8}  {dates[i]:<{width}}" if dates is not None else ""
            caption = " ".join(str(h.caption).split()) if h.caption is not None else "-"  # one line a hit
            lines.append(f"{tile:>7}  {h.score:7.4f}  {x} {y}{when}  {caption}")
        return lines


def _dates_label(hit):
    # "->" as in the heat map's band descriptions and `rsicrc info`; names kept on one line.
    names = [" ".join(n.split()) if n is not None else "?" for n in (hit.before_name, hit.after_name)]
    return " -> ".join(names)


def _finite_or_none(v):
    return float(v) if v is not None and np.isfinite(v) else None


def _json_hit(hit, series=()):
    centre = hit.centroid
    return {"tile_id": hit.tile_id, "score": _finite_or_none(hit.score), "caption": hit.caption,
            "centroid": [_finite_or_none(centre[0]), _finite_or_none(centre[1])] if centre is not None else None,
            **{name: getattr(hit, name) for name in series}}


def check_text(text):
    if not isinstance(text, str) or not text.strip():
        raise BadInput("the search text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise BadInput(f"the search text has {len(text):,} characters; give at most {MAX_TEXT_CHARS:,} "
                       f"(the models read only its first words)")
    if "\0" in text:
        raise BadInput("the search text contains a NUL character")


def run_search(layer, text, reporter, top=10, field=None, model=None, device="auto", clip=False,
               clip_model=None, when=None, change=False, captioner=None, clip_encoder=None):
    check_text(text)
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise BadInput(f"--top must be at least 1, got {top}")
    if not clip and (when is not None or change):
        raise BadInput("--when and --change need --clip (they choose which RS-M-CLIP image is compared)")
    when = when or "after"
    if when not in ("before", "after"):
        raise BadInput(f"--when must be before or after, got {when!r}")
    if field is not None:
        check_field_name(field)
    meta = open_layer(layer)
    # Before any model is loaded: a file that cannot take the score field is refused at once.
    check_writable(layer)
    dtypes = field_dtypes(layer)
    if clip:
        from .scores import ClipFieldsMissingError, require_clip_fields

        try:
            require_clip_fields(dtypes, str(layer))
        except ClipFieldsMissingError as e:
            raise BadInput(str(e)) from None
    field_name = field or (_clip_tag(text, when, change) if clip else slug_field(text, []))
    _check_score_field(layer, field_name, dtypes)
    with OutputLock(layer):
        if clip:
            fids, scores = _clip_scores(meta, layer, text, clip_model, device, when, change, clip_encoder)
        else:
            fids, scores = _rsicrc_scores(meta, layer, text, model, device, reporter, captioner)
        try:
            write_scores(layer, field_name, fids, scores)
        except Exception as exc:  # sqlite3 errors: read-only file, locked database, disk full
            raise BadInput(f"the scores cannot be written ({_one_line(exc)})", layer) from None
        queries = dict(meta.get("queries") or {})
        queries[field_name] = text
        record = {"queries": queries}
        if clip:
            clip_queries = dict(meta.get("clip_queries") or {})
            clip_queries[field_name] = {"text": text, "when": when, "change": bool(change)}
            record["clip_queries"] = clip_queries
        write_metadata(layer, record)
    order = top_indices(scores, top)
    series = tuple(name for name in HIT_SERIES_FIELDS if name in dtypes)
    return SearchResult(field_name, _hits(layer, fids[order], scores[order], series), len(fids),
                        int(np.isfinite(scores).sum()), series)


def _one_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_score_field(layer, name, dtypes):
    """A score goes into a new field or a numeric one; a text or other field of the user's is kept."""
    for existing, dtype in dtypes.items():
        if existing.lower() == name.lower() and not (dtype.startswith("float") or dtype.startswith("int")):
            raise BadInput(f"field {existing} exists and holds {dtype} values, not scores; choose another "
                           f"--field", layer)


def _hits(layer, fids, scores, series=()):
    import shapely

    if not len(fids):
        return []
    columns = ["tile_id", "caption", *series]
    rows = read_checked(layer, "reading the best tiles failed", columns,
                 lambda: read_columns(layer, columns, fids=fids, geometry=True))
    by_fid = {int(f): i for i, f in enumerate(rows["fid"])}
    hits = []
    for fid, score in zip(fids, scores):
        i = by_fid[int(fid)]
        # A tile whose geometry was emptied or overwritten is still a hit: its embedding and score
        # are sound, and the tile is named by tile_id; only its centroid is unknown (null).
        when = {name: (_int_or_none if name == "interval" else _text)(rows[name][i]) for name in series}
        hits.append(Hit(_int_or_none(rows["tile_id"][i]), float(score), _text(rows["caption"][i]),
                        _centroid(shapely, rows[GEOMETRY_COLUMN][i]), **when))
    return hits


def _int_or_none(value):
    """An integer field's value (tile_id, interval): int, or None for NULL."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None  # NULL (pyogrio reads an integer column holding NULLs as float, NULL as NaN)
    return int(value)


def _text(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _centroid(shapely, wkb):
    if wkb is None:
        return None
    geom = shapely.from_wkb(wkb, on_invalid="ignore")
    if geom is None or shapely.is_empty(geom):
        return None
    centre = shapely.centroid(geom)
    x, y = float(centre.x), float(centre.y)
    return (x, y) if np.isfinite(x) and np.isfinite(y) else None


def _stored(layer, columns, dim):
    """fids and one (N, dim) matrix per BLOB column; a missing BLOB is a row of NaN.

    A NULL or empty BLOB is a tile without an embedding (a hand edit in QGIS clears it): it gets
    no score and the others are searched. A BLOB of the wrong length is refused, naming the tile:
    it is damage or another model's embedding, and searching on would rank the layer with tiles
    silently missing (or, when every BLOB is of another width, not at all).
    """
    fid_parts, parts = [], {c: [] for c in columns}

    def read():
        for fids, table in iter_column_batches(layer, ["tile_id", *columns], READ_CHUNK):
            fid_parts.append(fids)
            for c in columns:
                try:
                    parts[c].append(blobs_to_matrix(table[c], dim))
                except BlobLengthError as exc:
                    i = exc.row
                    raise BadInput(f"the {c} of tile {_int_or_none(table['tile_id'][i])} (fid {int(fids[i])}) "
                                   f"{exc.detail}: the layer's embeddings do not fit its metadata (edited, or "
                                   f"made by another model)", layer) from None

    read_checked(layer, "reading the embeddings failed", ["tile_id"], read)
    fids = np.concatenate(fid_parts) if fid_parts else np.zeros(0, np.int64)
    return fids, [np.concatenate(parts[c]) if parts[c] else np.zeros((0, dim), np.float32) for c in columns]


def _rsicrc_scores(meta, layer, text, model, device, reporter, captioner):
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
    fids, (matrix,) = _stored(layer, ["embedding"], meta["embedding_dim"])
    with np.errstate(all="ignore"):  # NaN rows (no embedding) and damaged values give NaN: no score
        return fids, (matrix @ query).astype(np.float64)


def _clip_tag(text, when, change):
    # The same text always lands in the same field, so repeating a search updates it in place.
    tag = "cq_" + slug_field(text, [])[2:]
    if change:
        tag += "_chg"
    elif when == "before":
        tag += "_bef"
    return tag[:48]


def _clip_scores(meta, layer, text, clip_model, device, when, change, clip_encoder):
    from .scores import clip_scores

    if clip_encoder is None:
        source = clip_model or meta.get("clip_model_source")
        clip_encoder = load_clip_encoder(source, device)
        if meta.get("clip_model_sha256") and clip_encoder.sha256 != meta.get("clip_model_sha256"):
            raise BadInput(f"its CLIP embeddings come from sha256 {meta.get('clip_model_sha256')}, but {source} "
                           f"has sha256 {clip_encoder.sha256}; search with the same CLIP model", layer)
    dim = int(meta.get("clip_embedding_dim") or clip_encoder.embedding_dim)
    fids, (before, after) = _stored(layer, ["clip_before", "clip_after"], dim)
    if not len(fids):
        return fids, np.zeros(0)
    try:
        with np.errstate(all="ignore"):
            scores = np.asarray(clip_scores(clip_encoder, text, before, after, when=when, change=change),
                                dtype=np.float64)
    except ValueError as e:  # e.g. embeddings of another CLIP model's width
        raise BadInput(str(e), layer) from None
    return fids, scores
