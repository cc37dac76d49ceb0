import pytest

from parity_params import PARITY_CASES


@pytest.fixture(scope="module", params=PARITY_CASES)
def loaded(request, load_parity_case):
    """(case, model, before, after) for each parity case: its generated checkpoint loaded on the CPU."""
    case, model, before, after = load_parity_case(request.param)
    yield case, model, before, after
    del model
