"""`--precision`: the model's number format as a run option (fp32 default, bf16, fp16)."""
import json
import os

import pytest
from pipeline_test_rasters import uint8_scene, write_raster

from rsicrc.model.device import cpu_has_bf16
from rsicrc.pipeline.caption.run import CaptionParams, run_caption
from rsicrc.pipeline.cli import main
from rsicrc.pipeline.errors import BadInput
from rsicrc.pipeline.layer.gpkg import LayerWriter, read_info, read_metadata
from rsicrc.pipeline.progress import Reporter

SHAPE = (64, 128)  # 1 x 2 tiles of 64 px


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("precision-pair")
    return (write_raster(d / "b.tif", uint8_scene(SHAPE, 41)), write_raster(d / "a.tif", uint8_scene(SHAPE, 42)))


def test_fp16_on_the_cpu_is_one_line_and_leaves_nothing(pair, small_checkpoint, tmp_path, capsys):
    out = tmp_path / "o.gpkg"
    code = main(["caption", *pair, "-o", str(out), "--model", str(small_checkpoint), "--tile-size", "64",
                 "--device", "cpu", "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "fp16 runs only on a GPU" in err[0], err
    assert not os.listdir(tmp_path)


def test_an_unknown_precision_is_refused_by_the_parser(pair, tmp_path, capsys):
    code = main(["caption", *pair, "-o", str(tmp_path / "o.gpkg"), "--precision", "fp64"])
    assert code == 2 and "--precision: must be one of fp32, bf16, fp16, got 'fp64'" in capsys.readouterr().err


def test_a_partial_file_of_another_precision_is_not_resumed(pair, captioner, tmp_path):
    out = tmp_path / "o.gpkg"
    run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=64), Reporter(),
                captioner=captioner)
    stored = read_metadata(out)
    assert stored["run_fingerprint"]["precision"] == "fp32" and stored["params"]["precision"] == "fp32"
    os.replace(out, str(out) + ".partial")
    with pytest.raises(BadInput, match="differs in: precision"):
        run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=64, precision="bf16",
                                  resume=True), Reporter(), captioner=captioner)


def test_a_partial_file_from_before_the_option_resumes_as_fp32(pair, captioner, tmp_path):
    out = tmp_path / "o.gpkg"
    run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=64), Reporter(),
                captioner=captioner)
    part = str(out) + ".partial"
    os.replace(out, part)
    fingerprint = dict(read_metadata(part)["run_fingerprint"])
    del fingerprint["precision"]
    LayerWriter(part, None, []).set_metadata({"run_fingerprint": fingerprint})
    summary = run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=64, resume=True),
                          Reporter(), captioner=captioner)
    assert summary.resumed_tiles == 2 and summary.features == 2


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 instructions")
def test_bf16_runs_on_a_cpu_with_bf16_instructions(pair, small_checkpoint, tmp_path, capsys):
    out = tmp_path / "o.gpkg"
    code = main(["caption", *pair, "-o", str(out), "--model", str(small_checkpoint), "--tile-size", "64",
                 "--device", "cpu", "--precision", "bf16", "--progress", "json"])
    assert code == 0, capsys.readouterr().err
    meta = read_metadata(out)
    assert meta["params"]["precision"] == "bf16"
    assert read_info(out)["features"] == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["event"] == "done"
