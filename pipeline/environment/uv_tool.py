"""uv (PyPI `uv`), which makes the worker's venv and installs into it: fetched once, at first use,
from the package index into the plugin's data folder.

uv makes a venv from any base Python 3.11-3.14, also one without pip or ensurepip (the Python of
macOS's QGIS.app bundle), installs faster than pip and reads the dependencies straight from
pyproject.toml. Its wheel is one binary; it is taken from the index's simple page (PEP 503), its
sha256 checked against the page's, and unpacked with the standard library alone, through the
proxy given (QGIS's, from the dialog).
"""
import hashlib
import html.parser
import io
import os
import platform as host_platform
import stat
import sys
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

UV_VERSION = "0.13.9"
PYPI_SIMPLE = "https://pypi.org/simple"
DOWNLOAD_TIMEOUT_S = 60
# Wheel platform tags of uv's builds, by (sys.platform, machine): a wheel whose name holds each part fits.
WHEEL_TAGS = {
    ("linux", "x86_64"): ("manylinux", "x86_64"), ("linux", "aarch64"): ("manylinux", "aarch64"),
    ("win32", "amd64"): ("win_amd64",), ("win32", "arm64"): ("win_arm64",),
    ("darwin", "arm64"): ("macosx", "arm64"), ("darwin", "x86_64"): ("macosx", "x86_64"),
}


class UvUnavailable(Exception):
    """uv could not be fetched or does not run; the message says why in one line."""


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


def opener(proxy=None):
    """A urllib opener through `proxy` (http://[user:password@]host:port), else the environment's."""
    handlers = [urllib.request.ProxyHandler({"http": proxy, "https": proxy})] if proxy else []
    return urllib.request.build_opener(*handlers)


def wheel_fits(name, platform=sys.platform, machine=None):
    machine = (machine or host_platform.machine()).lower()
    tags = WHEEL_TAGS.get((platform, machine))
    return bool(tags) and name.endswith(".whl") and all(tag in name for tag in tags)


def uv_path(folder, version=UV_VERSION, platform=sys.platform):
    return Path(folder) / f"uv-{version}" / ("uv.exe" if platform == "win32" else "uv")


def find_uv(folder, index_url=PYPI_SIMPLE, proxy=None, on_line=print, platform=sys.platform, machine=None):
    """The uv binary in `folder`, fetched from `index_url` first when it is not there yet."""
    target = uv_path(folder, platform=platform)
    if target.is_file():
        return target
    page_url = f"{index_url.rstrip('/')}/uv/"
    fetch = opener(proxy)
    try:
        with fetch.open(page_url, timeout=DOWNLOAD_TIMEOUT_S) as answer:
            links = _Links()
            links.feed(answer.read().decode("utf-8", "replace"))
    except OSError as exc:
        raise UvUnavailable(f"the package index {_host(page_url)} cannot be reached ({_reason(exc)}); check the "
                            f"internet connection and QGIS's proxy settings") from None
    wanted = f"uv-{UV_VERSION}-"
    fitting = [href for href in links.links
               if wheel_fits(urllib.parse.unquote(href.split("#")[0].rsplit("/", 1)[-1]), platform, machine)
               and urllib.parse.unquote(href.rsplit("/", 1)[-1]).startswith(wanted)]
    if not fitting:
        where = f"{platform} {machine or host_platform.machine()}"
        raise UvUnavailable(f"{page_url} has no uv {UV_VERSION} wheel for {where}")
    href = fitting[0]
    url, _, fragment = urllib.parse.urljoin(page_url, href).partition("#")
    on_line(f"downloading uv {UV_VERSION} from {_host(url)}")
    try:
        with fetch.open(url, timeout=DOWNLOAD_TIMEOUT_S) as answer:
            data = answer.read()
    except OSError as exc:
        raise UvUnavailable(f"uv's wheel cannot be downloaded from {_host(url)} ({_reason(exc)})") from None
    algorithm, _, digest = fragment.partition("=")
    if algorithm in hashlib.algorithms_guaranteed and hashlib.new(algorithm, data).hexdigest() != digest:
        raise UvUnavailable(f"uv's wheel from {_host(url)} does not match the index's {algorithm}; not used")
    _unpack(data, target)
    return target


def _unpack(data, target):
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        binary = next((n for n in wheel.namelist() if n.endswith(f".data/scripts/{target.name}")), None)
        if binary is None:
            raise UvUnavailable(f"uv's wheel holds no {target.name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}")
        temp.write_bytes(wheel.read(binary))
    temp.chmod(temp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(temp, target)  # whole or absent: a second set-up never runs half a binary


def _host(url):
    """A URL's host only: never its credentials or query."""
    return urllib.parse.urlsplit(url).hostname or url


def _reason(exc):
    reason = getattr(exc, "reason", None) or exc
    return str(reason).splitlines()[0][:200] if str(reason) else type(exc).__name__
