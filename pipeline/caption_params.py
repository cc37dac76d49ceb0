"""The options of a caption run, defined once: `CaptionParams`.

Every run option is a field here whose metadata (`Option`) holds its command-line flag, its label
and help for forms, its bounds and whether forms show it under "Advanced". The CLI's argparse
(`add_caption_arguments`), the QGIS Processing algorithm's parameters and the dialog's widgets are built
from these fields, the plugin turns the values back into a command line with `to_argv`, and
`check` enforces the bounds for every caller; tests hold each face to this module.

Standard library only: QGIS's own Python imports it, and the CLI parses arguments before torch
or GDAL are loaded.
"""
import math
import os
import re
from dataclasses import MISSING, dataclass, field, fields

# The model package's defaults, repeated because importing rsicrc.model loads torch
# (tests/pipeline/test_caption.py pins them equal).
DEFAULT_MODEL = "rogerferrod/RSICRC"
DEFAULT_CLIP_MODEL = "hf-hub:joaodaniel/RS-M-CLIP"
DEVICES = ("auto", "cpu", "cuda", "mps")
ENGINES = ("local", "ray")
# The model's number format; the first is the default (exact: what the released weights give).
PRECISIONS = ("fp32", "bf16", "fp16")
# Options `caption-batch` does not offer: a heat map is one GeoTIFF on one pair's grid.
BATCH_LEFT_OUT = ("heatmap", "heatmap_scale")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# The longest text a query may be, for every face (caption --query, search, serve): the RSICRC
# model reads the first max_len words (tens) of a text and RS-M-CLIP 77 tokens, so a longer text is
# a paste gone wrong, refused rather than silently cut.
MAX_TEXT_CHARS = 1000
# A batch holds batch_size x tile_size^2 pixels of each date, three batches in flight (two in the
# reader's queue, one in the model): about 9 bytes a pixel a date. This cap on the pixels of a
# pair's batch keeps that under 2.5 GB; a series of n dates may hold n / 2 times as many pixels
# a batch, so its batches are bounded to the same memory.
MAX_BATCH_PIXELS = 2 ** 27
# A series longer than this is more likely a glob gone wrong than a time series.
MAX_DATES = 100


def default_model():
    return os.environ.get("RSICRC_MODEL") or DEFAULT_MODEL


def default_clip_model():
    return os.environ.get("RSICRC_CLIP_MODEL") or DEFAULT_CLIP_MODEL


class ParamError(ValueError):
    """An option value outside what the option accepts; the message names the option's flag."""


@dataclass(frozen=True)
class Option:
    flag: str
    label: str
    help: str
    # text, int, float, bool, texts (repeatable text), bands, device, resume, raster_output (a file
    # the run writes; forms offer a save-file widget, Processing a raster destination), choice (one
    # of `choices`), extent ("XMIN,YMIN,XMAX,YMAX[,CRS]"; Processing an extent), area (a vector file of
    # polygons, FILE[|layername=NAME]; Processing a polygon source, selected features only if asked)
    kind: str
    minimum: float = None
    maximum: float = None
    exclusive_minimum: bool = False  # minimum itself is not allowed
    advanced: bool = False
    form: bool = True  # shown in the dialog and the Processing algorithm
    requires: str = None  # another option that must be on for this one to matter
    choices: tuple = None  # kind "choice": the accepted values, the first the default


def option_field(default=MISSING, default_factory=MISSING, **spec):
    return field(default=default, default_factory=default_factory, metadata={"option": Option(**spec)})


