"""The run metadata's encoding: one GDAL layer metadata item per key, each value JSON.

Standard library only (model.bounded_json too): the QGIS side decodes a result layer's metadata with this very code.
"""
import json

from ...model import bounded_json


def encode_metadata(values):
    """Run metadata as GDAL layer metadata items: every value JSON-encoded into a string."""
    return {str(k): json.dumps(v, allow_nan=False) for k, v in values.items()}


def decode_metadata(items):
    """GDAL layer metadata items -> values; an item that is not JSON stays the raw string."""
    out = {}
    for key, text in (items or {}).items():
        try:
            out[key] = bounded_json.loads(text)
        except (TypeError, ValueError):  # bounded_json.JsonLimit too: too deep
            out[key] = text
    return out
