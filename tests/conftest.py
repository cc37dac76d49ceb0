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
def small_checkpoint(checkpoint_factory):
    """The rn50-small parity checkpoint: full RN50 backbone, d_model 64, a 48-word vocabulary."""
    return checkpoint_factory("rn50-small")
