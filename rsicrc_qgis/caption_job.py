"""One caption run: the raster layers turned into file paths and the `rsicrc caption` command.

Used by the dialog's QgsTask and by the rsicrc:captionchanges algorithm, so both build the
very same command line.
"""
from pathlib import Path

from ..pipeline.gpkg_layer import LAYER, partial_path
from . import settings
from .worker_process import run_cli

DEFAULT_TILE_SIZE = 256


class BadParameter(Exception):
    """A parameter cannot be used as given; the message names it."""


def raster_path(layer, role):
    """The GDAL data source of a raster layer, or BadParameter saying why it cannot be used."""
    if layer is None or not layer.isValid():
        raise BadParameter(f"{role}: choose a valid raster layer.")
    if layer.providerType() != "gdal":
        raise BadParameter(f"{role}: layer \"{layer.name()}\" comes from the {layer.providerType()} "
                           "provider; rsicrc reads files (GeoTIFF and other GDAL rasters).")
    return layer.source()


def parse_queries(text):
    """One query a line (or a list); blank lines dropped."""
    if not text:
        return []
    lines = text.splitlines() if isinstance(text, str) else list(text)
    return [q.strip() for q in lines if q and q.strip()]


def parse_bands(text):
    """"3,2,1" -> "3,2,1" checked; "" -> None (the CLI picks the RGB bands)."""
    text = (text or "").strip()
    if not text:
        return None
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    if len(parts) != 3 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise BadParameter(f"Bands: give three band numbers from 1, like 4,3,2 (got \"{text}\").")
    return ",".join(parts)


def output_path(text):
    """The destination GeoPackage; Processing may hand "path|layername=..." or a .gpkg-less name."""
    path = (text or "").split("|")[0].strip()
    if not path:
        raise BadParameter("Output: choose a file.")
    if Path(path).suffix.lower() != ".gpkg":
        raise BadParameter(f"Output: rsicrc writes a GeoPackage; use a .gpkg file name (got {path}).")
    if not Path(path).parent.is_dir():
        raise BadParameter(f"Output: folder {Path(path).parent} does not exist.")
    return path


def layer_uri(path):
    return f"{path}|layername={LAYER}"


def caption_args(before, after, output, bands=None, tile_size=None, queries=(), model=None,
                 device=None, reproject=False, clip=False):
    args = ["caption", before, after, "--output", output, "--progress", "json"]
    # An interrupted run (cancel) left its finished tiles behind: running the same job again
    # continues it; any other job to that output starts over (the CLI checks which).
    if Path(partial_path(output)).exists():
        args.append("--resume-if-possible")
    if reproject:
        args.append("--reproject")
    if clip:
        args.append("--clip")
        clip_model = settings.clip_model_choice().value
        if clip_model:
            args += ["--clip-model", clip_model]
    if bands:
        args += ["--bands", bands]
    if tile_size:
        args += ["--tile-size", str(int(tile_size))]
    for query in queries:
        args += ["--query", query]
    model = model if model is not None else settings.model_choice().value
    if model:
        args += ["--model", model]
    device = device or settings.device()
    if device:
        args += ["--device", device]
    return args


def run_caption(args, on_event=None, is_canceled=None, on_log=None, python=None, on_started=None):
    return run_cli(args, on_event=on_event, is_canceled=is_canceled, on_log=on_log, python=python,
                   on_started=on_started)
