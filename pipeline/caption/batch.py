"""`rsicrc caption-batch PAIRS.csv -o OUT.gpkg`: many BEFORE/AFTER pairs captioned into one layer.

PAIRS.csv has a header with the columns before,after and optionally name, and an area of interest
per pair in an `extent` (XMIN,YMIN,XMAX,YMAX[,CRS], quoted) or `area` (a vector file) column, in
place of the batch's --extent/--area; a path is a file (relative to the CSV's folder) or anything
GDAL reads (/vsicurl/ COGs, s3://). Each pair is checked
as `caption` checks one; a bad pair is reported, listed in the metadata (`bad_pairs`) and skipped,
and the others go on. Each good pair is captioned by `caption`'s own run (either engine, one model
load for all pairs) into its own layer in OUT + ".pairs/"; the layers are then copied into OUT with
a `pair` field (the name, or the CSV row number) and tile ids unique over the layer (a pair's ids
are offset by the tiles of the pairs before it; row/col stay pixel offsets on the pair's grid).

One layer has one CRS: a pair in another CRS than the first good pair's is a bad pair. With
--resume, a pair's finished layer is kept when it holds the same job and an unfinished one is
resumed.
"""
import csv
import dataclasses
import os

from ..caption_params import ParamError
from ..errors import BadInput
from ..layer.gpkg import LayerWriter, read_metadata
from ..layer.schema import AREA_FRACTION_FIELD, CORE_FIELDS, LAYER, PAIR_FIELD, SERIES_FIELDS, partial_path
from ..output_file import LAYER_OUTPUT, OutputLock, check_output, discard_partial, move_into_place
from ..progress import Reporter
from ..raster.sources import check_regular, is_gdal_path, source_path
from .clip_annotator import parsed_classes
from .job import Skips
from .resume import open_resume, run_fingerprint
from .run import model_files, run_caption
from .run_metadata import utc_now
from .steps import load_models, open_pair, plan_tiles

PAIRS_SUFFIX = ".pairs"


@dataclasses.dataclass
class BatchSummary:
    output: str
    features: int
    pairs: int
    bad_pairs: list
    total: int


