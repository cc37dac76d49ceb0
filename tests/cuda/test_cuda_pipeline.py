"""`rsicrc caption` and `rsicrc train` on a CUDA GPU: the layer written on the GPU is the CPU's
layer (fp32), and training runs under bf16 autocast to a folder every command loads."""
import json

import numpy as np
import pytest
import torch

pyogrio = pytest.importorskip("pyogrio")
pytest.importorskip("pyogrio.raw")
pytest.importorskip("rasterio")

from levir_cc_dataset import write_training_set  # noqa: E402
from pipeline_test_rasters import uint8_scene, write_raster  # noqa: E402
from rsicrc.model import load_model  # noqa: E402
from rsicrc.pipeline.caption.run import CaptionParams, run_caption  # noqa: E402
from rsicrc.pipeline.progress import Reporter  # noqa: E402
from rsicrc.pipeline.train.params import TrainParams  # noqa: E402
from rsicrc.pipeline.train.run import run_train  # noqa: E402


def layer(path):
    meta, _, _, fields = pyogrio.raw.read(str(path), layer="changes", read_geometry=False)
    table = dict(zip(meta["fields"], fields))
    order = np.argsort(table["tile_id"])
    return {k: v[order] for k, v in table.items()}


def test_the_layer_written_on_the_gpu_is_the_cpu_layer(tmp_path, small_checkpoint):
    before = write_raster(tmp_path / "before.tif", uint8_scene((384, 512), 1))
    after = write_raster(tmp_path / "after.tif", uint8_scene((384, 512), 2))
    out = {}
    for device in ("cpu", "cuda"):
        cap = load_model(str(small_checkpoint), device=device)
        out[device] = tmp_path / f"{device}.gpkg"
        run_caption(CaptionParams(before, after, str(out[device]), model=cap.source, tile_size=128, batch_size=8,
                                  queries=["many buildings have been built"]), Reporter(), captioner=cap)
    cpu, gpu = layer(out["cpu"]), layer(out["cuda"])
    assert len(cpu["tile_id"]) == len(gpu["tile_id"]) == 12
    assert list(gpu["caption"]) == list(cpu["caption"])
    for name in ("change_score",):
        assert np.abs(gpu[name].astype(float) - cpu[name].astype(float)).max() < 1e-4


def test_training_on_the_gpu_writes_a_model_every_command_loads(tmp_path, small_checkpoint):
    annotations, images = write_training_set(str(tmp_path / "set"))
    output = tmp_path / "trained"
    params = TrainParams(annotations, images, str(output), model=str(small_checkpoint), device="cuda",
                         epochs=2, batch_size=4, checkpoint_every=2).check()
    run_train(params, Reporter())
    record = json.loads((output / "training.json").read_text())
    losses = [e["val_loss"] for e in record["epochs"]]
    assert len(losses) == 2 and all(np.isfinite(losses))
    trained = load_model(str(output), device="cuda")
    start = load_model(str(small_checkpoint), device="cuda")
    changed = [n for n, p in trained.net.state_dict().items()
               if p.is_floating_point() and not torch.equal(p, start.net.state_dict()[n])]
    assert changed and not any(n.startswith("encoder.encoder.net.") for n in changed)
