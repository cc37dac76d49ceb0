"""Where libraries' warnings and log records go: a log file, not the terminal.

rsicrc promises one line on stderr for a refused input; a UserWarning of pyproj or a GDAL message
that rasterio logs would otherwise add lines of their own (Python prints warnings, and logging's
last-resort handler prints records, to stderr). They go to a small rotating log file instead
(RSICRC_LOG, else rsicrc.log in the user's cache folder), and with --verbose to stderr as well.
Standard library only: it is set up before any command's imports.
"""
import logging
import logging.handlers
import os
import sys
import warnings
from pathlib import Path

from ..model.user_cache import user_cache_dir

MAX_LOG_BYTES = 1_000_000
LOG_ENV = "RSICRC_LOG"


def log_path(environ=os.environ, platform=sys.platform):
    """The log file: $RSICRC_LOG, else rsicrc.log in this OS's user cache folder for rsicrc."""
    if environ.get(LOG_ENV):
        return Path(environ[LOG_ENV])
    return user_cache_dir(environ, platform) / "rsicrc.log"


def route_library_messages(verbose=False):
    """Python warnings and every log record to the log file (and stderr with `verbose`)."""
    logging.captureWarnings(False)  # forget an earlier capture whose showwarning was put back since
    logging.captureWarnings(True)
    warnings.simplefilter("default")  # each distinct warning once, as Python shows them by default
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "rsicrc", False):
            root.removeHandler(handler)
    handlers = []
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(path, maxBytes=MAX_LOG_BYTES, backupCount=1,
                                                             encoding="utf-8"))
    except OSError:
        pass  # no writable cache folder: the messages are dropped, never printed in the way
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    handlers.append(logging.NullHandler())  # so that logging's last resort never prints to stderr
    formatter = logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s")
    for handler in handlers:
        handler.rsicrc = True
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
