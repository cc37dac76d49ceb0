"""The RSICRC change-captioning network (torch only). See docs/interfaces.md."""
from .captioner import Captioner, PairResult, load_model
from .errors import ModelLoadError
from .loading import DEFAULT_SOURCE

__all__ = ["Captioner", "PairResult", "load_model", "ModelLoadError", "DEFAULT_SOURCE"]
