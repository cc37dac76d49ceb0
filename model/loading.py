"""Finding, checking and loading a released RSICRC checkpoint (hub id or local folder).

The checkpoint is untrusted input: it is read with `torch.load(weights_only=True)`, which
unpickles tensors and plain containers only, and its sha256 is recorded.
"""
import hashlib
import json

import torch

from .config import RsicrcConfig
from .errors import ModelLoadError
from .network import RsicrcNet
from .sources import ModelFiles, resolve
from .vocab import Vocabulary

DEFAULT_SOURCE = "rogerferrod/RSICRC"
FILES = ("config.json", "levir_vocab.json", "pytorch_model.bin")
WEIGHTS = FILES[2]


RSICRC_FILES = ModelFiles("RSICRC", "--model", "RSICRC_MODEL", required=FILES)


def resolve_source(source, revision=None):
    """The folder (and hub repo, if any) of an RSICRC source: see model/sources.py."""
    return resolve(source, RSICRC_FILES, revision)


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
