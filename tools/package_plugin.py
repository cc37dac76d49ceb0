"""Build the installable plugin zip: `python tools/package_plugin.py DIST_DIR`.

QGIS's "Install from ZIP" wants one top folder named like the plugin package (rsicrc) with
metadata.txt and __init__.py in it. The zip holds the runtime code (model/, pipeline/,
rsicrc_qgis/, since the worker runs this same code), resources, LICENSE and pyproject.toml
("Set up environment" installs the dependencies pinned there) — no tests, caches, venvs or
build output. Uses only the standard library, so any python3 runs it.

The finished zip is checked against what plugins.qgis.org's upload validator rejects
(qgis/QGIS-Django, qgis-app/plugins/validator.py): over 25,000,000 bytes, `..` or absolute
names, .pyc files, __MACOSX/.git/__pycache__ folders, a top folder that is not a PEP 8 name,
no __init__.py/metadata.txt/LICENSE, a missing required metadata field, an author with a slash,
and a tracker/repository/homepage that is not an http(s) address (a missing homepage fails that
check too, so it is required in practice). Binaries (executables, shared libraries, wheels) are
refused as well: the site's reviewers do not accept them. Placeholder addresses are refused, and
the validator's check that each address answers is done with --check-urls (it needs internet).
A zip that would be refused is not written, and the message names the field or the file.
`--local` builds a zip for "Install from ZIP" only, without the upload-only fields.
"""
import argparse
import configparser
import re
import sys
import urllib.error
import urllib.request
import zipfile
from io import StringIO
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "rsicrc"
TOP_FILES = ("__init__.py", "__main__.py", "metadata.txt", "LICENSE", "README.md", "pyproject.toml")
TOP_DIRS = ("model", "pipeline", "rsicrc_qgis", "resources")
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".venv", ".git", "tests", "dist", "build"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".partial", ".orig", ".rej", ".swp"}
MAX_BYTES = 25_000_000  # plugins.qgis.org's PLUGIN_MAX_UPLOAD_SIZE

# validator.py's PLUGIN_REQUIRED_METADATA, plus homepage (see the module docstring).
REQUIRED = ("name", "description", "version", "qgisMinimumVersion", "author", "email", "about",
            "tracker", "repository", "homepage")
# The --local zip: what QGIS needs to load the plugin (version, qgisMinimumVersion; see
# pyplugin_installer/installer_data.py) and to list it in the plugin manager.
REQUIRED_LOCAL = ("name", "description", "version", "qgisMinimumVersion", "author", "about")
URL_FIELDS = ("tracker", "repository", "homepage")
# The validator's own template placeholders, then addresses that are placeholders anywhere.
PLACEHOLDER_URLS = ("http://bugs", "http://repo", "http://homepage")
PLACEHOLDER_HOSTS = ("example.com", "example.org", "example.net", "localhost", "127.0.0.1")
# The address this project was drafted with; no such repository was ever published.
PLACEHOLDER_PROJECT = ("github.com/rsicrc/rsicrc",)
FORBIDDEN_DIRS = ("__MACOSX", ".git", "__pycache__")
BINARY_SUFFIXES = {".exe", ".dll", ".so", ".dylib", ".pyd", ".pyc", ".pyo", ".o", ".a", ".lib", ".bin",
                   ".whl", ".egg", ".jar", ".class", ".msi", ".dmg"}
BINARY_MAGIC = (b"\x7fELF", b"MZ", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf",
                b"\xfe\xed\xfa\xce", b"\xca\xfe\xba\xbe")  # ELF, PE, Mach-O (and fat Mach-O)


class Refused(Exception):
    """plugins.qgis.org would reject the zip; the message names the field or file."""


def plugin_files(root=ROOT):
    files = [root / name for name in TOP_FILES if (root / name).is_file()]
    for top in TOP_DIRS:
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root)
            if (path.is_file() and not SKIP_PARTS.intersection(rel.parts)
                    and path.suffix not in SKIP_SUFFIXES and not path.name.startswith(".")):
                files.append(path)
    return files


def read_metadata(text, source="metadata.txt"):
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive for the validator (qgisMinimumVersion)
    try:
        parser.read_file(StringIO(text))
    except configparser.Error as exc:
        raise Refused(f"{source}: cannot be parsed: {exc}") from None
    if not parser.has_section("general"):
        raise Refused(f"{source}: has no [general] section")
    return {k: v.strip() for k, v in parser.items("general")}


def _placeholder(url):
    low = url.lower()
    host = (urlparse(low).hostname or "")
    return (low.rstrip("/") in PLACEHOLDER_URLS or any(host == h or host.endswith("." + h) for h in PLACEHOLDER_HOSTS)
            or any(p in low for p in PLACEHOLDER_PROJECT))


