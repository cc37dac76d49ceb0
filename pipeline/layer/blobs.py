"""The one BLOB encoding of the layer's vectors (embeddings, attention maps): float32 little-endian.

numpy only, so that the QGIS side decodes the stored embeddings with this very code.
"""
import numpy as np


class BlobLengthError(ValueError):
    """An embedding BLOB that does not hold `dim` float32 values: `row` is its index among the BLOBs
    given, `detail` what is wrong with it ("has 3 bytes, expected 256 ...")."""

    def __init__(self, row, detail):
        self.row, self.detail = row, detail
        super().__init__(f"embedding of row {row} {detail}")


def embedding_blob(vector):
    return np.asarray(vector, dtype="<f4").tobytes()


def blobs_to_matrix(blobs, dim):
    """BLOBs (float32 LE) -> (N, dim) float32; a missing BLOB (None/empty) becomes a row of NaN.

    A BLOB of another length raises ValueError naming its row: the layer was tampered with or made
    by another model.
    """
    out = np.full((len(blobs), int(dim)), np.nan, dtype=np.float32)
    for i, blob in enumerate(blobs):
        if blob is None or (isinstance(blob, (bytes, bytearray, memoryview, str)) and len(blob) == 0):
            continue
        if not isinstance(blob, (bytes, bytearray, memoryview)):  # bytes(42) would be 42 zero bytes
            raise BlobLengthError(i, f"is a {type(blob).__name__}, not a BLOB")
        data = bytes(blob)
        if len(data) != 4 * int(dim):
            raise BlobLengthError(i, f"has {len(data)} bytes, expected {4 * int(dim)} ({dim} float32 values)")
        out[i] = np.frombuffer(data, dtype="<f4")
    return out
