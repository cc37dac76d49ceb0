"""Asking another Python one question: start it once, wait with a timeout, read its JSON answer.

Whether a Python can be the base of the environment (base_python.py), whether the environment
imports rsicrc (environment.py) and which device the worker would use (device_check.py) are each
such a question; this is the one code that asks it, with the environment every child gets.
Standard library only: the headless set-up runs it without QGIS.
"""
import json
import os
import signal
import subprocess
from dataclasses import dataclass

# How long a child asked to stop (SIGTERM: it ends like Ctrl-C) has before it is killed.
TERMINATE_GRACE_S = 10


def child_env(extra=None):
    """Environment for a child Python: the QGIS process's, minus what would hijack another Python."""
    env = dict(os.environ)
    # QGIS (notably on Windows and macOS) points PYTHONHOME/PYTHONPATH at its bundled Python;
    # a venv interpreter started with those fails before running a single line.
    env.pop("PYTHONHOME", None)
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    if extra:
        env.update(extra)
    return env


@dataclass
class ChildAnswer:
    answer: object  # the last JSON object on its stdout that the question accepts, or None
    returncode: int = None
    stdout: str = ""
    stderr: str = ""
    problem: str = None  # why it gave no output at all: "did not answer within 30 s", "cannot be started (...)"

    def tail(self, lines=1):
        """The last `lines` lines it printed (stderr first), on one line."""
        return " ".join((self.stderr or self.stdout).strip().splitlines()[-lines:])


def ask_child(cmd, timeout, accept=lambda value: isinstance(value, dict)):
    """Run `cmd` (no stdin, no console window on Windows) and read its answer."""
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace",
                              env=child_env(), timeout=timeout, stdin=subprocess.DEVNULL, creationflags=flags)
    except subprocess.TimeoutExpired:
        return ChildAnswer(None, problem=f"did not answer within {timeout} s")
    except OSError as exc:
        return ChildAnswer(None, problem=f"cannot be started ({exc.strerror or exc})")
    return ChildAnswer(_last_json(proc.stdout, accept), proc.returncode, proc.stdout, proc.stderr)


def _last_json(stdout, accept):
    for line in reversed(stdout.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if accept(value):
            return value
    return None


def stop_process(proc, grace=TERMINATE_GRACE_S):
    """SIGTERM the child's whole process group, then SIGKILL what is left after `grace` s."""
    if proc.poll() is not None:
        return
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()
    except ProcessLookupError:
        proc.wait()