def metadata_problems(meta, local=False):
    """One line per field plugins.qgis.org (or, with local, QGIS) would refuse."""
    problems = []
    required = REQUIRED_LOCAL if local else REQUIRED
    missing = [k for k in required if not meta.get(k)]
    if missing:
        problems.append("metadata.txt lacks " + ", ".join(missing)
                        + ("" if local else " (required by plugins.qgis.org; see README, 'Publishing the plugin')"))
    for key in URL_FIELDS:
        url = meta.get(key)
        if not url:
            continue
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            problems.append(f"metadata.txt {key}={url} is not an http(s) address")
        elif _placeholder(url):
            problems.append(f"metadata.txt {key}={url} is a placeholder, not the plugin's real address")
    email = meta.get("email")
    if email and (not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email)
                  or "noreply" in email.lower() or email.lower().split("@")[-1] in PLACEHOLDER_HOSTS):
        problems.append(f"metadata.txt email={email} is not a maintainer's real address")
    if "/" in meta.get("author", ""):
        problems.append("metadata.txt author cannot contain slashes")
    if meta.get("version") and not re.fullmatch(r"[0-9][0-9A-Za-z.\-_+]*", meta["version"]):
        problems.append(f"metadata.txt version={meta['version']} is not a version number")
    return problems


def _is_binary(name, head):
    return Path(name).suffix.lower() in BINARY_SUFFIXES or any(head.startswith(m) for m in BINARY_MAGIC)


def zip_problems(target, local=False):
    """Everything in the finished zip that the upload would refuse, one line each."""
    problems = []
    size = Path(target).stat().st_size
    if size > MAX_BYTES:
        problems.append(f"{size / 1e6:.1f} MB is over plugins.qgis.org's 25 MB limit")
    with zipfile.ZipFile(target) as zf:
        names = zf.namelist()
        tops = {n.split("/", 1)[0] for n in names}
        top = names[0].split("/", 1)[0] if names and "/" in names[0] else None
        if top is None or len(tops) != 1:
            problems.append(f"the zip must hold exactly one top folder, not {sorted(tops)}")
        elif not re.fullmatch(r"[a-z_][a-z0-9_]*", top):
            problems.append(f"top folder {top!r} is not a PEP 8 package name")
        for name in names:
            parts = name.split("/")
            if ".." in name or name.startswith("/"):
                problems.append(f"{name}: path information is not allowed")
            for bad in FORBIDDEN_DIRS:
                if bad in parts[:-1] or (bad in parts and name.endswith("/")):
                    problems.append(f"{name}: a {bad} folder is not allowed")
            if not name.endswith("/"):
                with zf.open(name) as f:
                    if _is_binary(name, f.read(4)):
                        problems.append(f"{name}: binary files are not accepted")
        if top is not None:
            for required in ("__init__.py", "metadata.txt", "LICENSE"):
                if f"{top}/{required}" not in names:
                    problems.append(f"{top}/{required} is missing")
            if f"{top}/metadata.txt" in names:
                meta = read_metadata(zf.read(f"{top}/metadata.txt").decode("utf-8"), f"{top}/metadata.txt")
                problems += metadata_problems(meta, local)
                icon = meta.get("icon")
                if icon and f"{top}/{icon.removeprefix('./')}" not in names:
                    problems.append(f"metadata.txt icon={icon} is not in the zip")
        bad = zf.testzip()
        if bad:
            problems.append(f"{bad}: CRC error")
    return problems


def unreachable_urls(meta, timeout=20):
    """The validator's HEAD request to each address (it needs internet); one line per failure."""
    problems = []
    for key in URL_FIELDS:
        url = meta.get(key)
        if not url:
            continue
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as answer:
                code = answer.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        except (OSError, ValueError) as exc:
            problems.append(f"metadata.txt {key}={url} cannot be reached ({exc})")
            continue
        if code >= 400:
            problems.append(f"metadata.txt {key}={url} answers HTTP {code}")
    return problems


def build(dist, root=ROOT, local=False, check_urls=False):
    """Write DIST/rsicrc-VERSION.zip (-local.zip with local); Refused when it would be rejected."""
    meta = read_metadata((root / "metadata.txt").read_text(encoding="utf-8"))
    problems = metadata_problems(meta, local)
    if check_urls and not local:
        problems += unreachable_urls(meta)
    if problems:  # refuse before writing anything
        raise Refused("; ".join(problems))
    dist = Path(dist)
    dist.mkdir(parents=True, exist_ok=True)
    target = dist / f"{PACKAGE}-{meta['version']}{'-local' if local else ''}.zip"
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in plugin_files(root):
            zf.write(path, f"{PACKAGE}/{path.relative_to(root).as_posix()}")
    problems = zip_problems(partial, local)
    if problems:
        partial.unlink()
        raise Refused("; ".join(problems))
    partial.replace(target)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", nargs="?", default="dist")
    parser.add_argument("--local", action="store_true",
                        help="a zip for QGIS's Install from ZIP only: the fields only plugins.qgis.org "
                             "requires (email, tracker, repository, homepage) may be missing")
    parser.add_argument("--check-urls", action="store_true",
                        help="also check, as the upload does, that tracker/repository/homepage answer")
    args = parser.parse_args(argv)
    try:
        target = build(args.dist, local=args.local, check_urls=args.check_urls)
    except Refused as exc:
        print(f"package_plugin: not built: {exc}"
              + ("" if args.local else " (use --local for a zip for Install from ZIP only)"), file=sys.stderr)
        return 2
    with zipfile.ZipFile(target) as zf:
        count = len(zf.namelist())
    print(f"{target}: {count} files, {target.stat().st_size / 2**20:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
