"""JSON that someone else wrote (a model's files, a layer's metadata, annotations, a request):
parsed with a bound on its size and on its depth.

Python's parser recurses once a nesting level, so a file of a million "[" ends in a RecursionError,
and a huge file (a sparse file of spaces is cheap to make) in a MemoryError. Here either is a
JsonLimit, a ValueError that says which, like any other malformed JSON; a file must be a regular
file (a FIFO would block the read for ever). Standard library only.
"""
import json
import os
import stat

MAX_DEPTH = 200  # far deeper than any file rsicrc reads; Python's own limit is near 1000


class JsonLimit(ValueError):
    """The JSON is beyond a bound (too deep, too big) or not in a regular file."""


def _depth(value, limit):
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return depth
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return 0


def loads(text, max_depth=MAX_DEPTH, **options):
    """json.loads with the depth bound (options: json.loads's)."""
    try:
        value = json.loads(text, **options)
    except RecursionError:
        raise JsonLimit(f"nests more than {max_depth} levels deep") from None
    if _depth(value, max_depth):
        raise JsonLimit(f"nests more than {max_depth} levels deep")
    return value


def load_file(path, max_bytes, max_depth=MAX_DEPTH, **options):
    """The JSON of the regular file `path` of at most `max_bytes` bytes (UTF-8, a BOM allowed)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise JsonLimit("is not a regular file (a FIFO, device or folder)")
    if st.st_size > max_bytes:
        raise JsonLimit(f"is {st.st_size:,} bytes, more than the {max_bytes:,} a JSON file here may have")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while it was read
        raise JsonLimit(f"is more than the {max_bytes:,} bytes a JSON file here may have")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return loads(text, max_depth, **options)
