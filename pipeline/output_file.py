"""Where a caption run writes: checks on OUT and OUT.partial, one writer per output, the final move.

Nothing here deletes or replaces a file that rsicrc did not write: OUT is replaced only when it is
an rsicrc layer (or with --overwrite), OUT.partial is discarded only when it is an rsicrc partial
layer, and special files (devices, FIFOs) are never written to.

One writer per output: a run holds OUT + ".lock" (a marker file naming its process) from its
checks to its final move. A second run to the same output stops at once with exit code 2 and
names the running process; the marker of a process that died (a kill, a crash) is taken over.
"""
import os
import stat
import tempfile
import threading
from pathlib import Path

from .errors import BadInput, PipelineFailure
from .layer import gpkg as gl

LOCK_SUFFIX = ".lock"
_held = set()  # outputs locked by this process: the marker cannot tell two runs of one process apart
_held_guard = threading.Lock()


def lock_path(output):
    return str(output) + LOCK_SUFFIX


class OutputLock:
    """Context manager: the output's writer lock, or BadInput naming the process that holds it."""

    def __init__(self, output):
        from filelock import MarkerSoftFileLock

        self.output = str(output)
        self._key = os.path.realpath(self.output)
        self._lock = MarkerSoftFileLock(lock_path(self.output))

    def __enter__(self):
        from filelock import Timeout

        with _held_guard:
            if self._key in _held:
                raise BadInput("another run in this process is writing it", self.output)
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                owner = self._lock.owner
                who = f"process {owner.pid} on {owner.hostname}" if owner else f"the owner of {self._lock.lock_file}"
                raise BadInput(f"another rsicrc run ({who}) is writing this output; wait for it to finish or "
                               f"stop it", self.output) from None
            except OSError as exc:
                raise BadInput(f"cannot create the lock file {lock_path(self.output)} ({exc.strerror or exc})",
                               self.output) from None
            _held.add(self._key)
        return self

    def __exit__(self, *exc):
        with _held_guard:
            _held.discard(self._key)
            self._lock.release()


def is_rsicrc_layer(path):
    """Whether `path` is a GeoPackage that `rsicrc caption` wrote (finished or partial)."""
    try:
        return "run_fingerprint" in gl.read_metadata(path)
    except gl.LayerError:
        return False


def check_output(output, inputs, overwrite=False):
    """Refuse, before any work, an output that cannot be written or would destroy something."""
    out = Path(output)
    part = Path(gl.partial_path(output))
    if out.name == "" or str(output).endswith(("/", os.sep)):
        raise BadInput("is a folder; give a .gpkg file name", output)
    if not out.parent.is_dir():
        raise BadInput("output folder does not exist", out.parent)
    if out.is_dir():
        raise BadInput("is a folder; give a .gpkg file name", out)
    for path in (out, part):
        if path.exists() or path.is_symlink():
            mode = os.stat(path).st_mode if path.exists() else 0
            if not stat.S_ISREG(mode):
                raise BadInput("exists and is not a regular file (a device, FIFO or broken link); "
                               "choose another output", path)
    for src in inputs:
        for path in (out, part):
            if os.path.exists(src) and path.exists() and os.path.samefile(src, path):
                raise BadInput(f"is an input raster ({src}); choose another output", path)
    problem = folder_write_problem(out.parent)
    if problem:
        raise BadInput(f"output folder is not writable ({problem})", out.parent)
    if out.exists() and not overwrite and not is_rsicrc_layer(out):
        raise BadInput("exists and is not a layer written by rsicrc; pass --overwrite to replace it or "
                       "choose another output", out)
    if part.exists() and not is_rsicrc_layer(part):
        raise BadInput(f"exists and was not written by rsicrc (it would be the unfinished file of {out.name}); "
                       f"move it away or choose another output", part)


def folder_write_problem(folder):
    """Why no file can be made in `folder` (None when one can). os.access says yes to root on a
    read-only mount; creating a file is the real test."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".rsicrc-write-test-"):
            pass
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def check_replaceable(output, windows=(os.name == "nt")):
    """On Windows, a file another program holds open (QGIS showing the last result) cannot be
    replaced; find that out before hours of work rather than at the final move."""
    if not windows or not os.path.exists(output):
        return
    probe = f"{output}.rsicrc-move-test"
    try:
        os.rename(output, probe)
    except OSError:
        raise BadInput("is open in another program (QGIS?), so it could not be replaced at the end; close "
                       "it there or choose another output", output) from None
    os.rename(probe, output)


def discard_partial(part):
    """Remove an earlier unfinished run's file (check_output made sure it is rsicrc's)."""
    for path in (part, part + "-journal", part + "-wal", part + "-shm"):
        if os.path.exists(path):
            os.remove(path)


def move_into_place(part, output):
    """The finished partial file becomes OUT; when OUT cannot be replaced, nothing is lost."""
    try:
        os.replace(part, output)
    except OSError as exc:
        raise PipelineFailure(
            f"every tile is written, but {output} could not be replaced ({exc.strerror or exc}; is it open "
            f"in QGIS?). The result is kept in {part}: close {output} and run the same command with "
            f"--resume to finish at once, or rename the file yourself") from None
