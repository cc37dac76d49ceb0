"""The `rsicrc` command line (`python -m rsicrc`): caption, caption-batch, search, info, serve, evaluate, train,
device.

Exit codes: 0 ok, 2 bad input (one line naming the file and the problem), 1 any other failure.
With `--progress json`, errors are also JSON lines on stdout (docs/interfaces.md).
"""
import argparse
import json
import os
import signal
import sys
import traceback
from pathlib import Path

from .caption_params import BATCH_LEFT_OUT, add_caption_arguments, default_clip_model, default_model, from_args
from .environment.torch_build import TORCH_CHOICES
from .environment.uv_tool import PYPI_SIMPLE
from .errors import BadInput, PipelineFailure
from .log import route_library_messages
from .evaluate.params import add_evaluate_arguments
from .train.params import add_train_arguments
from .progress import JsonReporter, Reporter, make_reporter
from .raster.sources import GDAL_CACHE_MB, GDAL_NETWORK_DEFAULTS


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors are bad input: one line, exit code 2
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""  # "rsicrc:" is the reporter's
        raise BadInput(f"{command}: {message}" if command else message)


def build_parser():

    p = _Parser(prog="rsicrc", description="Caption and search changes between aligned rasters (a pair, or a "
                                           "time series of dates).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("caption", help="caption every tile of a BEFORE/AFTER pair (or of each interval of "
                                       "BEFORE AFTER LATER...) into a GeoPackage")
    add_caption_arguments(c, argparse.ArgumentTypeError)
    c.add_argument("--progress", choices=["bar", "json"], default="bar")
    c.set_defaults(func=_caption)

    b = sub.add_parser("caption-batch", help="caption the BEFORE/AFTER pairs of a CSV into one GeoPackage")
    b.add_argument("pairs_csv", metavar="PAIRS.csv", help="columns before,after[,name]: paths or URLs GDAL reads")
    add_caption_arguments(b, argparse.ArgumentTypeError, pair=False, leave_out=BATCH_LEFT_OUT)
    b.add_argument("--progress", choices=["bar", "json"], default="bar")
    b.set_defaults(func=_caption_batch)

    s = sub.add_parser("search", help="score a layer's tiles against a text from their stored embeddings")
    s.add_argument("layer", metavar="LAYER.gpkg")
    s.add_argument("text", metavar="TEXT")
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--field", metavar="NAME", help="score field to write (default q_<words of TEXT>)")
    s.add_argument("--model", help="model to embed the text (default: the one that made the layer)")
    s.add_argument("--device", default="auto")
    s.add_argument("--clip", action="store_true", help="search with the layer's RS-M-CLIP embeddings")
    s.add_argument("--clip-model", help="RS-M-CLIP source (default: the one that made the layer)")
    s.add_argument("--when", choices=["before", "after"],
                   help="with --clip: match the text against the BEFORE or AFTER image (default after)")
    s.add_argument("--change", action="store_true",
                   help="with --clip: score how much more the AFTER image matches the text than BEFORE")
    s.add_argument("--json", action="store_true", help="print the hits as one JSON object")
    s.set_defaults(func=_search)

    i = sub.add_parser("info", help="summarise a layer written by `rsicrc caption`")
    i.add_argument("layer", metavar="LAYER.gpkg")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)

    v = sub.add_parser("evaluate", help="caption a LEVIR-CC split and score it as the official evaluation")
    add_evaluate_arguments(v, argparse.ArgumentTypeError)
    v.add_argument("--progress", choices=["bar", "json"], default="bar")
    v.set_defaults(func=_evaluate)

    _add_train_command(sub)
    w = sub.add_parser("serve", help="search worker: JSON-lines requests on stdin, answers on stdout")
    w.add_argument("--model", default=default_model())
    w.add_argument("--clip-model", default=default_clip_model())
    w.add_argument("--device", default="auto")
    w.set_defaults(func=_serve)

    d = sub.add_parser("device", help="which device caption would use, or why not the GPU")
    d.add_argument("--device", default="auto", help="the --device caption would get (default auto)")
    d.add_argument("--json", action="store_true", help="print the report as one JSON object")
    d.set_defaults(func=_device)
    _add_setup_command(sub)
    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true",
                             help="also print the libraries' warnings and log messages (always in the log file, "
                                  "$RSICRC_LOG or rsicrc/rsicrc.log in the user cache folder)")
    return p


def _add_train_command(sub):
    t = sub.add_parser("train", help="fine-tune a model on a LEVIR-CC-format dataset with the official objective "
                                     "(resumable; the result is a model folder every command loads)")
    add_train_arguments(t, argparse.ArgumentTypeError)
    t.add_argument("--progress", choices=["bar", "json"], default="bar")
    t.set_defaults(func=_train)


