"""Running `python -m rsicrc <command> ... --progress json` as a child process.

The caller's thread (a QgsTask's run(), or Processing's) owns the loop: it receives events as
they arrive and is asked between lines whether the user cancelled, so a cancel is noticed
within a fraction of a second even while the child is silent (loading a model).
"""
import collections
import os
import queue
import subprocess
import threading
from dataclasses import dataclass, field

from . import protocol
from ...pipeline.environment.child_json import child_env, stop_process
from .environment import EnvironmentProblem, child_command, explain_failure, resolve_python

POLL_S = 0.1


class CliFailure(Exception):
    """The child reported an error or exited non-zero; the message is the child's own."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


class Canceled(Exception):
    """The user cancelled; the child was stopped (a caption output stays resumable)."""


@dataclass
class RunResult:
    returncode: int
    done: dict = None
    warnings: list = field(default_factory=list)
    log: list = field(default_factory=list)


def _pump(stream, sink):
    for line in iter(stream.readline, ""):
        sink(line)
    stream.close()


def start(args, python=None, env=None):
    python = resolve_python(python)
    cmd = child_command(python, args)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                errors="replace", env={**child_env(), **(env or {})},
                                start_new_session=(os.name == "posix"))
    except OSError as exc:
        raise EnvironmentProblem(f"{python} cannot be started: {exc}") from exc
    return python, proc


def run_cli(args, on_event=None, is_canceled=None, on_log=None, python=None, on_started=None, env=None):
    """Run one CLI command to the end; return RunResult or raise CliFailure/Canceled/EnvironmentProblem.

    on_event(event_dict) gets every protocol event, on_log(text) every other line (stdout
    noise and stderr); is_canceled() is polled while waiting.
    """
    python, proc = start(args, python, env)
    if on_started is not None:
        on_started(proc)
    lines = queue.Queue()
    stderr_tail = collections.deque(maxlen=40)
    result = RunResult(returncode=-1)

    def keep_err(line):
        stderr_tail.append(line.rstrip("\n"))
        lines.put(("log", line))

    readers = [threading.Thread(target=_pump, args=(proc.stdout, lambda l: lines.put(("out", l))),
                                daemon=True),
               threading.Thread(target=_pump, args=(proc.stderr, keep_err), daemon=True)]
    for reader in readers:
        reader.start()
    error_event = None
    try:
        while True:
            if is_canceled is not None and is_canceled():
                stop_process(proc)
                raise Canceled("Cancelled; the child process was stopped.")
            try:
                kind, line = lines.get(timeout=POLL_S)
            except queue.Empty:
                if proc.poll() is not None and not any(r.is_alive() for r in readers):
                    if lines.empty():
                        break
                continue
            event = protocol.parse_line(line) if kind == "out" else None
            if event is None:
                text = line.rstrip("\n")
                if text:
                    result.log.append(text)
                    if on_log is not None:
                        on_log(text)
                continue
            if event["event"] == "warning":
                result.warnings.append(event.get("message", ""))
            elif event["event"] == "error":
                error_event = event
            elif event["event"] == "done":
                result.done = event
            if on_event is not None:
                on_event(event)
    finally:
        if proc.poll() is None:
            stop_process(proc)
    result.returncode = proc.wait()
    if result.returncode != 0 or error_event is not None:
        if error_event is not None:
            raise CliFailure(error_event.get("message", "rsicrc failed"),
                             error_event.get("code", result.returncode or 1))
        problem = explain_failure(list(stderr_tail), python)
        if problem is not None:
            raise problem
        tail = " | ".join(list(stderr_tail)[-4:]) or "no output"
        raise CliFailure(f"rsicrc exited with code {result.returncode}: {tail}",
                         result.returncode)
    return result
