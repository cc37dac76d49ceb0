"""The RSICRC change-captioning network (torch only). See docs/interfaces.md.

The names are imported on first use (PEP 562), so that a torch-free module of this package
(bounded_json, errors, config) imports without loading torch.
"""
import importlib

_HOMES = {"Captioner": ".captioner", "PairResult": ".captioner", "load_model": ".captioner",
          "ModelLoadError": ".errors", "DEFAULT_SOURCE": ".loading"}
__all__ = list(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
