"""One loaded small model shared by the pipeline tests; raster helpers in pipeline_test_rasters."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def captioner(small_checkpoint):
    from rsicrc.model import load_model

    return load_model(str(small_checkpoint), device="cpu")
