"""Errors the CLI maps to exit codes: BadInput -> 2, PipelineFailure -> 1; and how a message stays one line."""

import re

# Control characters (a file name may hold a newline), and the characters that end a line elsewhere.
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, 0x85]} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t",
                                                                       0x2028: "\\u2028", 0x2029: "\\u2029"}


def one_line(text):
    """`text` with its control characters escaped as Python writes them: a name holding a newline
    never breaks a one-line message."""
    return str(text).translate(_UNPRINTABLE)


def shown_path(path):
    """A path (or a message) as messages show it: one line, and a URL's credentials and query
    values left out (/vsicurl/https://user:secret@host/a.tif?token=x -> /vsicurl/https://host/a.tif?token=...)."""
    text = str(path)
    if "://" in text:
        text = re.sub(r"(://)[^/@\s]*@", r"\1", text)
        text = re.sub(r"([?&][^=&#\s]+=)[^&#\s]*", r"\1...", text)
    return one_line(text)


class BadInput(Exception):
    """The user's input is unusable; the message names the file and the problem (exit code 2)."""

    def __init__(self, message, path=None):
        self.path = str(path) if path is not None else None
        # GDAL's reasons may quote a URL whole: its credentials and query values are left out too.
        super().__init__(f"{shown_path(path)}: {shown_path(message)}" if path is not None else shown_path(message))


class PipelineFailure(Exception):
    """Anything else that stops a run (exit code 1); the message is meant for the user."""
