"""Reading the JSON-lines progress protocol of `python -m rsicrc ... --progress json`.

Libraries in the child may print stray text to stdout; such lines are kept as log text rather
than treated as a broken protocol, so one noisy import never fails a run.
"""
import json

EVENTS = ("start", "progress", "warning", "error", "done")


def parse_line(line):
    """One stdout line -> an event dict (with "event"), or None for blank/non-protocol text."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("event") not in EVENTS:
        return None
    return obj


def progress_percent(event):
    """Percent for a start/progress event, or None when the event carries no progress."""
    total = event.get("total")
    if not isinstance(total, (int, float)) or total <= 0:
        return None
    if event.get("event") == "start":
        return 0.0
    done = event.get("done")
    if not isinstance(done, (int, float)):
        return None
    return max(0.0, min(100.0, 100.0 * done / total))
