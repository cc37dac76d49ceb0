"""The CLI starts light: its help, argument errors and `rsicrc info` import neither rasterio, GDAL's
Python bindings (osgeo) nor torch; each command imports what it needs when it runs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("rasterio", "osgeo", "torch")
LEGACY_LAYER = Path(__file__).resolve().parent.parent / "data" / "legacy" / "finished.gpkg"
# Run in a fresh interpreter: what the command imported, and its exit code, as one JSON line.
PROBE = """
import json, sys
from rsicrc.pipeline.cli import main
argv = json.loads(sys.argv[1])
code = None if argv is None else main(argv)
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
print(json.dumps({"code": code, "heavy": heavy}), file=sys.__stderr__)
""" % (HEAVY,)


def _probe(argv):
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    return json.loads(proc.stderr.strip().splitlines()[-1]), proc


def test_importing_the_cli_loads_no_heavy_library():
    result, _ = _probe(None)
    assert result["heavy"] == []


COMMANDS = ["caption", "caption-batch", "search", "info", "evaluate", "serve", "device"]


@pytest.mark.parametrize("argv", [["--help"], *[[c, "--help"] for c in COMMANDS]], ids=lambda a: " ".join(a))
def test_help_is_light(argv):
    result, proc = _probe(argv)
    assert result == {"code": 0, "heavy": []}
    assert "usage: rsicrc" in proc.stdout


@pytest.mark.parametrize("argv", [[], ["nonsense"], ["caption", "a.tif"], ["caption", "a.tif", "b.tif", "-o", "o.gpkg",
                                   "--tile-size", "7"], ["search", "x.gpkg"]], ids=lambda a: " ".join(a) or "none")
def test_argument_errors_are_light_and_one_line(argv):
    result, proc = _probe(argv)
    assert result == {"code": 2, "heavy": []}
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rsicrc: error:")]
    assert len(errors) == 1


def test_info_is_light(tmp_path):
    layer = tmp_path / "layer.gpkg"
    layer.write_bytes(LEGACY_LAYER.read_bytes())
    result, proc = _probe(["info", str(layer)])
    assert result == {"code": 0, "heavy": []}
    assert f"{layer}: 9 tiles" in proc.stdout


def test_a_command_imports_what_it_needs_when_it_runs(tmp_path):
    """The caption command does load rasterio, once it runs (the probe above can see it)."""
    result, _ = _probe(["caption", str(tmp_path / "missing.tif"), str(tmp_path / "also.tif"), "-o",
                        str(tmp_path / "o.gpkg")])
    assert result["code"] == 2 and "rasterio" in result["heavy"]
