"""One caption run: the form's values turned into the `rsicrc caption` command line.

Used by the dialog's QgsTask and by the rsicrc:captionchanges algorithm, so both build the very
same command from the one definition of the run options (pipeline/caption_params.py). The
plugin's settings stand in for the model, RS-M-CLIP model and device a form leaves empty.
"""
import re
from pathlib import Path

from qgis.core import QgsProviderRegistry

from . import pair_checks
from .. import settings
from ...pipeline.caption_params import CaptionParams, ParamError, options, to_argv
from ...pipeline.layer.schema import LAYER, partial_path
from ...pipeline.raster.web_services import WebSourceError
from ..layers import result_layer
from ..worker.process import run_cli
from .web_layer import web_layer_login, web_layer_source


class BadParameter(Exception):
    """A parameter cannot be used as given; the message names it."""


def raster_path(layer, role, target_resolution=None):
    """The GDAL data source of a raster layer (a web layer's GDAL description), or BadParameter
    saying why it cannot be used."""
    if layer is None or not layer.isValid():
        raise BadParameter(f"{role}: choose a valid raster layer.")
    if layer.providerType() == "wms":
        try:
            return web_layer_source(layer, target_resolution)
        except WebSourceError as exc:
            raise BadParameter(f"{role}: {exc}.") from None
    if layer.providerType() != "gdal":
        raise BadParameter(f"{role}: layer \"{layer.name()}\" comes from the {layer.providerType()} "
                           "provider; rsicrc reads files (GeoTIFF and other GDAL rasters) and web layers "
                           "(XYZ, WMS, WMTS).")
    return layer.source()


def worker_login(layers):
    """The worker's environment for the web layers' login ({} without one); BadParameter when two
    dates need different logins (GDAL's login holds for every request of the worker)."""
    logins = {}
    for index, layer in enumerate(layers):
        try:
            login = web_layer_login(layer)
        except WebSourceError as exc:
            raise BadParameter(f"{pair_checks.date_role(index, layer)}: {exc}.") from None
        if login:
            logins[pair_checks.date_role(index, layer)] = login
    if len({tuple(sorted(v.items())) for v in logins.values()}) > 1:
        raise BadParameter(f"{' and '.join(logins)} log in differently; rsicrc's worker can use one login for "
                           "all dates.")
    return next(iter(logins.values()), {})


def later_paths(layers, target_resolution=None):
    """The GDAL sources of the dates after AFTER (oldest first), each named by its place in the run."""
    return [raster_path(layer, pair_checks.date_role(index, layer), target_resolution)
            for index, layer in enumerate(layers, start=2)]


def parse_queries(text):
    """One query a line (or a list); blank lines dropped."""
    if not text:
        return []
    lines = text.splitlines() if isinstance(text, str) else list(text)
    return [q.strip() for q in lines if q and q.strip()]


def output_path(text):
    """The destination GeoPackage; Processing may hand "path|layername=..." or a .gpkg-less name."""
    path = re.sub(r"\|layername=[^|/\\]*$", "", (text or "").strip()).strip()
    if not path:
        raise BadParameter("Output: choose a file.")
    reason = result_layer.unopenable_path_reason(path)
    if reason:
        raise BadParameter(f"Output: QGIS could not show {path}: {reason}. Choose another folder or name.")
    if Path(path).suffix.lower() != ".gpkg":
        raise BadParameter(f"Output: rsicrc writes a GeoPackage; use a .gpkg file name (got {path}).")
    if not Path(path).parent.is_dir():
        raise BadParameter(f"Output: folder {Path(path).parent} does not exist.")
    return path


def layer_uri(path):
    return QgsProviderRegistry.instance().encodeUri("ogr", {"path": str(path), "layerName": LAYER})


def run_values(values):
    """The form's {option: value} completed from the plugin settings and checked.

    Options that need one that is off (RS-M-CLIP's model and classes without RS-M-CLIP) are
    left out; a value the option does not accept raises BadParameter with the option's label.
    """
    values = {k: v for k, v in values.items() if v is not None}
    values["queries"] = parse_queries(values.get("queries"))
    values["model"] = values.get("model") or settings.model_choice().value or None
    values["clip_model"] = values.get("clip_model") or settings.clip_model_choice().value or None
    values["device"] = values.get("device") or settings.device()
    # An interrupted run (cancel) left its finished tiles behind: running the same job again
    # continues it; any other job to that output starts over (the CLI checks which).
    values["resume"] = "auto" if Path(partial_path(values["output"])).exists() else False
    for name, opt, _ in options():
        if opt.requires and not values.get(opt.requires):
            values.pop(name, None)
    try:
        checked = CaptionParams(**values).check()
    except ParamError as exc:
        label = next((opt.label for _, opt, _ in options() if str(exc).startswith(opt.flag + " ")), None)
        raise BadParameter(f"{label}: {exc}" if label else str(exc)) from None
    except TypeError as exc:  # a value of the wrong kind from a caller
        raise BadParameter(str(exc)) from None
    out = {name: getattr(checked, name)
           for name in ("before", "after", "later", "output", *(n for n, _, _ in options()))}
    for name, opt, _ in options():
        if opt.requires and not out.get(opt.requires):
            out[name] = None  # not passed: the CLI's own default (e.g. $RSICRC_CLIP_MODEL) stays
    return out


def caption_args(values):
    """argv (without the interpreter) for {before, after, later (list), output, option: value}."""
    return to_argv(run_values(values)) + ["--progress", "json"]


def run_caption_job(args, on_event=None, is_canceled=None, on_log=None, python=None, on_started=None, env=None):
    """The caption run of `args` in the worker; `env`: what its environment adds (a web layer's login)."""
    return run_cli(args, on_event=on_event, is_canceled=is_canceled, on_log=on_log, python=python,
                   on_started=on_started, env=env)