def read_pairs(path):
    """[(name, before, after, {"extent"/"area": the row's area, if any})] from the CSV; BadInput
    naming the CSV when it cannot be used."""
    check_regular(path, "CSV")  # a FIFO would block the read
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = [str(c).strip().lower() for c in reader.fieldnames or []]
    except FileNotFoundError:
        raise BadInput("no such file", path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"cannot be read as a CSV ({exc})", path) from None
    if not {"before", "after"} <= set(header):
        raise BadInput(f"needs a header with the columns before,after[,name]; it has {','.join(header) or 'none'}",
                       path)
    folder = os.path.dirname(os.path.abspath(path))
    pairs, names = [], {}
    for number, row in enumerate(rows, start=1):
        row = {str(k).strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
        if not row.get("before") and not row.get("after"):
            continue  # a blank line
        name = row.get("name") or str(number)
        if name in names:
            raise BadInput(f"the pair name {name!r} is on rows {names[name]} and {number}; names must be unique", path)
        names[name] = number
        area = {"extent": row["extent"]} if row.get("extent") else {}
        if row.get("area"):
            area["area"] = _resolve(row["area"], folder)
        pairs.append((name, _resolve(row.get("before", ""), folder), _resolve(row.get("after", ""), folder), area))
    if not pairs:
        raise BadInput("holds no pairs", path)
    return pairs


def _resolve(path, folder):
    if not path or is_gdal_path(path) or os.path.isabs(path):
        return path
    return os.path.join(folder, path)


class _PairReporter(Reporter):
    """One pair's run seen from the batch: progress over all tiles, messages naming the pair."""

    def __init__(self, outer, name, offset, total):
        self.outer, self.name, self.offset, self.total = outer, name, offset, total

    def advance(self, done, total):
        self.outer.advance(self.offset + done, self.total)

    def warning(self, message):
        self.outer.warning(f"pair {self.name}: {message}")


def run_caption_batch(pairs_csv, p, reporter):
    """Caption every good pair of `pairs_csv` with the options `p` (its before/after unused)."""
    try:
        p.check()
    except ParamError as e:
        raise BadInput(str(e)) from None
    if p.heatmap:
        raise BadInput("--heatmap is one GeoTIFF per pair; run `rsicrc caption` for the pairs that need one")
    pairs = read_pairs(pairs_csv)
    out = str(p.output)
    inputs = [(x, "an input raster") for _, b, a, _ in pairs for x in (b, a) if x and not is_gdal_path(x)]
    inputs += [(area["area"], "an area file") for *_, area in pairs if "area" in area and not is_gdal_path(area["area"])]
    inputs += [(pairs_csv, "the pairs CSV")] + model_files(p)
    found = check_output(out, LAYER_OUTPUT, inputs, overwrite=p.overwrite, partial=partial_path(out))
    folder = out + PAIRS_SUFFIX
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise BadInput("exists and is not a folder; caption-batch keeps each pair's layer in it: move it away or "
                       "choose another output", folder)
    with OutputLock(out):
        return _run_locked(pairs_csv, pairs, p, reporter, out, found)


def _run_locked(pairs_csv, pairs, p, reporter, out, found):
    folder = out + PAIRS_SUFFIX
    bad = []
    good = _checked_pairs(pairs, p, folder, reporter, bad)
    total = sum(g["tiles"] for g in good)
    if not good:
        raise BadInput(f"not one pair can be captioned ({len(bad)} bad: see the warnings)", pairs_csv)
    os.makedirs(folder, exist_ok=True)
    models = load_models(p, parsed_classes(p))
    ray, started = None, False
    if p.engine == "ray":
        from .ray_engine import connect, import_ray

        ray = import_ray()
        started = connect(ray, p)
    reporter.start(total, out)
    try:
        done_pairs = _caption_pairs(good, p, models, reporter, bad, total)
    finally:
        if started:
            ray.shutdown()
    if not done_pairs:
        raise BadInput(f"not one pair could be captioned ({len(bad)} bad: see the warnings)", pairs_csv)
    features, skipped = _merge(done_pairs, bad, pairs_csv, p, out, found)
    for g in done_pairs:
        os.remove(g["layer"])
    if not os.listdir(folder):  # a bad pair's files, if any, stay for a look
        os.rmdir(folder)
    reporter.done(out, features, skipped)
    return BatchSummary(out, features, len(done_pairs), bad, total)


def _checked_pairs(pairs, p, folder, reporter, bad):
    """The pairs that pass `caption`'s checks and share the first good pair's CRS, each with its
    plan, tile count and layer in `folder`; the others go to `bad`."""
    good, crs = [], None
    for number, (name, before, after, area) in enumerate(pairs, start=1):
        try:
            if not before or not after:
                raise BadInput("the row needs both a before and an after raster")
            pp = _pair_params(p, before, after, area)
            plan = open_pair(pp)
            if crs is not None and plan.grid.crs != crs:
                raise BadInput(f"its CRS ({plan.grid.crs.to_string()}) is not the layer's ({crs.to_string()}, of "
                               f"pair {good[0]['name']}); warp it first (gdalwarp -t_srs)", before)
        except BadInput as exc:
            _bad(reporter, bad, name, number, before, after, exc)
            continue
        crs = plan.grid.crs if crs is None else crs
        good.append({"name": name, "row": number, "before": before, "after": after, "plan": plan, "params": pp,
                     "tiles": len(plan_tiles(pp, plan)), "layer": os.path.join(folder, f"pair-{number:06d}.gpkg")})
    return good


def _caption_pairs(good, p, models, reporter, bad, total):
    """Each good pair captioned by `caption`'s own run into its layer (kept when an earlier run of
    this batch finished it); the pairs done, with their tile id offsets."""
    offset, done_pairs = 0, []
    for g in good:
        pp = dataclasses.replace(g["params"], output=g["layer"], overwrite=False, resume="auto" if p.resume else False)
        try:
            if not (p.resume and _finished(g, pp, models.captioner)):
                run_caption(pp, _PairReporter(reporter, g["name"], offset, total), captioner=models.captioner,
                            clip_annotator=models.clip_annotator)
        except BadInput as exc:
            _bad(reporter, bad, g["name"], g["row"], g["before"], g["after"], exc)
            discard_partial(partial_path(g["layer"]))
        else:
            g["tile_id_offset"] = offset
            done_pairs.append(g)
        offset += g["tiles"]
        reporter.advance(offset, total)
    return done_pairs


def _pair_params(p, before, after, area):
    """The CaptionParams of one pair: the batch's, with the row's area in place of the batch's."""
    if area:
        pp = dataclasses.replace(p, before=before, after=after, extent=area.get("extent"), area=area.get("area"),
                                 area_where=None)
    else:
        pp = dataclasses.replace(p, before=before, after=after)
    try:
        return pp.check()
    except ParamError as exc:
        raise BadInput(f"the row's area: {exc}") from None


def _bad(reporter, bad, name, number, before, after, exc):
    reporter.warning(f"pair {name} (row {number}) skipped: {exc}")
    bad.append({"pair": name, "row": number, "before": before, "after": after, "error": str(exc)})


def _finished(g, pp, cap):
    """Whether the pair's layer from an earlier run of this batch is complete and the same job."""
    if not os.path.exists(g["layer"]):
        return False
    try:
        state = open_resume(g["layer"], run_fingerprint(pp, g["plan"], cap.sha256))
    except BadInput:
        return False
    return bool(state and state.meta.get("complete"))


def _merge(done_pairs, bad, pairs_csv, p, out, found):
    """The pairs' layers copied into OUT (through OUT.partial): `pair` field, tile ids offset."""
    part = partial_path(out)
    if os.path.exists(part):
        discard_partial(part)
    writer, skips, fingerprints, features = None, Skips(), [], 0
    area = any(g["plan"].area is not None for g in done_pairs)
    for g in done_pairs:
        meta = read_metadata(g["layer"])
        fingerprints.append({"pair": g["name"], **meta["run_fingerprint"]})
        skips.add([{"pair": g["name"], **t, "tile_id": t["tile_id"] + g["tile_id_offset"]}
                   for t in meta.get("skipped_tiles", [])], int(meta.get("skipped_count", 0)))
        g["features"] = int(meta.get("features", 0))
        writer, copied = _copy_pair(g, part, writer, area)
        features += copied
    writer.set_metadata(_batch_metadata(done_pairs, bad, pairs_csv, p, features, skips, fingerprints))
    move_into_place(part, out, found)
    return features, skips.count


_ARROW_KINDS = {"int64": "int", "string": "text", "large_string": "text", "double": "real", "bool": "bool",
                "binary": "blob", "large_binary": "blob"}


def _copy_pair(g, part, writer, area):
    """Append pair `g`'s layer to the merged one (created by the first pair, with the pair field
    after the series fields; with `area`, the area_fraction field, empty for a pair without an
    area); (writer, features copied)."""
    import numpy as np
    import pyogrio
    import shapely

    copied = 0
    with pyogrio.open_arrow(g["layer"], layer=LAYER, use_pyarrow=True, batch_size=4096) as (info, reader):
        geom_name = info["geometry_name"] or "wkb_geometry"
        names = [n for n in reader.schema.names if n != geom_name]
        if writer is None:
            fields = [(n, _ARROW_KINDS[str(reader.schema.field(n).type)]) for n in names]
            core = len(CORE_FIELDS) + len(SERIES_FIELDS)
            fraction = [(AREA_FRACTION_FIELD, "real")] if area and AREA_FRACTION_FIELD not in names else []
            fields = fields[:core] + [(PAIR_FIELD, "text")] + fraction + fields[core:]
            writer = LayerWriter(part, g["plan"].grid.crs.to_wkt(), fields)
            writer.create({"complete": False, "run_fingerprint": {}})
        for batch in reader:
            columns = {n: batch.column(n).to_pylist() for n in names}
            columns["tile_id"] = [t + g["tile_id_offset"] for t in columns["tile_id"]]
            columns[PAIR_FIELD] = [g["name"]] * batch.num_rows
            if area and AREA_FRACTION_FIELD not in columns:  # this pair covers its whole overlap
                columns[AREA_FRACTION_FIELD] = [None] * batch.num_rows
            geoms = shapely.from_wkb(np.asarray(batch.column(geom_name).to_pylist(), dtype=object))
            writer.append(columns, shapely.bounds(geoms))
            copied += batch.num_rows
    return writer, copied


def _batch_metadata(done_pairs, bad, pairs_csv, p, features, skips, fingerprints):
    """The merged layer's metadata: the first pair's model and query items, the batch's own run."""
    from rsicrc import __version__

    first_meta = read_metadata(done_pairs[0]["layer"])
    params = {k: v for k, v in dataclasses.asdict(p).items() if k not in ("output", "before", "after")}
    metadata = {key: first_meta[key] for key in first_meta
                if key not in ("params", "run_fingerprint", "created", "finished", "resumed", "features",
                               "skipped_count", "skipped_tiles", "skipped_tiles_listed", "complete")}
    metadata.update({
        "params": {**params, "pairs_csv": os.path.abspath(pairs_csv)},
        "software_version": __version__,
        "created": first_meta.get("created"),
        "finished": utc_now(),
        "run_fingerprint": {"pairs_csv": os.path.abspath(pairs_csv), "pairs": fingerprints},
        "pairs": [{"pair": g["name"], "row": g["row"], "before": source_path(g["before"]),
                   "after": source_path(g["after"]), "tiles": g["tiles"], "features": g["features"],
                   "tile_id_offset": g["tile_id_offset"],
                   **({"area": g["plan"].area.describe()} if g["plan"].area is not None else {})}
                  for g in done_pairs],
        "bad_pairs": bad,
        "complete": True, "features": features, **skips.metadata(),
    })
    return metadata
