"""The `rsicrc` command line (`python -m rsicrc`): caption, search, info, serve.

Exit codes: 0 ok, 2 bad input (one line naming the file and the problem), 1 any other failure.
With `--progress json`, errors are also JSON lines on stdout (docs/interfaces.md).
"""
import argparse
import json
import math
import os
import signal
import sys
import traceback

from .errors import BadInput, PipelineFailure
from .progress import JsonReporter, Reporter, make_reporter
from .tile_reader import GDAL_CACHE_MB


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors are bad input: one line, exit code 2
        raise BadInput(f"{self.prog}: {message}")


def _positive_float(text):
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def build_parser():
    from .caption_run import default_clip_model, default_model

    p = _Parser(prog="rsicrc", description="Caption and search changes between two aligned rasters.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("caption", help="caption every tile of a BEFORE/AFTER pair into a GeoPackage")
    c.add_argument("before", metavar="BEFORE")
    c.add_argument("after", metavar="AFTER")
    c.add_argument("-o", "--output", required=True, metavar="OUT.gpkg")
    c.add_argument("--model", default=default_model(),
                   help="hub repo id or local folder (default: $RSICRC_MODEL or rogerferrod/RSICRC)")
    c.add_argument("--bands", help="three 1-based band numbers used as R,G,B, e.g. 4,3,2 (default 1,2,3)")
    c.add_argument("--tile-size", type=int, default=256, help="tile side in pixels (default 256, LEVIR-CC's)")
    c.add_argument("--overlap", type=int, default=0, help="pixels shared by neighbouring tiles (default 0)")
    c.add_argument("--batch-size", type=int, default=16,
                   help="tile pairs per model call (default 16: bigger batches keep the decoder busy)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    c.add_argument("--query", action="append", default=[], metavar="TEXT",
                   help="score every tile against this text (repeatable); one q_<words> field each")
    c.add_argument("--resume", action="store_true", help="finish an interrupted run (OUT.gpkg.partial)")
    c.add_argument("--resume-if-possible", action="store_true",
                   help="finish OUT.gpkg.partial when it holds this same job, else start over (for tools)")
    c.add_argument("--progress", choices=["bar", "json"], default="bar")
    c.add_argument("--reproject", action="store_true",
                   help="warp AFTER onto BEFORE's grid when CRS, pixel size or alignment differ")
    c.add_argument("--target-resolution", type=_positive_float, metavar="METERS",
                   help="resample both dates to this pixel size in metres (degrees converted on a geographic CRS)")
    c.add_argument("--max-nodata", type=float, default=0.5,
                   help="skip tiles with more than this fraction of nodata/masked pixels (default 0.5)")
    c.add_argument("--clip", action="store_true", help="also store RS-M-CLIP embeddings and land-cover classes")
    c.add_argument("--clip-model", default=default_clip_model(),
                   help="RS-M-CLIP hub id or local folder (default: $RSICRC_CLIP_MODEL or hf-hub:joaodaniel/RS-M-CLIP)")
    c.add_argument("--classes", help='comma-separated class names for --clip, e.g. "forest,water,buildings"')
    c.set_defaults(func=_caption)

    s = sub.add_parser("search", help="score a layer's tiles against a text from their stored embeddings")
    s.add_argument("layer", metavar="LAYER.gpkg")
    s.add_argument("text", metavar="TEXT")
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--field", metavar="NAME", help="score field to write (default q_<words of TEXT>)")
    s.add_argument("--model", help="model to embed the text (default: the one that made the layer)")
    s.add_argument("--device", default="auto")
    s.add_argument("--clip", action="store_true", help="search with the layer's RS-M-CLIP embeddings")
    s.add_argument("--clip-model", help="RS-M-CLIP source (default: the one that made the layer)")
    s.add_argument("--when", choices=["before", "after"], default="after",
                   help="with --clip: match the text against the BEFORE or AFTER image")
    s.add_argument("--change", action="store_true",
                   help="with --clip: score how much more the AFTER image matches the text than BEFORE")
    s.add_argument("--json", action="store_true", help="print the hits as one JSON object")
    s.set_defaults(func=_search)

    i = sub.add_parser("info", help="summarise a layer written by `rsicrc caption`")
    i.add_argument("layer", metavar="LAYER.gpkg")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)

    w = sub.add_parser("serve", help="search worker: JSON-lines requests on stdin, answers on stdout")
    w.add_argument("--model", default=default_model())
    w.add_argument("--clip-model", default=default_clip_model())
    w.add_argument("--device", default="auto")
    w.set_defaults(func=_serve)
    return p


