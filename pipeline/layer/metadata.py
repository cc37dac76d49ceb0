"""The run metadata's encoding: one GDAL layer metadata item per key, each value JSON.

Standard library only: the QGIS side decodes a result layer's metadata with this very code.
"""
import json


def encode_metadata(values):
    """Run metadata as GDAL layer metadata items: every value JSON-encoded into a string."""
    return {str(k): json.dumps(v, allow_nan=False) for k, v in values.items()}


def decode_metadata(items):
    """GDAL layer metadata items -> values; an item that is not JSON stays the raw string."""
    out = {}
    for key, text in (items or {}).items():
        try:
            out[key] = json.loads(text)
        except (TypeError, ValueError):
            out[key] = text
    return out
