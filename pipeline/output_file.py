"""Where a run writes: one check for every output (the layer and OUT.partial, the heat map, the
evaluation files), one writer per output, the final move.

Nothing here deletes or replaces a file that rsicrc did not write: OUT is replaced only when it is
one rsicrc writes there (an rsicrc layer, an rsicrc heat map) or with --overwrite, OUT.partial is
discarded only when it is an rsicrc partial layer, no output may be a file the run reads, and
special files (devices, FIFOs) are never written to.

One writer per output: a run holds OUT + ".lock" (a marker file naming its process) from its
checks to its final move. A second run to the same output stops at once with exit code 2 and
names the running process; the marker of a process that died (a kill, a crash) is taken over.
"""
import os
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import BadInput, PipelineFailure, one_line
from .layer.gpkg import LayerError, read_metadata

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


@dataclass(frozen=True)
class OutputKind:
    """One kind of file a run writes: how messages speak of it, and which existing file is one that
    rsicrc wrote there (and so may be replaced without --overwrite)."""

    name: str  # what to give instead of a folder: ".gpkg file name"
    option: str  # how the user names it: "output", "--heatmap"
    folder: str  # how messages name its folder: "output folder"
    ours: str  # what a file rsicrc wrote there is: "a layer written by rsicrc"
    is_ours: Callable[[str], bool]
    # The longest name rsicrc makes beside it, its name + this (OUT.partial-journal): the file
    # system's name limit must leave room for it.
    longest_suffix: str = ""


def is_rsicrc_layer(path):
    """Whether `path` is a GeoPackage that `rsicrc caption` wrote (finished or partial)."""
    try:
        return "run_fingerprint" in read_metadata(path)
    except LayerError:
        return False


LAYER_OUTPUT = OutputKind(".gpkg file name", "output", "output folder", "a layer written by rsicrc", is_rsicrc_layer,
                          ".partial-journal")


def check_output(output, kind, inputs=(), overwrite=False, partial=None):
    """Refuse, before any work, an output that cannot be written or would destroy something; the
    output's identity() now, which the final move checks.

    inputs: [(path, what it is)] of the files the run reads or writes elsewhere ("an input
    raster", "the output layer"), none of which the output may be; partial: the output's
    unfinished file (OUT.partial), checked beside it.
    """
    out = Path(output)
    if out.name == "" or str(output).endswith(("/", os.sep)) or out.is_dir():
        raise BadInput(f"is a folder; give a {kind.name}", output)
    if one_line(out.name) != out.name:
        raise BadInput(f"has a control character in its name; give a {kind.name} without one", output)
    _check_name_length(out, kind)
    if not out.parent.is_dir():
        raise BadInput(f"{kind.folder} does not exist", out.parent)
    own = [out] + ([Path(partial)] if partial else [])
    for path in own:
        if (path.exists() or path.is_symlink()) and not (path.exists() and stat.S_ISREG(os.stat(path).st_mode)):
            raise BadInput(f"exists and is not a regular file (a device, FIFO or broken link); choose another "
                           f"{kind.option}", path)
    for other, what in inputs:
        for path in own:
            if _same_file(other, path):
                raise BadInput(f"is {what} ({other}); choose another {kind.option}", path)
    problem = folder_write_problem(out.parent)
    if problem:
        raise BadInput(f"{kind.folder} is not writable ({problem})", out.parent)
    if out.exists() and not overwrite and not kind.is_ours(str(out)):
        raise BadInput(f"exists and is not {kind.ours}; pass --overwrite to replace it or choose another "
                       f"{kind.option}", out)
    if partial and os.path.exists(partial) and not kind.is_ours(str(partial)):
        raise BadInput(f"exists and was not written by rsicrc (it would be the unfinished file of {out.name}); "
                       f"move it away or choose another {kind.option}", partial)
    return identity(out)


def _check_name_length(out, kind):
    """BadInput when the file system cannot hold the output's name (ENAMETOOLONG), or the longest
    name the run makes beside it."""
    try:
        limit = os.pathconf(out.parent if out.parent.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # Windows has no pathconf: NTFS takes 255 characters
        limit = 255
    longest = len(os.fsencode(out.name + kind.longest_suffix))
    if longest > limit:
        raise BadInput(f"its name is {len(os.fsencode(out.name)):,} bytes; the file system allows {limit} and rsicrc "
                       f"adds up to {len(kind.longest_suffix)} ({out.name[:12]}...{kind.longest_suffix}): choose a "
                       f"shorter name", str(out.parent / (out.name[:40] + "...")))


def _same_file(a, b):
    """Whether two paths name one file: the same real path, or one file under two names."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


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


def identity(path):
    """What tells that `path` is still the same file: (device, inode), None when absent. Its content
    may change meanwhile (QGIS showing the previous result, a search writing scores into it): the
    run was asked to replace that file, not another one put in its place."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class ChangedMeanwhile(FileExistsError):
    """The destination is no longer the file the run checked: another program made or changed it."""


def replace_checked(src, dst, found):
    """Rename `src` to `dst`, which must still be `found` (identity() at the run's checks): when it
    was absent, a no-clobber rename, so a file that appears meanwhile is never replaced."""
    now = identity(dst)
    if now != found:
        raise ChangedMeanwhile(f"{dst} {'appeared' if found is None else 'was changed'} while the run was going")
    if found is not None:
        os.replace(src, dst)
        return
    try:
        os.link(src, dst)  # atomic, and fails when dst exists
    except FileExistsError:
        raise ChangedMeanwhile(f"{dst} appeared while the run was going") from None
    except OSError:  # FAT, some network shares: no hard links; a check, then the rename
        if os.path.lexists(dst):
            raise ChangedMeanwhile(f"{dst} appeared while the run was going") from None
        os.replace(src, dst)
        return
    os.unlink(src)


def move_into_place(part, output, found):
    """The finished partial file becomes OUT (see replace_checked); when it cannot, nothing is lost:
    `part` stays, finished, for --resume."""
    try:
        replace_checked(part, output, found)
    except ChangedMeanwhile as exc:
        raise PipelineFailure(f"every tile is written, but {exc} (another program?) and is left as it is. The "
                              f"result is kept in {part}: move {output} away and run the same command with --resume "
                              f"to finish at once") from None
    except OSError as exc:
        raise PipelineFailure(
            f"every tile is written, but {output} could not be replaced ({exc.strerror or exc}; is it open "
            f"in QGIS?). The result is kept in {part}: close {output} and run the same command with "
            f"--resume to finish at once, or rename the file yourself") from None
