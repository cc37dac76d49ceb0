"""Finding, checking and loading a released RSICRC checkpoint (hub id or local folder).

The checkpoint is untrusted input: it is read with `torch.load(weights_only=True)`, which
unpickles tensors and plain containers only, and its sha256 is recorded.
"""
import hashlib
import json
import os
from pathlib import Path

import torch

from .config import RsicrcConfig
from .errors import ModelLoadError
from .network import RsicrcNet
from .vocab import Vocabulary

DEFAULT_SOURCE = "rogerferrod/RSICRC"
FILES = ("config.json", "levir_vocab.json", "pytorch_model.bin")
WEIGHTS = FILES[2]


def _offline_advice(repo_id):
    return (f"On a machine with internet run `hf download {repo_id} {' '.join(FILES)} --local-dir RSICRC` "
            f"(or `huggingface-cli download ...`), copy the RSICRC folder here and pass it as the model "
            f"(--model /path/to/RSICRC or the RSICRC_MODEL environment variable).")


def looks_like_hub_id(source):
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~")) and "\\" not in source


def _cached_folder(repo_id, revision):
    from huggingface_hub import hf_hub_download

    try:
        paths = [Path(hf_hub_download(repo_id, name, revision=revision, local_files_only=True))
                 for name in FILES]
    except (OSError, ValueError):  # LocalEntryNotFoundError and friends: not (all) cached
        return None
    return paths[0].parent


def download(repo_id, revision=None):
    """Fetch the three files into the Hugging Face cache (resumable; honours HF_HUB_OFFLINE)."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ModelLoadError(f"huggingface_hub is needed to download {repo_id}: {exc}") from None
    cached = _cached_folder(repo_id, revision)
    if cached is not None:  # downloaded once: load without touching the network
        return cached
    folder = None
    for name in FILES:
        try:
            path = hf_hub_download(repo_id, name, revision=revision)
        except LocalEntryNotFoundError:
            raise ModelLoadError(
                f"model {repo_id}: {name} is not in the local Hugging Face cache and the hub cannot be "
                f"reached (offline, or HF_HUB_OFFLINE is set). {_offline_advice(repo_id)}") from None
        except RepositoryNotFoundError:
            raise ModelLoadError(f"model {repo_id}: no such repository on the Hugging Face hub "
                                 f"(or it is private); check the name or pass a local folder") from None
        except RevisionNotFoundError:
            raise ModelLoadError(f"model {repo_id}: revision {revision!r} does not exist") from None
        except EntryNotFoundError:
            raise ModelLoadError(f"model {repo_id}: the repository has no file {name}") from None
        except OSError as exc:
            raise ModelLoadError(f"model {repo_id}: downloading {name} failed ({exc}). "
                                 f"{_offline_advice(repo_id)}") from None
        folder = Path(path).parent
    return folder


def resolve_folder(source, revision=None):
    """A local folder holding the three files, downloading from the hub when `source` is an id."""
    path = Path(os.path.expanduser(str(source)))
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model {source}: not a folder; pass the folder holding {', '.join(FILES)}")
        folder = path
    elif looks_like_hub_id(str(source)):
        folder = download(str(source), revision)
    else:
        raise ModelLoadError(f"model {source}: no such folder, and not a Hugging Face repo id (owner/name)")
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(f"model {source}: {', '.join(missing)} missing in {folder}; a model folder "
                             f"holds {', '.join(FILES)} as in the rogerferrod/RSICRC repository")
    return folder


def sha256_of(path, chunk=1 << 22):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not readable JSON ({exc})") from None


def read_config(folder):
    path = folder / "config.json"
    try:
        return RsicrcConfig.from_dict(_read_json(path)), _read_json(path)
    except ValueError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None


def read_vocab(folder):
    path = folder / "levir_vocab.json"
    raw = _read_json(path)
    if not isinstance(raw, dict) or not all(isinstance(v, int) for v in raw.values()):
        raise ModelLoadError(f"{path}: expected a JSON object mapping words to integer ids")
    try:
        return Vocabulary(raw)
    except ValueError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None


def read_state_dict(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for a corrupt or unsafe file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: not a loadable weights-only PyTorch checkpoint ({first})") from None


def _describe(names, limit=12):
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_state_dict(state, expected, path):
    """Raise ModelLoadError listing missing and unexpected keys and shape mismatches by name."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: expected a state dict of tensors")
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    shapes = [f"{k} (file {tuple(state[k].shape)}, config {tuple(expected[k].shape)})"
              for k in expected.keys() & state.keys() if state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_describe(shapes)}")
    if problems:
        raise ModelLoadError(f"{path} does not fit config.json: " + "; ".join(problems))


def build_network(cfg, vocab, state, path):
    # Built on the meta device and then given the checkpoint's tensors: no random init of
    # hundreds of millions of parameters, and no second copy of the weights.
    with torch.device("meta"):
        net = RsicrcNet(cfg, len(vocab))
    expected = net.state_dict()
    emb = state.get("decoder.tokens_embed.weight")
    if emb is not None and emb.dim() == 2 and emb.shape[0] != len(vocab):
        raise ModelLoadError(f"levir_vocab.json has {len(vocab)} words but {path} was trained with "
                             f"{emb.shape[0]}: the vocabulary and the weights come from different models")
    check_state_dict(state, expected, path)
    net.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_embeddings:
        net.decoder.lm_head.weight = net.decoder.tokens_embed.weight
    return net.eval().requires_grad_(False)
