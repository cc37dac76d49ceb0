"""The persistent search worker: one `python -m rsicrc serve` process, model loaded once.

Requests and answers are JSON lines (docs/interfaces.md). One request is in flight at a time
(a lock), so answers pair with requests by id without a dispatcher thread.
"""
import collections
import itertools
import json
import os
import queue
import subprocess
import threading

from ...pipeline.environment.child_json import child_env, stop_process
from .environment import EnvironmentProblem, child_command, explain_failure, resolve_python
from .process import POLL_S, Canceled

REQUEST_TIMEOUT_S = 900  # the first request may download and load a model


class WorkerError(Exception):
    """The worker answered ok=false, or died; the message says why."""


class ServeClient:
    def __init__(self, python=None, model=None, device=None):
        self.python = resolve_python(python)
        self.model = model or None
        self.device = device or None
        self._proc = None
        self._answers = queue.Queue()
        self._stderr = collections.deque(maxlen=40)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def _start(self):
        args = ["serve"]
        if self.model:
            args += ["--model", self.model]
        if self.device:
            args += ["--device", self.device]
        cmd = child_command(self.python, args)
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                          errors="replace", env=child_env(), bufsize=1,
                                          start_new_session=(os.name == "posix"))
        except OSError as exc:
            raise EnvironmentProblem(f"{self.python} cannot be started: {exc}") from exc
        answers, stderr = self._answers, self._stderr

        def read_out(stream):
            for line in iter(stream.readline, ""):
                text = line.strip()
                if text.startswith("{"):
                    try:
                        answers.put(json.loads(text))
                    except ValueError:
                        pass
            answers.put(None)  # end of stream: the worker is gone

        def read_err(stream):
            for line in iter(stream.readline, ""):
                stderr.append(line.rstrip("\n"))

        threading.Thread(target=read_out, args=(self._proc.stdout,), daemon=True).start()
        threading.Thread(target=read_err, args=(self._proc.stderr,), daemon=True).start()

    def request(self, payload, timeout=REQUEST_TIMEOUT_S, is_canceled=None):
        """Send one request (without id) and return the worker's answer dict (ok=true)."""
        with self._lock:
            if not self.running:
                self._answers = queue.Queue()
                self._start()
            rid = next(self._ids)
            message = dict(payload, id=rid)
            try:
                self._proc.stdin.write(json.dumps(message) + "\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._died()
            waited = 0.0
            while True:
                if is_canceled is not None and is_canceled():
                    # The request cannot be withdrawn; a fresh worker is cheaper than a
                    # stale answer arriving for the next query.
                    self.close()
                    raise Canceled("Search cancelled.")
                try:
                    answer = self._answers.get(timeout=POLL_S)
                except queue.Empty:
                    waited += POLL_S
                    if waited > timeout:
                        self.close()
                        raise WorkerError(f"The search worker did not answer within {timeout} s.")
                    continue
                if answer is None:
                    self._died()
                if answer.get("id") != rid:
                    continue
                if not answer.get("ok"):
                    raise WorkerError(answer.get("error") or "the search worker failed")
                return answer

    def _died(self):
        code = self._proc.wait() if self._proc is not None else None
        tail = list(self._stderr)
        self._proc = None
        problem = explain_failure(tail, self.python)
        if problem is not None:
            raise problem
        raise WorkerError(f"The search worker exited (code {code}): "
                          + (" | ".join(tail[-4:]) or "no output"))

    def embed_text(self, texts, model=None, clip=False, is_canceled=None):
        return self.request({"op": "embed_text", "texts": list(texts), "model": model or None,
                             "clip": bool(clip)}, is_canceled=is_canceled)

    def caption_at(self, before, after, x, y, crs=None, tile_size=256, bands=None, reproject=False, clip=False,
                   model=None, clip_model=None, classes=None, is_canceled=None):
        """The caption of the tile-sized window centred on (x, y) (in `crs`, WKT or "EPSG:n"; None:
        the rasters' own) for the map tool; WorkerError with the worker's message otherwise."""
        payload = {"op": "caption_at", "before": str(before), "after": str(after), "x": float(x),
                   "y": float(y), "crs": crs or None, "tile_size": int(tile_size), "bands": bands or None,
                   "reproject": bool(reproject), "clip": bool(clip), "model": model or None,
                   "clip_model": clip_model or None, "classes": classes or None}
        return self.request(payload, is_canceled=is_canceled)

    def ping(self, timeout=60):
        return self.request({"op": "ping"}, timeout=timeout)

    def close(self):
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()  # EOF: the worker's documented way out
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            stop_process(proc, grace=2)


_shared = {}
_shared_lock = threading.Lock()


def shared_worker(python=None, model=None, device=None):
    """One worker per (interpreter, model, device) for the whole QGIS session."""
    python = resolve_python(python)
    key = (python, model or None, device or None)
    with _shared_lock:
        worker = _shared.get(key)
        if worker is None:
            worker = _shared[key] = ServeClient(python, model, device)
        return worker


def close_all():
    with _shared_lock:
        workers = list(_shared.values())
        _shared.clear()
    for worker in workers:
        worker.close()
