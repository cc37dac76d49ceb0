"""Weights files whose every byte was already checked, remembered by their file stamp.

The two checks of a load that read all of a weights file (its sha256, and that every tensor is
finite) take about a second for the released 1.4 GB, and every worker start, the map tool's
first click and every Ray actor load the same file again. A file whose device, inode, size,
mtime and ctime (which no user can set) are those recorded after a load that passed both checks
is that file: its sha256 is taken from the record and neither check is repeated.

The record is JSON in the user cache folder, the newest MAX_ENTRIES files; one that cannot be
read or written is no record (the checks then run). Standard library only.
"""
import json
import os

from . import bounded_json
from .user_cache import user_cache_dir

MAX_ENTRIES = 64
RECORD_NAME = "checked-weights.json"
MAX_RECORD_BYTES = 1 << 20


def stamp(path):
    """What identifies the file's current content, as a JSON key; OSError when it is gone."""
    st = os.stat(path)
    return json.dumps([os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])


def _record_path():
    return user_cache_dir() / RECORD_NAME


def _read_record():
    try:
        record = bounded_json.load_file(_record_path(), MAX_RECORD_BYTES)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def known_sha256(file_stamp):
    """The sha256 recorded for a file with this stamp, or None."""
    sha = _read_record().get(file_stamp)
    return sha if isinstance(sha, str) and len(sha) == 64 else None


def remember(file_stamp, sha256):
    """Record that the file with this stamp passed the checks (quietly nothing when it cannot)."""
    record = _read_record()
    record.pop(file_stamp, None)
    record[file_stamp] = sha256  # last in the dict = newest
    kept = dict(list(record.items())[-MAX_ENTRIES:])
    path = _record_path()
    part = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(json.dumps(kept), encoding="utf-8")
        os.replace(part, path)
    except OSError:
        try:
            part.unlink()
        except OSError:
            pass
