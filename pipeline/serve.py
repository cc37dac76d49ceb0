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
import sys

from rsicrc import __version__

from .caption.point import PointCaptioner
from .caption_params import MAX_TEXT_CHARS  # the bound of every query text

MAX_LINE_BYTES = 1 << 20  # 1 MiB a request line
MAX_TEXTS = 256  # texts a request; the dock sends one
MAX_ID_CHARS = 256


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


def _answer(worker, line):
    """(request id or None, answer) for one request line (None: over the length limit)."""
    if line is None:
        return None, {"ok": False, "error": f"the request line is longer than {MAX_LINE_BYTES:,} bytes "
                                             f"(1 MiB); it was skipped unread"}
    request_id = None
    try:
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError("the request is not UTF-8 text") from None
        try:
            request = json.loads(line, parse_constant=_no_constant, parse_float=_finite_float)
        except RequestError:
            raise
        except (ValueError, RecursionError) as e:
            raise RequestError(f"the request is not valid JSON ({str(e).splitlines()[0][:200]})") from None
        if not isinstance(request, dict):
            raise RequestError("a request must be a JSON object")
        request_id = _request_id(request)
        with contextlib.redirect_stdout(sys.stderr):
            answer = worker.handle(request)
    except Exception as e:  # every failure becomes an answer; the worker keeps serving
        text = str(e).strip()
        answer = {"ok": False, "error": (text.splitlines()[0][:2000] if text else type(e).__name__)}
    return request_id, answer


def serve(worker, stdin=None, stdout=None):
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    # Bytes where there are bytes: a line is then bounded in bytes, and bytes that are not UTF-8
    # are one bad request rather than a decoding error that would end the worker.
    source = getattr(stdin, "buffer", stdin)
    for line in _lines(source, MAX_LINE_BYTES):
        if line is not None and not line.strip():
            continue
        request_id, answer = _answer(worker, line)
        try:
            text = json.dumps({"id": request_id, **answer}, allow_nan=False)
        except (TypeError, ValueError) as e:  # a bug: the answers above are checked to be strict JSON
            text = json.dumps({"id": request_id if isinstance(request_id, (int, str)) else None, "ok": False,
                               "error": f"the answer could not be written as JSON ({e})"})
        out.write(text + "\n")
        out.flush()
    return 0
