"""Progress reporting: a tqdm bar on a terminal, JSON lines for the QGIS side, or nothing.

Every reporter has the same methods so the pipeline never asks which one it has. JSON lines go
to stdout (the QGIS side parses it, docs/interfaces.md); human text goes to stderr so stdout of
`search` stays clean for piping.
"""
import json
import sys

from .errors import one_line


class Reporter:
    def start(self, total, output):
        pass

    def advance(self, done, total):
        pass

    def warning(self, message):
        print(f"rsicrc: warning: {one_line(message)}", file=sys.stderr, flush=True)

    def error(self, message, code):
        print(f"rsicrc: error: {one_line(message)}", file=sys.stderr, flush=True)

    def done(self, output, features, skipped):
        pass

    def close(self):
        pass


class BarReporter(Reporter):
    def __init__(self, enabled=True, unit="tile", desc="captioning"):
        self._bar = None
        self._enabled = enabled
        self._unit, self._desc = unit, desc

    def start(self, total, output):
        if self._enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=self._unit, desc=self._desc, file=sys.stderr)

    def advance(self, done, total):
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()

    def warning(self, message):
        if self._bar is not None:
            self._bar.write(f"rsicrc: warning: {one_line(message)}", file=sys.stderr)
        else:
            super().warning(message)

    def done(self, output, features, skipped):
        self.close()
        print(f"wrote {output}: {features} features, {skipped} tiles skipped", file=sys.stderr)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class JsonReporter(Reporter):
    def __init__(self, stream=None):
        self._stream = stream or sys.stdout

    def _emit(self, **event):
        self._stream.write(json.dumps(event) + "\n")
        self._stream.flush()

    def start(self, total, output):
        self._emit(event="start", total=total, output=str(output))

    def advance(self, done, total):
        self._emit(event="progress", done=done, total=total)

    def warning(self, message):
        self._emit(event="warning", message=message)

    def error(self, message, code):
        self._emit(event="error", message=message, code=code)

    def done(self, output, features, skipped):
        self._emit(event="done", output=str(output), features=features, skipped=skipped)


def make_reporter(mode, unit="tile", desc="captioning"):
    if mode == "json":
        return JsonReporter()
    return BarReporter(enabled=sys.stderr.isatty(), unit=unit, desc=desc)
