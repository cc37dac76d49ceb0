"""`rsicrc serve`: the search worker behind the QGIS dock (JSON lines over stdin/stdout).

One request a line, one answer a line, in order; each model is loaded once, on first use, and
kept. Nothing but answers may reach stdout, so anything a library prints while serving is sent
to stderr. The worker never dies on a bad request: it answers {"ok": false, "error": ...}.

Every request is bounded before any work: a line is read MAX_LINE_BYTES at most at a time (a
longer one is skipped to its end unread, not buffered), a request embeds at most MAX_TEXTS texts
of at most MAX_TEXT_CHARS characters, and a caption_at request (the map tool's click,
pipeline/caption/point.py) describes one window of at most the largest tile size. Answers are
strict JSON: never NaN or Infinity.
"""
import contextlib
import json
import math
import os
import queue
import sys
import threading
import time

from rsicrc import __version__

from ..model import bounded_json
from .caption.point import PointCaptioner
from .caption_params import MAX_TEXT_CHARS  # the bound of every query text

MAX_LINE_BYTES = 1 << 20  # 1 MiB a request line
MAX_TEXTS = 256  # texts a request; the dock sends one
MAX_ID_CHARS = 256
# A request still unanswered after this long is abandoned (the first may download and load a model).
SERVE_LIMIT_S = 900
LANE_POLL_S = 0.05
# A ping behind a request that has run this long is answered out of turn.
PING_PATIENCE_S = 10
_END = object()


class RequestError(ValueError):
    """The request is malformed or over a limit; the message says which (sent as the error)."""


def _no_constant(name):
    raise RequestError(f"the request is not valid JSON ({name} is not a JSON value)")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to Infinity, which no answer may echo
        raise RequestError(f"the request holds the number {text[:40]}, too large for a float")
    return value


def _check_texts(texts):
    if not isinstance(texts, list) or not texts:
        raise RequestError("'texts' must be a non-empty list of strings")
    if len(texts) > MAX_TEXTS:
        raise RequestError(f"'texts' holds {len(texts):,} texts; at most {MAX_TEXTS} a request")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise RequestError(f"'texts' must be a non-empty list of strings (text {i} is a {type(t).__name__})")
        if len(t) > MAX_TEXT_CHARS:
            raise RequestError(f"text {i} has {len(t):,} characters; at most {MAX_TEXT_CHARS:,} a text")


class ServeHandler:
    def __init__(self, model, clip_model, device="auto"):
        self.default_model = model
        self.default_clip = clip_model
        self.device = device
        self._models = {}
        self._points = PointCaptioner(self._model, model, clip_model)

    def _model(self, source, clip):
        key = ("clip" if clip else "rsicrc", source)
        if key not in self._models:
            if clip:
                from rsicrc.model.clip import load_clip

                self._models[key] = load_clip(source=source, device=self.device)
            else:
                from rsicrc.model import load_model

                self._models[key] = load_model(source=source, device=self.device)
        return self._models[key]

    def handle(self, request):
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "version": __version__}
        if op == "caption_at":
            return self._points.caption_at(request)
        if op == "embed_text":
            texts = request.get("texts")
            _check_texts(texts)  # before any model is loaded or any text embedded
            clip = request.get("clip", False)
            if clip is None:
                clip = False
            if not isinstance(clip, bool):
                raise RequestError("'clip' must be true or false")
            source = request.get("model")
            if source is not None and not isinstance(source, str):
                raise RequestError("'model' must be a string or null")
            source = source or (self.default_clip if clip else self.default_model)
            model = self._model(source, clip)
            if clip:
                embeddings = model.encode_text(texts)
                unknown = [[] for _ in texts]
            else:
                embeddings = model.embed_text(texts)
                unknown = [list(model.unknown_words(t)) for t in texts]
            rows = embeddings.numpy().astype(float).tolist()
            for i, row in enumerate(rows):
                if not all(math.isfinite(v) for v in row):
                    raise ValueError(f"the embedding of text {i} is not finite (NaN or infinite values): "
                                     f"the model {model.source} is broken")
            return {"ok": True, "embeddings": rows, "unknown_words": unknown, "model_source": model.source,
                    "model_sha256": model.sha256}
        if not isinstance(op, str):
            raise RequestError("a request needs an 'op' string (embed_text, caption_at or ping)")
        raise RequestError(f"unknown op {op[:100]!r} (known: embed_text, caption_at, ping)")