def _add_setup_command(sub):
    u = sub.add_parser("setup", help="make the worker's Python environment, as the plugin's \"Set up environment\" "
                                     "does (standard library only)")
    u.add_argument("--venv", required=True, metavar="DIR", help="the environment's folder (made or completed)")
    u.add_argument("--torch", choices=TORCH_CHOICES, default="auto",
                   help="PyTorch's build: auto (the CUDA build that fits the NVIDIA driver and GPU, else the CPU "
                        "build; Apple's MPS on macOS), cpu, cuda, or pypi (PyPI's own, where download.pytorch.org "
                        "cannot be reached; on Linux the CUDA 13 build, which runs on the CPU too)")
    u.add_argument("--python", metavar="BASE", help="the Python 3.11-3.14 to make it from (default: the best one "
                                                    "found, else one that uv installs)")
    u.add_argument("--index-url", default=PYPI_SIMPLE, metavar="URL", help="the package index (default PyPI)")
    u.add_argument("--torch-index-url", metavar="URL", help="a mirror of https://download.pytorch.org/whl/")
    u.add_argument("--proxy", metavar="URL", help="http://[user:password@]host:port for every download")
    u.set_defaults(func=_setup)


def _caption(args, reporter):
    from .caption.run import partial_path, run_caption

    try:
        run_caption(from_args(args), reporter)
    except KeyboardInterrupt:
        part = partial_path(args.output)
        if os.path.exists(part):
            raise PipelineFailure(f"interrupted; {part} keeps the finished tiles: rerun with --resume") from None
        raise PipelineFailure("interrupted before any tile was written") from None
    return 0


def _caption_batch(args, reporter):
    from .caption.batch import run_caption_batch

    args.before = args.after = None  # each pair's, from the CSV
    summary = run_caption_batch(args.pairs_csv, from_args(args), reporter)
    if summary.bad_pairs:
        reporter.warning(f"{len(summary.bad_pairs)} of {summary.pairs + len(summary.bad_pairs)} pairs skipped "
                         f"(listed in the layer's bad_pairs metadata)")
    return 0


def _search(args, reporter):
    from .search import run_search

    result = run_search(args.layer, args.text, reporter, top=args.top, field=args.field, model=args.model,
                        device=args.device, clip=args.clip, clip_model=args.clip_model, when=args.when,
                        change=args.change)
    print(result.as_json() if args.json else "\n".join(result.as_text()))
    return 0


def _info(args, reporter):
    from .info import format_info, layer_info

    info = layer_info(args.layer)
    print(json.dumps(info, indent=1, allow_nan=False) if args.json else format_info(info))
    return 0


def _evaluate(args, reporter):
    from .evaluate.run import run_evaluate

    result = run_evaluate(args.annotations, args.images, args.output, reporter, split=args.split,
                          model=args.model, device=args.device, batch_size=args.batch_size,
                          precision=args.precision)
    if args.progress != "json":  # stdout carries only JSON lines then
        print(result.report)
    return 0


def _train(args, reporter):
    from .caption_params import ParamError
    from .train.params import train_params_from_args
    from .train.run import run_train

    try:
        params = train_params_from_args(args)
    except ParamError as e:
        raise BadInput(str(e)) from None
    try:
        out = run_train(params, reporter)
    except KeyboardInterrupt:
        raise PipelineFailure(f"interrupted; {os.path.abspath(args.output)}.partial keeps the last saved state: "
                              "run the same command again to go on") from None
    if out is None:
        print(f"stopped after {params.max_steps} steps, the state saved in {os.path.abspath(args.output)}.partial: "
              "run again without --max-steps (or a larger one) to go on", file=sys.stderr)
    else:
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _serve(args, reporter):
    from .serve import ServeHandler, serve

    return serve(ServeHandler(args.model, args.clip_model, args.device))


def _device(args, reporter):
    from .device_report import build_report, format_device_report, gather_facts

    report = build_report(gather_facts(args.device))
    print(json.dumps(report) if args.json else format_device_report(report))
    return 0 if report["device"] else 1


def _setup(args, reporter):
    from .environment.setup_run import SetupFailed, SetupOptions, report, set_up

    options = SetupOptions(Path(args.venv).absolute(), torch=args.torch, base_python=args.python,
                           index_url=args.index_url, torch_index=args.torch_index_url, proxy=args.proxy)
    try:
        result = set_up(options, on_line=lambda line: print(line, file=sys.stderr, flush=True))
    except SetupFailed as exc:
        raise PipelineFailure(f"setting up {args.venv}: {exc}") from None
    print(report(result))
    return 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # Before GDAL's first read (pipeline/raster/sources.py says why).
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    for name, value in GDAL_NETWORK_DEFAULTS.items():
        os.environ.setdefault(name, value)
    route_library_messages(verbose="--verbose" in argv)
    reporter = JsonReporter() if _wants_json(argv) else Reporter()
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "progress", None):
            reporter = make_reporter(args.progress, *(("step", "training") if args.command == "train" else ()))
        if args.command in ("caption", "train"):
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
