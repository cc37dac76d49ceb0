"""The parity cases as pytest parameters: the released-size one marked slow (a 1.4 GB checkpoint
to generate)."""
import pytest

from parity_recipe import CASE_NAMES

PARITY_CASES = [pytest.param(n, marks=pytest.mark.slow) if n == "rn50-full" else n for n in CASE_NAMES]
