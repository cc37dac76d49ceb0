"""Where a model's files come from, for RSICRC and RS-M-CLIP alike: one resolver, one set of rules.

A source is a local folder (`local-dir:<folder>` also works), or a Hugging Face hub repo
(`hf-hub:owner/name`, or a bare `owner/name` that is not an existing folder). A hub repo already
in the local Hugging Face cache loads without touching the network; otherwise its files are
downloaded into the cache (resumable), unless HF_HUB_OFFLINE is set or the hub's host name does
not resolve, which is said at once instead of after huggingface_hub's retries. Every failure is a
ModelLoadError that says what to do, the same advice for both models.
"""
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import ModelLoadError

HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
DNS_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ModelFiles:
    """What a model folder holds, and how the user names and passes the model."""

    name: str  # "RSICRC": in messages and as the suggested folder name
    flag: str  # the CLI option that takes the folder
    env: str  # the environment variable that does too
    required: tuple
    one_of: tuple = ()  # at least one of these (the weights in one of several formats)
    optional: tuple = ()  # fetched from the hub when present
    whole_repo: bool = False  # the advice downloads the whole repo rather than the listed files

    def advice(self, repo_id):
        files = "" if self.whole_repo else " " + " ".join(self.required + self.one_of[:1])
        return (f"On a machine with internet access run `hf download {repo_id}{files} --local-dir {self.name}` "
                f"(or `huggingface-cli download ...`), copy the {self.name} folder here and pass it with "
                f"{self.flag} /path/to/{self.name} (or the {self.env} environment variable).")

    def missing(self, folder):
        """The files this folder lacks, in words (empty when it is complete)."""
        lacking = [name for name in self.required if not (folder / name).is_file()]
        if self.one_of and not any((folder / name).is_file() for name in self.one_of):
            lacking.append(" or ".join(self.one_of))
        return lacking


@dataclass(frozen=True)
class ResolvedSource:
    folder: Path
    repo_id: str = None  # the hub repo, None for a local folder


def looks_like_hub_id(text):
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def resolve(source, files, revision=None, cache_dir=None):
    """The folder holding `files` for `source`, downloading a hub repo when needed."""
    text = str(source).strip()
    if not text:
        raise ModelLoadError(f"empty {files.name} model source: give a hub repo id or a local folder")
    if text.startswith(HUB_PREFIX):
        return _hub(text[len(HUB_PREFIX):].strip("/"), files, revision, cache_dir)
    local_only = text.startswith(LOCAL_PREFIX)
    if local_only:
        text = text[len(LOCAL_PREFIX):]
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{files.name} model {path}: is a file, not a folder; pass the folder that "
                                 f"holds {', '.join(files.required + files.one_of[:1])}")
        return ResolvedSource(_complete(path.resolve(), files, text))
    if local_only or not looks_like_hub_id(text):
        raise ModelLoadError(f"{files.name} model {text}: no such folder, and not a Hugging Face repo id "
                             f"(owner/name)")
    try:
        return _hub(text, files, revision, cache_dir)
    except ModelLoadError as exc:  # it may have been meant as a relative folder
        raise ModelLoadError(f"{exc} (There is no folder {path.resolve()} either.)") from None


def _complete(folder, files, source):
    special = [name for name in files.required + files.one_of
               if (folder / name).exists() and not (folder / name).is_file()]
    if special:  # a FIFO would block the read for ever, a folder fail it
        raise ModelLoadError(f"{files.name} model {source}: {folder / special[0]} is not a regular file (a FIFO, "
                             f"device or folder); the folder must hold {', '.join(files.required + files.one_of[:1])}")
    lacking = files.missing(folder)
    if lacking:
        raise ModelLoadError(f"{files.name} model {source}: {', '.join(lacking)} missing in {folder}; the folder "
                             f"must hold {', '.join(files.required + files.one_of[:1])}")
    return folder


def hub_offline():
    # huggingface_hub reads the variable at import time; the caller may have set it later.
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or env in {"1", "ON", "YES", "TRUE"}


def _cached(repo_id, files, revision, cache_dir):
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True,
                                        allow_patterns=list(files.required + files.one_of + files.optional)))
    except (OSError, ValueError):  # LocalEntryNotFoundError and friends: not cached
        return None
    return folder if not files.missing(folder) else None


def _host_resolves(host):
    """Whether the host name resolves; a lookup that hangs past DNS_TIMEOUT_S counts as no."""
    answer = []

    def look_up():
        try:
            answer.append(bool(socket.getaddrinfo(host, None)))
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=look_up, daemon=True)
    thread.start()
    thread.join(DNS_TIMEOUT_S)
    return bool(answer and answer[0])


def _hub(repo_id, files, revision, cache_dir):
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    where = f"{files.name} model {repo_id}" + (f" (revision {revision})" if revision else "")
    if not looks_like_hub_id(repo_id):
        raise ModelLoadError(f"{where}: not a Hugging Face repo id (owner/name)")
    cached = _cached(repo_id, files, revision, cache_dir)
    if cached is not None:  # downloaded once: load without touching the network
        return ResolvedSource(cached, repo_id)
    if hub_offline():
        raise ModelLoadError(f"{where} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
                             f"{files.advice(repo_id)}")
    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    if not _host_resolves(host):
        raise ModelLoadError(f"{where} is not in the local Hugging Face cache and the hub cannot be reached "
                             f"({host} does not resolve: no internet or DNS here?). {files.advice(repo_id)}")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                        allow_patterns=list(files.required + files.optional)))
        for name in files.one_of if files.missing(folder) else ():
            try:
                hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir)
                break
            except EntryNotFoundError:
                continue
    except LocalEntryNotFoundError:
        raise ModelLoadError(f"{where} is not in the local Hugging Face cache and the hub could not be reached. "
                             f"{files.advice(repo_id)}") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{where}: no such repository on the Hugging Face hub (or it is private); check "
                             f"the name or pass a local folder") from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"{where}: no such revision on the hub") from None
    except (OSError, ValueError) as exc:  # network and HTTP errors derive from these
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{where}: downloading failed ({first}). {files.advice(repo_id)}") from None
    return ResolvedSource(_complete(folder, files, repo_id), repo_id)