def _caption(args, reporter):
    from .caption_run import CaptionParams, partial_path, run_caption

    params = CaptionParams(
        before=args.before, after=args.after, output=args.output, model=args.model, bands=args.bands,
        tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size, device=args.device,
        queries=args.query, resume=True if args.resume else ("auto" if args.resume_if_possible else False), reproject=args.reproject,
        target_resolution=args.target_resolution, max_nodata=args.max_nodata, clip=args.clip,
        clip_model=args.clip_model, classes=args.classes)
    try:
        run_caption(params, reporter)
    except KeyboardInterrupt:
        part = partial_path(args.output)
        if os.path.exists(part):
            raise PipelineFailure(f"interrupted; {part} keeps the finished tiles: rerun with --resume") from None
        raise PipelineFailure("interrupted before any tile was written") from None
    return 0


def _search(args, reporter):
    from .search import run_search

    result = run_search(args.layer, args.text, reporter, top=args.top, field=args.field, model=args.model,
                        device=args.device, clip=args.clip, clip_model=args.clip_model, when=args.when,
                        change=args.change)
    if args.json:
        print(json.dumps({"field": result.field, "features": result.features,
                          "hits": [h.__dict__ for h in result.hits]}))
        return 0
    print(f"{result.features} tiles scored into field {result.field}; top {len(result.hits)}:")
    print(f"{'tile_id':>7}  {'score':>7}  {'centroid x':>14} {'centroid y':>14}  caption")
    for h in result.hits:
        print(f"{h.tile_id:>7}  {h.score:7.4f}  {h.centroid[0]:14.2f} {h.centroid[1]:14.2f}  {h.caption}")
    return 0


def _info(args, reporter):
    from .info import format_info, layer_info

    info = layer_info(args.layer)
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


def _serve(args, reporter):
    from .serve import SearchWorker, serve

    return serve(SearchWorker(args.model, args.clip_model, args.device))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # GDAL's block cache defaults to 5% of RAM and would grow with the rasters; tiles are read
    # once, row by row, so a small cache loses nothing. Set before GDAL's first read.
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    reporter = JsonReporter() if _wants_json(argv) else Reporter()
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "progress", None):
            reporter = make_reporter(args.progress)
        if args.command == "caption":
            # A terminate from the QGIS side (or a job scheduler) ends like Ctrl-C: committed
            # batches stay in the partial file.
            signal.signal(signal.SIGTERM, _raise_interrupt)
        return args.func(args, reporter)
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except BadInput as e:
        reporter.error(str(e), 2)
        return 2
    except PipelineFailure as e:
        reporter.error(str(e), 1)
        return 1
    except KeyboardInterrupt:
        reporter.error("interrupted", 1)
        return 1
    except Exception as e:
        if os.environ.get("RSICRC_DEBUG"):
            traceback.print_exc()
        reporter.error(f"unexpected failure: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                       f"(set RSICRC_DEBUG=1 for the traceback)", 1)
        return 1
    finally:
        reporter.close()


def _wants_json(argv):
    return any(a == "--progress=json" for a in argv) or any(
        a == "--progress" and i + 1 < len(argv) and argv[i + 1] == "json" for i, a in enumerate(argv))
