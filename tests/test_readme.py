"""The README's commands, run as a user would: every command it shows is run here (offline, with a
generated checkpoint standing in for the released model), or named in NOT_OFFLINE with the reason
it cannot run here; its usage synopses are checked against the CLI's parser."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the venv's `rsicrc`, `python`
QGIS_PROCESS = shutil.which("qgis_process.bin") or shutil.which("qgis_process")
QUERY = "many buildings have been built"
SAMPLE_TILES = 16  # the 1024 px sample pair in 256 px tiles

NOT_OFFLINE = {
    "make test": "it is the command that runs this test",
    "hf download rogerferrod/RSICRC config.json levir_vocab.json pytorch_model.bin --local-dir RSICRC":
        "it downloads from the Hugging Face hub",
    "ray start --head --port 6379": "it starts a cluster's head node",
    "ray start --address HEAD:6379": "it joins a cluster's head node",
    "rsicrc caption /vsis3/bucket/2024.tif /vsis3/bucket/2025.tif -o changes.gpkg --engine ray --ray-address "
    "HEAD:6379 --model /shared/RSICRC": "it needs a Ray cluster and an S3 bucket",
}


def readme_blocks():
    """[(section, [command, ...])] of the README's indented code blocks, a command a line
    (continuation lines joined, comments dropped)."""
    blocks, section, block, previous = [], None, None, ""
    for line in README.read_text(encoding="utf-8").split("\n") + [""]:
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        indented = re.match(r"^( {4,})(\S.*)$", line)
        if indented and (block is not None or not previous.strip()):
            block = block if block is not None else []
            block.append(indented.group(2))
        elif block is not None and line.strip():
            block = None  # an indented list item's continuation, not a code block
        elif block is not None:
            blocks.append((section, _commands(block)))
            block = None
        previous = line
    return blocks


def _commands(lines):
    commands, current = [], ""
    for line in lines:
        if current and not current.endswith("\\") and line.startswith("["):
            current += " " + line  # a synopsis wrapped under its command
            continue
        if current and current.endswith("\\"):
            current = current[:-1].rstrip() + " " + line.strip()
            continue
        if current:
            commands.append(current)
        current = line.strip()
    commands.append(current)
    return [re.sub(r"\s+#\s.*$", "", " ".join(c.split())) for c in commands if c]


def synopsis(block):
    return any(" [" in c for c in block)


BLOCKS = readme_blocks()
COMMANDS = [c for _, block in BLOCKS if not synopsis(block) for c in block]
SYNOPSES = [c for _, block in BLOCKS if synopsis(block) for c in block]
RUN_HERE = {}  # command -> the test below that runs it


def runs(*commands):
    def mark(test):
        for c in commands:
            RUN_HERE[c] = test.__name__
        return test
    return mark


def test_every_readme_command_is_run_here_or_says_why_not():
    assert COMMANDS and SYNOPSES
    missing = [c for c in COMMANDS if c not in RUN_HERE and c not in NOT_OFFLINE]
    assert not missing, f"README commands no test runs (run them in tests/test_readme.py): {missing}"
    stale = [c for c in [*RUN_HERE, *NOT_OFFLINE] if c not in COMMANDS + SYNOPSES]
    assert not stale, f"no longer in the README: {stale}"


def test_synopses_name_real_commands_and_options():
    from rsicrc.pipeline.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # noqa: SLF001
    for line in SYNOPSES:
        words = line.replace("python3 -m rsicrc", "rsicrc", 1).split()
        assert words[0] == "rsicrc" and words[1] in commands, line
        known = set(commands[words[1]]._option_string_actions)  # noqa: SLF001
        unknown = [flag for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line) if flag not in known]
        assert not unknown, f"{line}: no such option {unknown}"


def _run(command, cwd, env=None, timeout=900):
    """The README line run by bash in `cwd`, with the venv's commands first on PATH."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _in_readme(command):
    assert command in COMMANDS + SYNOPSES, f"not in the README any more: {command}"
    return command


