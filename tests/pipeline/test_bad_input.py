"""Every bad input: exit code 2, one line naming the file and the problem, no output left behind.

All of these fail in the pair checks, before any model is loaded (the model source given does
not even exist, which would be a different error)."""
import json
import os

import numpy as np
import pytest
from pipeline_test_rasters import ORIGIN, uint8_scene, write_raster
from rasterio.enums import ColorInterp

from rsicrc.pipeline.cli import main
from rsicrc.pipeline.raster.pair_plan import plan_pair

NO_MODEL = "/nonexistent/model"


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    r = {"good": write_raster(d / "good.tif", uint8_scene((300, 300), 1))}
    r["other_crs"] = write_raster(d / "other_crs.tif", uint8_scene((300, 300), 2), crs="EPSG:32633")
    r["shifted"] = write_raster(d / "shifted.tif", uint8_scene((300, 300), 3),
                                origin=(ORIGIN[0] + 0.2, ORIGIN[1]))  # 0.4 px
    r["coarser"] = write_raster(d / "coarser.tif", uint8_scene((300, 300), 4), res=0.6)
    r["far"] = write_raster(d / "far.tif", uint8_scene((300, 300), 5), origin=(ORIGIN[0] + 1000, ORIGIN[1]))
    r["small_overlap"] = write_raster(d / "small_overlap.tif", uint8_scene((300, 300), 6),
                                      origin=(ORIGIN[0] + 100, ORIGIN[1]))  # 100 px overlap in x
    r["one_band"] = write_raster(d / "one_band.tif", uint8_scene((300, 300), 7)[:1])
    r["five_band"] = write_raster(d / "five_band.tif", np.concatenate([uint8_scene((300, 300), 8)] * 2)[:5])
    r["no_crs"] = write_raster(d / "no_crs.tif", uint8_scene((300, 300), 9), crs=None, origin=None)
    r["not_raster"] = str(d / "notes.tif")
    with open(r["not_raster"], "w") as f:
        f.write("not an image\n")
    r["missing"] = str(d / "missing.tif")
    return r


CASES = [
    # (before, after, extra args, file named in the message, words in the message)
    ("missing", "good", [], "missing", "no such file"),
    ("good", "not_raster", [], "not_raster", "cannot be opened as a raster"),
    ("good", "other_crs", [], "other_crs", "CRS"),
    ("good", "shifted", [], "shifted", "shifted by 0.40 px"),
    ("good", "coarser", [], "coarser", "pixel size"),
    ("good", "far", [], "far", "does not overlap"),
    ("good", "small_overlap", ["--tile-size", "256"], "small_overlap", "smaller than one 256 px tile"),
    ("one_band", "good", [], "one_band", "--bands"),
    ("good", "five_band", [], "five_band", "--bands"),
    ("good", "good", ["--bands", "4,3,2"], "good", "asks for band 4"),
    ("no_crs", "good", [], "no_crs", "coordinate reference system"),
]


@pytest.mark.parametrize("before,after,extra,named,words", CASES, ids=[c[1] + "-" + c[4][:12] for c in CASES])
def test_bad_pair_exits_2_with_one_line_and_no_output(rasters, tmp_path, capsys, before, after, extra, named, words):
    out = tmp_path / "out.gpkg"
    rc = main(["caption", rasters[before], rasters[after], "-o", str(out), "--model", NO_MODEL] + extra)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert os.path.basename(rasters[named]) in err and words in err, err
    assert "Traceback" not in err
    assert os.listdir(tmp_path) == []  # neither OUT nor OUT.partial


