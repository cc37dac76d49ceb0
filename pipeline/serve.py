"""`rsicrc serve`: the search worker behind the QGIS dock (JSON lines over stdin/stdout).

One request a line, one answer a line, in order; each model is loaded once, on first use, and
kept. Nothing but answers may reach stdout, so anything a library prints while serving is sent
to stderr. The worker never dies on a bad request: it answers {"ok": false, "error": ...}.
"""
import contextlib
import json
import sys

from rsicrc import __version__


class SearchWorker:
    def __init__(self, model, clip_model, device="auto"):
        self.default_model = model
        self.default_clip = clip_model
        self.device = device
        self._models = {}

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
        if op == "embed_text":
            texts = request.get("texts")
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
                raise ValueError("'texts' must be a non-empty list of strings")
            clip = bool(request.get("clip", False))
            source = request.get("model") or (self.default_clip if clip else self.default_model)
            model = self._model(source, clip)
            if clip:
                embeddings = model.encode_text(texts)
                unknown = [[] for _ in texts]
            else:
                embeddings = model.embed_text(texts)
                unknown = [list(model.unknown_words(t)) for t in texts]
            return {"ok": True, "embeddings": embeddings.numpy().astype(float).tolist(),
                    "unknown_words": unknown, "model_source": model.source, "model_sha256": model.sha256}
        raise ValueError(f"unknown op {op!r} (known: embed_text, ping)")


def serve(worker, stdin=None, stdout=None):
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    for line in stdin:
        if not line.strip():
            continue
        request_id = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request must be a JSON object")
            request_id = request.get("id")
            with contextlib.redirect_stdout(sys.stderr):
                answer = worker.handle(request)
        except Exception as e:  # every failure becomes an answer; the worker keeps serving
            answer = {"ok": False, "error": str(e) or type(e).__name__}
        out.write(json.dumps({"id": request_id, **answer}) + "\n")
        out.flush()
    return 0