def _lines(stream, limit):
    """Each line of `stream` (str or bytes), or None for one longer than `limit`; at most limit + 1
    characters (bytes) of a line are ever held, the rest of a long line is read in such pieces
    and dropped."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        newline = b"\n" if isinstance(line, bytes) else "\n"
        if len(line) > limit and not line.endswith(newline):
            while line and not line.endswith(newline):
                line = stream.readline(limit + 1)
            yield None
        else:
            yield line


def _request_id(request):
    if "id" not in request:
        raise RequestError("a request needs an 'id' (a number or a string), echoed in its answer")
    rid = request["id"]
    if rid is None or isinstance(rid, bool) or not isinstance(rid, (int, float, str)):
        raise RequestError("'id' must be a number or a string")
    if isinstance(rid, str) and len(rid) > MAX_ID_CHARS:
        raise RequestError(f"'id' has {len(rid):,} characters; at most {MAX_ID_CHARS}")
    return rid


def _parse(line):
    """(request id or None, request, None) for a request line, or (id, None, error answer)."""
    if line is None:
        return None, None, {"ok": False, "error": f"the request line is longer than {MAX_LINE_BYTES:,} bytes "
                                                   f"(1 MiB); it was skipped unread"}
    request_id = None
    try:
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError("the request is not UTF-8 text") from None
        try:
            request = bounded_json.loads(line, parse_constant=_no_constant, parse_float=_finite_float)
        except RequestError:
            raise
        except ValueError as e:  # bounded_json.JsonLimit too: nested too deep
            raise RequestError(f"the request is not valid JSON ({str(e).splitlines()[0][:200]})") from None
        if not isinstance(request, dict):
            raise RequestError("a request must be a JSON object")
        request_id = _request_id(request)
    except RequestError as e:
        return request_id, None, _failure(e)
    return request_id, request, None


def _failure(exc):
    text = str(exc).strip()
    return {"ok": False, "error": (text.splitlines()[0][:2000] if text else type(exc).__name__)}


def _handle(worker, request):
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return worker.handle(request)
    except Exception as e:  # every failure becomes an answer; the worker keeps serving
        return _failure(e)


class _Lane:
    """One thread that answers requests in order. A request that stalls (a network read that
    never ends) is abandoned with its thread, which is left to its fate; a new lane takes the
    requests that wait."""

    def __init__(self, worker, deliver, jobs=None):
        self.worker, self.deliver = worker, deliver
        self.jobs = jobs or queue.Queue()
        self.current = None  # (request id, monotonic start) of the request being answered
        self.abandoned = False
        self.thread = threading.Thread(target=self._run, name="rsicrc-serve", daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            request_id, request, answer = job
            self.current = (request_id, time.monotonic())
            if answer is None:
                answer = _handle(self.worker, request)
            if self.abandoned:  # its task is done: the error answer went out
                return
            self.deliver(request_id, answer)
            self.current = None
            self.jobs.task_done()

    def stalled(self, limit_s):
        current = self.current
        return current is not None and time.monotonic() - current[1] >= limit_s


def serve(worker, stdin=None, stdout=None, limit_s=None, ping_patience_s=PING_PATIENCE_S):
    """Answer the requests of `stdin` on `stdout`, in order, until its end. A ping that waits behind
    a request running for more than `ping_patience_s` is answered at once (the worker is alive);
    a request that runs past `limit_s` (RSICRC_SERVE_LIMIT_S, default SERVE_LIMIT_S) gets an error
    answer and the requests after it go on."""
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    limit_s = float(limit_s or os.environ.get("RSICRC_SERVE_LIMIT_S") or SERVE_LIMIT_S)
    writing = threading.Lock()

    def write(request_id, answer):
        try:
            text = json.dumps({"id": request_id, **answer}, allow_nan=False)
        except (TypeError, ValueError) as e:  # a bug: the answers are checked to be strict JSON
            text = json.dumps({"id": request_id if isinstance(request_id, (int, str)) else None, "ok": False,
                               "error": f"the answer could not be written as JSON ({e})"})
        with writing:
            out.write(text + "\n")
            out.flush()

    lines = queue.Queue()
    # Bytes where there are bytes: a line is then bounded in bytes, and bytes that are not UTF-8
    # are one bad request rather than a decoding error that would end the worker.
    source = getattr(stdin, "buffer", stdin)
    threading.Thread(target=_read_lines, args=(source, lines), name="rsicrc-serve-reader", daemon=True).start()
    lane, ended = _Lane(worker, write), False
    while not ended or lane.jobs.unfinished_tasks:
        if lane.stalled(limit_s):
            request_id = lane.current[0]
            lane.abandoned = True
            lane.jobs.task_done()
            write(request_id, {"ok": False, "error": f"the request did not finish within {limit_s:g} s and was "
                                                     f"abandoned; the worker goes on with the next ones"})
            lane = _Lane(worker, write, lane.jobs)
        if ended:
            time.sleep(LANE_POLL_S)
            continue
        try:
            line = lines.get(timeout=LANE_POLL_S)
        except queue.Empty:
            continue
        if line is _END:
            ended = True
            continue
        if line is not None and not line.strip():
            continue
        request_id, request, answer = _parse(line)
        if request is not None and request.get("op") == "ping" and lane.stalled(ping_patience_s):
            write(request_id, worker.handle(request))  # not behind a request that takes long
        else:
            lane.jobs.put((request_id, request, answer))
    lane.jobs.put(None)
    return 0


def _read_lines(source, lines):
    try:
        for line in _lines(source, MAX_LINE_BYTES):
            lines.put(line)
    finally:
        lines.put(_END)
