import pytest
import torch

from parity_recipe import CASE_NAMES, load_case, pair_inputs
from rsicrc.model import load_model

PARITY_CASES = [pytest.param(n, marks=pytest.mark.slow) if n == "rn50-full" else n for n in CASE_NAMES]


@pytest.fixture(scope="module", params=PARITY_CASES)
def loaded(request, checkpoint_factory):
    """(case, model, before, after) for each parity case: its generated checkpoint loaded on the CPU."""
    case = load_case(request.param)
    model = load_model(str(checkpoint_factory(request.param)), device="cpu")
    before, after = (torch.from_numpy(x) for x in pair_inputs(case))
    yield case, model, before, after
    del model
