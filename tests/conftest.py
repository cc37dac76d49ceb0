import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # parity_recipe and other test helpers
import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests never reach the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory):
    """checkpoint_factory(case_name) -> folder with a generated checkpoint of that parity case."""
    from parity_recipe import load_case, write_checkpoint

    made = {}

    def make(name="rn50-small"):
        if name not in made:
            made[name] = write_checkpoint(load_case(name), tmp_path_factory.mktemp(f"ckpt-{name}"))
        return made[name]

    return make


@pytest.fixture(scope="session")
def load_parity_case(checkpoint_factory):
    """load_parity_case(name, device) -> (case, model, before, after): a parity case's generated
    checkpoint loaded on `device`, and its input pairs."""
    import torch

    from parity_recipe import load_case, pair_inputs
    from rsicrc.model import load_model

    def load(name, device="cpu"):
        case = load_case(name)
        model = load_model(str(checkpoint_factory(name)), device=device)
        before, after = (torch.from_numpy(x) for x in pair_inputs(case))
        return case, model, before, after

    return load


@pytest.fixture(scope="session")
def small_checkpoint(checkpoint_factory):
    """The rn50-small parity checkpoint: full RN50 backbone, d_model 64, a 48-word vocabulary."""
    return checkpoint_factory("rn50-small")


@pytest.fixture(scope="session")
def tiny_clip_folder(tmp_path_factory):
    """A folder laid out like the hub repo: 2-layer ViT, 2-layer XLM-RoBERTa-type text tower."""
    from clip_generate import write_generated_clip

    return write_generated_clip(tmp_path_factory.mktemp("tiny-rs-m-clip"))


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_folder):
    from rsicrc.model.clip import load_clip

    return load_clip(str(tiny_clip_folder), device="cpu")