def test_bad_input_as_json_line(rasters, tmp_path, capsys):
    rc = main(["caption", rasters["good"], rasters["other_crs"], "-o", str(tmp_path / "o.gpkg"),
               "--model", NO_MODEL, "--progress", "json"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 2
    event = json.loads(lines[-1])
    assert event["event"] == "error" and event["code"] == 2 and "other_crs.tif" in event["message"]


@pytest.mark.parametrize("args,words", [
    (["--bands", "1,2"], "three"),
    (["--tile-size", "16"], "--tile-size"),
    (["--overlap", "300", "--tile-size", "256"], "--overlap"),
    (["--max-nodata", "1.5"], "--max-nodata"),
])
def test_bad_options_exit_2(rasters, tmp_path, capsys, args, words):
    rc = main(["caption", rasters["good"], rasters["good"], "-o", str(tmp_path / "o.gpkg"), "--model", NO_MODEL]
              + args)
    assert rc == 2 and words in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_missing_output_folder(rasters, tmp_path, capsys):
    rc = main(["caption", rasters["good"], rasters["good"], "-o", str(tmp_path / "nope" / "o.gpkg")])
    assert rc == 2 and "output folder does not exist" in capsys.readouterr().err


def test_alpha_band_is_a_mask_not_a_colour(tmp_path):
    rgba = np.concatenate([uint8_scene((300, 300), 1), np.full((1, 300, 300), 255, np.uint8)])
    path = write_raster(tmp_path / "rgba.tif", rgba,
                        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha])
    plan = plan_pair(path, path, tile_size=128)
    assert plan.before.bands == [1, 2, 3]


def test_far_pixel_size_warns_and_reproject_accepts_other_crs(rasters, tmp_path):
    coarse = write_raster(tmp_path / "coarse.tif", uint8_scene((300, 300), 1), res=10.0)
    assert any("far from LEVIR-CC" in w for w in plan_pair(coarse, coarse, tile_size=128).warnings)
    plan = plan_pair(rasters["good"], rasters["shifted"], tile_size=128, reproject=True)
    assert plan.after.warp and not plan.before.warp
    assert plan.window == (1, 0, 299, 300)  # column 0 is only 60% covered by the shifted AFTER


def test_target_resolution_resamples_both_dates_onto_a_new_grid(rasters):
    plan = plan_pair(rasters["good"], rasters["good"], tile_size=128, target_resolution=0.25)
    assert plan.before.warp and plan.after.warp
    assert (plan.grid.width, plan.grid.height) == (600, 600) and plan.grid.res == (0.25, 0.25)
    assert plan.window == (0, 0, 600, 600)
    from rsicrc.pipeline.raster.grid_reader import open_on_grid

    with open_on_grid(plan.before, plan.grid) as reader:
        rgb, valid = reader.read((0, 0, 128, 128))
    assert rgb.shape == (3, 128, 128) and rgb.dtype == np.uint8 and valid.all()


@pytest.mark.parametrize("command", ["caption", "search"])
def test_unusable_model_source_exits_2_naming_it(rasters, tmp_path, capsys, small_checkpoint, command):
    model = tmp_path / "half_model"
    model.mkdir()
    (model / "config.json").write_text((small_checkpoint / "config.json").read_text())
    out = tmp_path / "o.gpkg"
    if command == "caption":
        args = ["caption", rasters["good"], rasters["good"], "-o", str(out), "--model", str(model)]
    else:
        layer = tmp_path / "layer.gpkg"
        assert main(["caption", rasters["good"], rasters["good"], "-o", str(layer), "--tile-size", "256",
                     "--model", str(small_checkpoint), "--progress", "json"]) == 0
        args = ["search", str(layer), "new buildings", "--model", str(model)]
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert str(model) in err and "levir_vocab.json, pytorch_model.bin missing" in err
    assert not out.exists() and not os.path.exists(str(out) + ".partial")


def test_target_resolution_is_in_metres_on_a_geographic_crs(tmp_path):
    deg = 1e-5  # about 1.1 m
    path = write_raster(tmp_path / "wgs84.tif", uint8_scene((300, 300), 3), crs="EPSG:4326",
                        origin=(11.0, 45.0), res=deg)
    plan = plan_pair(path, path, tile_size=128, target_resolution=0.5)
    assert plan.grid.width == int(300 * deg * 111_320.0 / 0.5)  # about 668 px of 0.5 m


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_target_resolution_must_be_a_positive_number(rasters, tmp_path, capsys, value):
    rc = main(["caption", rasters["good"], rasters["good"], "-o", str(tmp_path / "o.gpkg"),
               "--target-resolution", value])
    assert rc == 2 and "--target-resolution" in capsys.readouterr().err