@dataclass
class CaptionParams:
    before: str
    after: str
    output: str
    # A time series: dates after AFTER, oldest first (`caption D1 D2 D3 ...`). Interval i is date i
    # to date i + 1, so BEFORE -> AFTER is interval 0 and a pair is a series of two dates.
    later: list = field(default_factory=list)
    model: str = option_field(
        default_factory=default_model, flag="--model", kind="text", label="Model",
        help="RSICRC model: hub repo id or local folder (default: $RSICRC_MODEL or rogerferrod/RSICRC)")
    bands: str = option_field(
        None, flag="--bands", kind="bands", label="Bands",
        help="three 1-based band numbers used as red,green,blue, e.g. 4,3,2 (default: the rasters' RGB bands)")
    tile_size: int = option_field(
        256, flag="--tile-size", kind="int", label="Tile size (px)", minimum=32, maximum=4096,
        help="tile side in pixels (default 256, LEVIR-CC's)")
    queries: list = option_field(
        default_factory=list, flag="--query", kind="texts", label="Text queries",
        help="score every tile against this text (repeatable; one a line in forms); one q_<words> field each")
    extent: str = option_field(
        None, flag="--extent", kind="extent", label="Extent",
        help="caption only the tiles that touch this rectangle: XMIN,YMIN,XMAX,YMAX[,CRS] (CRS default: "
             "BEFORE's, e.g. 7.1,45.0,7.2,45.1,EPSG:4326)")
    area: str = option_field(
        None, flag="--area", kind="area", label="Area (polygons)",
        help="caption only the tiles that touch these polygons: any vector file OGR reads, as FILE or "
             "FILE|layername=NAME, in any CRS (reprojected)")
    area_where: str = option_field(
        None, flag="--area-where", kind="text", label="Area features (SQL WHERE)", advanced=True, form=False,
        requires="area", help="with --area: only the features this OGR SQL WHERE clause selects, e.g. \"name = 'Centre'\"")
    device: str = option_field(
        "auto", flag="--device", kind="device", label="Device",
        help="where the model runs: auto, cpu, cuda, cuda:N, mps")
    reproject: bool = option_field(
        False, flag="--reproject", kind="bool", label="Reproject AFTER onto BEFORE's grid",
        help="warp AFTER onto BEFORE's grid when their CRS, pixel size or alignment differ")
    clip: bool = option_field(
        False, flag="--clip", kind="bool", label="Also store RS-M-CLIP embeddings",
        help="also store RS-M-CLIP embeddings (multilingual search) and land-cover classes")
    heatmap: str = option_field(
        None, flag="--heatmap", kind="raster_output", label="Where-changed heat map (GeoTIFF)",
        help="also write a GeoTIFF of where the model looked to caption each tile (its decoder's attention), "
             "on BEFORE's grid; empty: none")
    overlap: int = option_field(
        0, flag="--overlap", kind="int", label="Tile overlap (px)", minimum=0, maximum=4095, advanced=True,
        help="pixels shared by neighbouring tiles, less than the tile size (default 0)")
    batch_size: int = option_field(
        64, flag="--batch-size", kind="int", label="Batch size", minimum=1, maximum=4096, advanced=True,
        help="tile pairs per model call (default 64: the decoder's matrix products run about twice as fast a "
             "pair as at 16)")
    precision: str = option_field(
        "fp32", flag="--precision", kind="choice", choices=PRECISIONS, label="Precision", advanced=True,
        help="the model's number format: fp32 (default: exact); bf16, about 2x faster on a GPU or on a CPU with "
             "bf16 instructions (AVX512-BF16, AMX), but some tiles' captions may differ from fp32's; fp16: GPUs "
             "only")
    max_nodata: float = option_field(
        0.5, flag="--max-nodata", kind="float", label="Skip tiles with more nodata than",
        minimum=0.0, maximum=1.0, advanced=True,
        help="skip tiles with more than this fraction of nodata/masked pixels (default 0.5)")
    target_resolution: float = option_field(
        None, flag="--target-resolution", kind="float", label="Resample to pixel size (m)",
        minimum=0.0, exclusive_minimum=True, maximum=1e6, advanced=True,
        help="resample both dates to this pixel size in metres (degrees converted on a geographic CRS)")
    clip_model: str = option_field(
        default_factory=default_clip_model, flag="--clip-model", kind="text", label="RS-M-CLIP model",
        advanced=True, requires="clip",
        help="RS-M-CLIP hub id or local folder (default: $RSICRC_CLIP_MODEL or hf-hub:joaodaniel/RS-M-CLIP)")
    classes: str = option_field(
        None, flag="--classes", kind="text", label="Land-cover classes", advanced=True, requires="clip",
        help='comma-separated class names for --clip, e.g. "forest,water,buildings" (default: a built-in list)')
    heatmap_scale: int = option_field(
        8, flag="--heatmap-scale", kind="int", label="Heat map pixel (grid pixels)", minimum=1, maximum=256,
        advanced=True, requires="heatmap",
        help="heat map pixel side in pixels of BEFORE's grid (default 8: 1/64 of the pixels)")
    yes_large: bool = option_field(
        False, flag="--yes-large", kind="bool", label="Run even a very large plan", advanced=True,
        help="run a plan beyond the size limits, which is refused otherwise: more than 10 million tiles, "
             "resampling to over 100x the pixels, or an overlap giving over 100x the tiles (and over 100,000)")
    overwrite: bool = option_field(
        False, flag="--overwrite", kind="bool", label="Replace an existing file that rsicrc did not write",
        advanced=True, help="replace OUT even when it exists and is not a layer written by rsicrc")
    # Where the tiles are captioned (pipeline/caption/ray_engine.py). Not in the forms: the plugin's own
    # environment installs [project] dependencies only, without Ray; a cluster is a CLI job.
    engine: str = option_field(
        "local", flag="--engine", kind="choice", choices=ENGINES, label="Engine", advanced=True, form=False,
        help="local: this process (default); ray: Ray workers, a local Ray or the cluster of --ray-address "
             "(needs the ray extra: pip install 'rsicrc[ray]')")
    ray_address: str = option_field(
        None, flag="--ray-address", kind="text", label="Ray cluster address", advanced=True, form=False,
        help="with --engine ray: join this Ray cluster (e.g. 10.0.0.5:6379 or ray://host:10001, 'auto' for the "
             "one `ray start` runs here) instead of starting a local Ray")
    workers: int = option_field(
        None, flag="--workers", kind="int", label="Ray workers", minimum=1, maximum=100000, advanced=True,
        form=False,
        help="with --engine ray: model workers (default: one a GPU, else one a CPU of the cluster; a local Ray "
             "gets this many CPUs)")
    # False: start a new run; True: finish OUT.partial; "auto": finish it only when it holds this
    # same job, else start over (what tools such as the QGIS plugin pass).
    resume: object = option_field(
        False, flag="--resume", kind="resume", label="Resume", form=False,
        help="finish an interrupted run (OUT.gpkg.partial)")

    @property
    def dates(self):
        """Every date of the run, oldest first: [before, after, *later]."""
        return [self.before, self.after, *self.later]

    def check(self):
        """Normalise and check every option; ParamError names the first bad one."""
        self.later = [str(d) for d in (self.later or [])]
        self.queries = [str(q) for q in (self.queries or [])]
        if self.bands is not None and not isinstance(self.bands, str):
            self.bands = ",".join(str(b) for b in self.bands)
        for f in fields(self):
            opt = f.metadata.get("option")
            if opt is not None:
                setattr(self, f.name, check_option(opt, getattr(self, f.name)))
        if self.overlap >= self.tile_size:
            raise ParamError(f"--overlap must be smaller than the tile size ({self.tile_size} px), got {self.overlap}")
        self._check_dates()
        dates = len(self.dates)
        if self.batch_size * self.tile_size ** 2 * dates > 2 * MAX_BATCH_PIXELS:
            biggest = max(1, 2 * MAX_BATCH_PIXELS // (self.tile_size ** 2 * dates))
            of = f" of {dates} dates" if dates > 2 else ""
            raise ParamError(f"--batch-size {self.batch_size} with {self.tile_size} px tiles{of} would hold about "
                             f"{9 * dates * self.batch_size * self.tile_size ** 2 / 1e9:.0f} GB of pixels in "
                             f"memory; use --batch-size {biggest} or less")
        if self.heatmap_scale > self.tile_size:  # every tile must hold a heat map pixel centre
            raise ParamError(f"--heatmap-scale must be at most the tile size ({self.tile_size} px), "
                             f"got {self.heatmap_scale}")
        if self.heatmap is not None and not self.heatmap.lower().endswith((".tif", ".tiff")):
            raise ParamError(f"--heatmap must be a GeoTIFF file name ending in .tif, got {self.heatmap!r}")
        if self.extent is not None and self.area is not None:
            raise ParamError("--extent and --area each give the area of interest; give one of them")
        if self.area_where is not None and self.area is None:
            raise ParamError("--area-where needs --area (it selects the area's features)")
        if self.classes is not None and not self.clip:
            raise ParamError("--classes needs --clip (the classes come from RS-M-CLIP)")
        if self.engine != "ray" and (self.ray_address or self.workers is not None):
            flag = "--ray-address" if self.ray_address else "--workers"
            raise ParamError(f"{flag} needs --engine ray")
        if self.engine == "ray" and self.later:
            raise ParamError(f"--engine ray takes two dates for now, got {len(self.dates)}; caption the series "
                             f"with --engine local")
        return self

    def _check_dates(self):
        if not self.later:  # a pair: the same file twice is a valid pair (nothing changed)
            return
        if len(self.dates) > MAX_DATES:
            raise ParamError(f"a series takes at most {MAX_DATES} dates, got {len(self.dates)}")
        for k, date in enumerate(self.later, start=3):
            if not date.strip():
                raise ParamError(f"date {k} of the series is an empty path")
        for k, (first, second) in enumerate(zip(self.dates, self.dates[1:]), start=1):
            if _same_file(first, second):
                raise ParamError(f"{second}: is given twice in a row (dates {k} and {k + 1}); each interval of "
                                 f"a series needs two different dates")


def _same_file(a, b):
    if a is None or b is None:
        return False
    if str(a) == str(b):
        return True
    try:  # the same local file under two names (a relative path, a link)
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # a missing file, a GDAL path: named by the checks that open them
        return False


def options(params=None):
    """[(field name, Option, default)] of every option of `params` (a dataclass whose fields are
    option_field()s; default CaptionParams: every run option), in form order."""
    out = []
    for f in fields(params or CaptionParams):
        opt = f.metadata.get("option")
        if opt is not None:
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            out.append((f.name, opt, default))
    return out


def check_value(name, value):
    """One option's value checked and normalised on its own (ParamError when unusable)."""
    return check_option(next(opt for n, opt, _ in options() if n == name), value)


def form_options():
    """The options that forms (the dialog, the Processing algorithm) offer."""
    return [(name, opt, default) for name, opt, default in options() if opt.form]


def check_option(opt, value):
    """`value` checked and normalised for `opt` (ParamError when unusable)."""
    kind = opt.kind
    if kind == "bool":
        return bool(value)
    if kind == "resume":
        if value not in (False, True, "auto"):
            raise ParamError(f"{opt.flag} must be False, True or 'auto', got {value!r}")
        return value
    if kind == "texts":
        texts = [str(v) for v in value]
        if any(not t.strip() for t in texts):
            raise ParamError(f"{opt.flag} texts must not be empty")
        longest = max(texts, key=len, default="")
        if len(longest) > MAX_TEXT_CHARS:
            raise ParamError(f"{opt.flag} texts may have at most {MAX_TEXT_CHARS:,} characters (the models read "
                             f"only their first words), got one of {len(longest):,}")
        return texts
    if value is None:
        return None
    if kind in ("int", "float"):
        return _number(opt, value)
    text = str(value)
    if kind == "bands":
        return _bands(opt, text)
    if kind == "raster_output":
        return text.strip() or None
    if kind == "extent":
        return _extent(opt, text)
    if kind == "area":
        return text.strip() or None
    if kind == "device" and not _DEVICE.match(text.strip()):
        raise ParamError(f"{opt.flag} must be auto, cpu, cuda, cuda:N or mps, got {text!r}")
    if kind == "choice" and text.strip() not in opt.choices:
        raise ParamError(f"{opt.flag} must be one of {', '.join(opt.choices)}, got {text!r}")
    return text.strip()


def _number(opt, value):
    try:
        number = int(value) if opt.kind == "int" else float(value)
        if opt.kind == "int" and number != float(value):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ParamError(f"{opt.flag} must be {'a whole number' if opt.kind == 'int' else 'a number'}, "
                         f"got {value!r}") from None
    if not math.isfinite(number):
        raise ParamError(f"{opt.flag} must be a finite number, got {value!r}")
    low, high = opt.minimum, opt.maximum
    if (low is not None and (number < low or (opt.exclusive_minimum and number == low))) or \
            (high is not None and number > high):
        lower = f"more than {low:g}" if opt.exclusive_minimum else f"at least {low:g}"
        raise ParamError(f"{opt.flag} must be {lower} and at most {high:g}, got {value}")
    return number


def _bands(opt, text):
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        return None
    if len(parts) != 3 or not all(p.isdigit() and 1 <= int(p) <= 65535 for p in parts):
        raise ParamError(f"{opt.flag} must be three band numbers from 1, like 4,3,2, got {text!r}")
    return ",".join(str(int(p)) for p in parts)


def _extent(opt, text):
    """"XMIN,YMIN,XMAX,YMAX[,CRS]" normalised; the CRS is whatever follows the fourth comma (a WKT
    holds commas of its own)."""
    if not text.strip():
        return None
    parts = text.strip().split(",", 4)
    try:
        numbers = [float(v) for v in parts[:4]]
    except ValueError:
        numbers = []
    if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
        raise ParamError(f"{opt.flag} must be XMIN,YMIN,XMAX,YMAX[,CRS], four numbers and a CRS such as "
                         f"EPSG:4326, got {text!r}")
    xmin, ymin, xmax, ymax = numbers
    if not (xmin < xmax and ymin < ymax):
        raise ParamError(f"{opt.flag} must have XMIN < XMAX and YMIN < YMAX, got {text!r}")
    crs = parts[4].strip() if len(parts) == 5 else ""
    return ",".join(f"{v!r}" for v in numbers) + (f",{crs}" if crs else "")


def parse_extent(text):
    """A checked --extent text -> ((xmin, ymin, xmax, ymax), crs text or None)."""
    parts = text.split(",", 4)
    return tuple(float(v) for v in parts[:4]), (parts[4] if len(parts) == 5 else None)


def band_list(bands):
    """"4,3,2" -> [4, 3, 2]; None -> None."""
    return None if bands is None else [int(b) for b in bands.split(",")]


# --- the command line -------------------------------------------------------------------------------

def add_caption_arguments(parser, type_error, pair=True, leave_out=()):
    """Add BEFORE AFTER -o and every run option to an argparse parser.

    type_error: the exception argparse expects from a type function (argparse.ArgumentTypeError).
    pair: False leaves BEFORE AFTER out (caption-batch reads them from a CSV); leave_out: option
    names not offered.
    """
    if pair:
        parser.add_argument("before", metavar="BEFORE")
        parser.add_argument("after", metavar="AFTER")
        parser.add_argument("later", nargs="*", metavar="LATER",
                            help="more dates for a time series, oldest first: each consecutive pair of "
                                 "dates is an interval captioned on the same tiles")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.gpkg")
    for name, opt, default in options():
        if name in leave_out:
            continue
        dest = dict(dest=name, help=opt.help)
        if opt.kind == "bool":
            parser.add_argument(opt.flag, action="store_true", **dest)
        elif opt.kind == "resume":
            group = parser.add_mutually_exclusive_group()
            group.add_argument(opt.flag, action="store_const", const=True, default=False, **dest)
            group.add_argument(opt.flag + "-if-possible", dest=name, action="store_const", const="auto",
                               help="finish OUT.gpkg.partial when it holds this same job, else start over (for tools)")
        elif opt.kind == "texts":
            parser.add_argument(opt.flag, action="append", default=[], metavar="TEXT", **dest)
        else:
            if opt.kind == "choice":
                dest["metavar"] = "{" + ",".join(opt.choices) + "}"
            parser.add_argument(opt.flag, type=argparse_type(opt, type_error), default=default, **dest)


def argparse_type(opt, type_error):
    """An argparse `type` that checks one option's value as every face does."""
    def convert(text):
        try:
            return check_option(opt, text)
        except ParamError as exc:
            raise type_error(str(exc).replace(f"{opt.flag} ", "", 1)) from None
    convert.__name__ = opt.kind
    return convert


def from_args(args):
    """CaptionParams from an argparse namespace made by a parser with add_caption_arguments (options it
    left out keep their defaults)."""
    names = [f.name for f in fields(CaptionParams)]
    return CaptionParams(**{n: getattr(args, n) for n in names if hasattr(args, n)})


def to_argv(values):
    """The `rsicrc caption` command line for {field: value} (before, after, output and options).

    Options left at None, False, an empty list or their first choice are not written, so the CLI's
    own default (e.g. $RSICRC_MODEL) applies.
    """
    argv = ["caption", str(values["before"]), str(values["after"]),
            *[str(d) for d in values.get("later") or []], "--output", str(values["output"])]
    for name, opt, _ in options():
        value = values.get(name)
        if value is None or value is False or value == [] or value == "" or \
                (opt.kind == "choice" and value == opt.choices[0]):
            continue
        if opt.kind == "resume":
            argv.append(opt.flag + ("-if-possible" if value == "auto" else ""))
        elif opt.kind == "bool":
            argv.append(opt.flag)
        elif opt.kind == "texts":
            for text in value:
                argv += [opt.flag, str(text)]
        else:
            argv += [opt.flag, _format(value)]
    return argv


def _format(value):
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