@pytest.fixture
def checkout_like(tmp_path):
    """A folder that looks like the checkout to the README's relative paths: resources/, .venv/."""
    (tmp_path / "resources").symlink_to(ROOT / "resources", target_is_directory=True)
    (tmp_path / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    return tmp_path


def _sample_layer_rows(path):
    from rsicrc.pipeline.layer.gpkg import read_columns, read_info, read_metadata

    return read_info(str(path))["features"], read_metadata(str(path)), read_columns(str(path), ["tile_id", "caption"])


@runs("make demo MODEL=/path/to/RSICRC")
def test_make_demo_with_a_model_folder(small_checkpoint, tmp_path):
    command = _in_readme("make demo MODEL=/path/to/RSICRC")
    command = command.replace("/path/to/RSICRC", shlex.quote(str(small_checkpoint)))
    proc = _run(command, ROOT, {"TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "rsicrc-demo" / "changes.gpkg"
    features, meta, rows = _sample_layer_rows(out)
    assert features == SAMPLE_TILES and meta["model_source"] == str(small_checkpoint)
    assert f"{SAMPLE_TILES} tiles," in proc.stdout and "top captions:" in proc.stdout
    # The top captions printed are the layer's most frequent change captions, best tiles for the query next.
    assert any(" x  " in line and line.split(" x  ", 1)[1] in set(rows["caption"]) for line in proc.stdout.splitlines())
    assert "tiles scored into field q_many_buildings_have_been_built; top 5:" in proc.stdout
    assert f"output: {out.resolve()}" in proc.stdout


@runs("make demo")
def test_make_demo_without_a_model_and_without_internet_says_how_to_get_one(tmp_path):
    proc = _run(_in_readme("make demo"), ROOT, {"TMPDIR": str(tmp_path), "HF_HUB_OFFLINE": "1",
                                                 "HF_HOME": str(tmp_path / "hf"), "RSICRC_MODEL": ""})
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rsicrc: error:")]
    assert len(errors) == 1 and "hf download rogerferrod/RSICRC" in errors[0] and "--model" in errors[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "rsicrc-demo" / "changes.gpkg").exists()


SAMPLE_COMMANDS = [
    'rsicrc caption resources/sample/before.tif resources/sample/after.tif -o changes.gpkg --query '
    '"many buildings have been built"',
    "rsicrc info changes.gpkg",
    'rsicrc search changes.gpkg "a road is built" --top 5',
    "rsicrc device",
]


@runs(*SAMPLE_COMMANDS)
def test_the_command_line_examples_on_the_sample_pair(small_checkpoint, checkout_like):
    env = {"RSICRC_MODEL": str(small_checkpoint)}
    caption, info, search, device = (_in_readme(c) for c in SAMPLE_COMMANDS)
    proc = _run(caption, checkout_like, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    features, meta, rows = _sample_layer_rows(checkout_like / "changes.gpkg")
    assert features == SAMPLE_TILES and meta["queries"] == {"q_many_buildings_have_been_built": QUERY}
    proc = _run(info, checkout_like, env)
    assert proc.returncode == 0 and f"{SAMPLE_TILES} tiles" in proc.stdout.splitlines()[0]
    assert "query q_many_buildings_have_been_built" in proc.stdout
    proc = _run(search, checkout_like, env)
    assert proc.returncode == 0, proc.stderr
    hits = proc.stdout.splitlines()[2:]
    assert len(hits) == 5 and all(int(h.split()[0]) in set(rows["tile_id"]) for h in hits)
    proc = _run(device, checkout_like, env)
    assert proc.returncode == 0 and proc.stdout.startswith("device: cpu")


SERIES = "rsicrc caption 2019.tif 2020.tif 2021.tif 2022.tif -o changes.gpkg --heatmap heat.tif"


@runs(SERIES)
def test_the_time_series_example(small_checkpoint, tmp_path):
    sample = ROOT / "resources" / "sample"
    for year, date in zip((2019, 2020, 2021, 2022), ("before", "after", "before", "after")):
        shutil.copyfile(sample / f"{date}.tif", tmp_path / f"{year}.tif")
    proc = _run(_in_readme(SERIES), tmp_path, {"RSICRC_MODEL": str(small_checkpoint)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    features, meta, _ = _sample_layer_rows(tmp_path / "changes.gpkg")
    assert features == 3 * SAMPLE_TILES and [i["interval"] for i in meta["intervals"]] == [0, 1, 2]
    import rasterio

    with rasterio.open(tmp_path / "heat.tif") as heat:
        assert heat.count == 3 and heat.descriptions[0] == "2019.tif -> 2020.tif"


RAY = "rsicrc caption before.tif after.tif -o changes.gpkg --engine ray --workers 4"


@runs(RAY)
def test_the_local_ray_example(small_checkpoint, tmp_path):
    for name in ("before.tif", "after.tif"):
        shutil.copyfile(ROOT / "resources" / "sample" / name, tmp_path / name)
    proc = _run(_in_readme(RAY), tmp_path, {"RSICRC_MODEL": str(small_checkpoint)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _sample_layer_rows(tmp_path / "changes.gpkg")[0] == SAMPLE_TILES


EVALUATE = "rsicrc evaluate --annotations LevirCCcaptions.json --images IMAGES_DIR -o OUT_DIR"


@runs(EVALUATE)
def test_the_evaluate_example(small_checkpoint, tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "pipeline"))
    from levir_cc_dataset import PAIRS, write_dataset

    _, images = write_dataset(tmp_path)
    Path(images).rename(tmp_path / "IMAGES_DIR")
    proc = _run(_in_readme(EVALUATE), tmp_path, {"RSICRC_MODEL": str(small_checkpoint)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "OUT_DIR" / "metrics.json").read_text())
    test_pairs = [p for p in PAIRS if p[1] == "test"]
    assert metrics["settings"]["pairs"] == len(test_pairs) and "Bleu_4" in metrics["captioning"]
    assert len(json.loads((tmp_path / "OUT_DIR" / "captions.json").read_text())) == len(test_pairs)


TRAIN = "rsicrc train --annotations LevirCCcaptions.json --images IMAGES_DIR -o MY_MODEL --epochs 3"
EVALUATE_TRAINED = ("rsicrc evaluate --annotations LevirCCcaptions.json --images IMAGES_DIR -o AFTER_TRAINING "
                    "--model MY_MODEL --split val")


@runs(TRAIN, EVALUATE_TRAINED)
def test_the_fine_tuning_example(small_checkpoint, tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "pipeline"))
    from levir_cc_dataset import write_training_set

    _, images = write_training_set(str(tmp_path))
    Path(images).rename(tmp_path / "IMAGES_DIR")
    proc = _run(_in_readme(TRAIN), tmp_path, {"RSICRC_MODEL": str(small_checkpoint)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "MY_MODEL" / "training.json").read_text())
    assert len(record["epochs"]) == 3 and record["started_from"] == str(small_checkpoint)
    proc = _run(_in_readme(EVALUATE_TRAINED), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "AFTER_TRAINING" / "metrics.json").read_text())
    assert metrics["settings"]["pairs"] == 2 and "CIDEr" in metrics["captioning"]


QGIS_COMMANDS = [
    "qgis_process.bin plugins enable rsicrc",
    "RSICRC_PYTHON=$PWD/.venv/bin/python qgis_process.bin run rsicrc:captionchanges -- "
    "BEFORE=resources/sample/before.tif AFTER=resources/sample/after.tif TILE_SIZE=256 "
    'QUERIES="new buildings" OUTPUT=changes.gpkg',
    "RSICRC_PYTHON=$PWD/.venv/bin/python qgis_process.bin run rsicrc:searchchanges -- "
    'INPUT="changes.gpkg|layername=changes" QUERY="new road" FIELD=road TOP=5 OUTPUT=scored.gpkg',
]


@runs(*QGIS_COMMANDS)
def test_the_qgis_process_examples(small_checkpoint, checkout_like, plugin_parent_folder):
    assert QGIS_PROCESS is not None, "qgis_process is not installed (make setup installs QGIS)"
    env = {"QGIS_PLUGINPATH": str(plugin_parent_folder), "QGIS_CUSTOM_CONFIG_PATH": str(checkout_like / "profile"),
           "RSICRC_MODEL": str(small_checkpoint), "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": ""}
    enable, caption, search = (_run(_in_readme(c), checkout_like, env) for c in QGIS_COMMANDS)
    assert enable.returncode == 0, enable.stderr[-2000:]
    assert caption.returncode == 0, caption.stderr[-2000:] + caption.stdout[-2000:]
    features, meta, _ = _sample_layer_rows(checkout_like / "changes.gpkg")
    assert features == SAMPLE_TILES and meta["queries"] == {"q_new_buildings": "new buildings"}
    assert search.returncode == 0, search.stderr[-2000:] + search.stdout[-2000:]
    import pyogrio.raw

    meta, _, _, values = pyogrio.raw.read(str(checkout_like / "scored.gpkg"), read_geometry=False)
    scores = dict(zip(meta["fields"], values))["road"]
    assert len(scores) == SAMPLE_TILES


@pytest.fixture
def plugin_parent_folder(tmp_path):
    """A folder holding a `rsicrc` link to the checkout: what QGIS_PLUGINPATH needs (README)."""
    parent = tmp_path / "plugins"
    parent.mkdir()
    (parent / "rsicrc").symlink_to(ROOT, target_is_directory=True)
    return parent


AREA_COMMANDS = [
    "rsicrc caption resources/sample/before.tif resources/sample/after.tif -o district.gpkg --extent "
    "9.0015,45.1505,9.0035,45.152,EPSG:4326",
    "rsicrc caption resources/sample/before.tif resources/sample/after.tif -o parcels.gpkg --area "
    "resources/sample/parcels.geojson",
]
WEB_EXTENT = (500100, 4999600, 500400, 4999900)  # EPSG:32632, the sample's CRS
WEB_COMMANDS = [
    "rsicrc caption before.xml after.xml -o web.gpkg --extent 500100,4999600,500400,4999900,EPSG:32632 --bands 1,2,3",
    "rsicrc caption /vsicurl/https://example.org/2019.tif /vsicurl/https://example.org/2020.tif -o cog.gpkg "
    "--extent 500100,4999600,500400,4999900",
]
QGIS_AREA = ("RSICRC_PYTHON=$PWD/.venv/bin/python qgis_process.bin run rsicrc:captionchanges -- "
             "BEFORE=resources/sample/before.tif AFTER=resources/sample/after.tif "
             "AREA=resources/sample/parcels.geojson OUTPUT=parcels_qgis.gpkg")


def _tiles_touching(area_utm):
    """(row, col) of the sample's 256 px tiles whose squares reach inside `area_utm` (EPSG:32632)."""
    import shapely

    size = 256 * 0.5
    return {(i * 256, j * 256) for i in range(4) for j in range(4)
            if shapely.box(500000 + j * size, 5000000 - (i + 1) * size, 500000 + (j + 1) * size,
                           5000000 - i * size).intersection(area_utm).area > 1e-6}


def _row_cols(path):
    from rsicrc.pipeline.layer.gpkg import read_columns

    columns = read_columns(str(path), ["row", "col"])
    return set(zip(columns["row"], columns["col"]))


def _utm(geometry):
    import numpy as np
    import shapely
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    dense = shapely.segmentize(geometry, 1e-5)
    return shapely.transform(dense, lambda xy: np.column_stack(to_utm.transform(*xy.T)))


@runs(*AREA_COMMANDS)
def test_the_area_examples(small_checkpoint, checkout_like):
    import shapely

    env = {"RSICRC_MODEL": str(small_checkpoint)}
    extent, area = (_in_readme(c) for c in AREA_COMMANDS)
    proc = _run(extent, checkout_like, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = _tiles_touching(_utm(shapely.box(9.0015, 45.1505, 9.0035, 45.152)))
    assert _row_cols(checkout_like / "district.gpkg") == expected and 1 < len(expected) < SAMPLE_TILES
    proc = _run(area, checkout_like, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parcels = json.loads((ROOT / "resources" / "sample" / "parcels.geojson").read_text())
    polygons = shapely.union_all([_utm(shapely.geometry.shape(f["geometry"])) for f in parcels["features"]])
    expected = _tiles_touching(polygons)
    assert _row_cols(checkout_like / "parcels.gpkg") == expected and 1 < len(expected) < SAMPLE_TILES


@runs(*WEB_COMMANDS)
def test_the_web_imagery_examples(small_checkpoint, tmp_path):
    import shapely

    sys.path.insert(0, str(ROOT / "tests"))
    from tile_server import TileServer, make_xyz, tms_description

    sample = ROOT / "resources" / "sample"
    served = tmp_path / "served"
    for name, year in (("before", 2019), ("after", 2020)):
        make_xyz(sample / f"{name}.tif", served / str(year), 18)
        shutil.copyfile(sample / f"{name}.tif", served / f"{year}.tif")
    env = {"RSICRC_MODEL": str(small_checkpoint), "NO_PROXY": "127.0.0.1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    tms, cog = (_in_readme(c) for c in WEB_COMMANDS)
    with TileServer(served) as server:
        for name, year in (("before", 2019), ("after", 2020)):
            xml = tms_description(f"{server.url}/{year}", 18).replace("</GDAL_WMS>", "<Cache/></GDAL_WMS>")
            (tmp_path / f"{name}.xml").write_text(xml)
        proc = _run(tms, tmp_path, env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        proc = _run(cog.replace("https://example.org", server.url), tmp_path, env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "cache" / "gdalwmscache").is_dir()  # <Cache/>: the user cache's folder
    from rsicrc.pipeline.layer.gpkg import read_info

    assert read_info(str(tmp_path / "web.gpkg"))["features"] >= 4
    assert _row_cols(tmp_path / "cog.gpkg") == _tiles_touching(shapely.box(*WEB_EXTENT))


@runs(QGIS_AREA)
def test_the_qgis_process_area_example(small_checkpoint, checkout_like, plugin_parent_folder):
    import shapely

    env = {"QGIS_PLUGINPATH": str(plugin_parent_folder), "QGIS_CUSTOM_CONFIG_PATH": str(checkout_like / "profile"),
           "RSICRC_MODEL": str(small_checkpoint), "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": ""}
    assert _run(_in_readme(QGIS_COMMANDS[0]), checkout_like, env).returncode == 0
    proc = _run(_in_readme(QGIS_AREA), checkout_like, env)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    parcels = json.loads((ROOT / "resources" / "sample" / "parcels.geojson").read_text())
    polygons = shapely.union_all([_utm(shapely.geometry.shape(f["geometry"])) for f in parcels["features"]])
    assert _row_cols(checkout_like / "parcels_qgis.gpkg") == _tiles_touching(polygons)
