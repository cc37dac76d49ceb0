"""Finding, checking and loading a released RSICRC checkpoint (hub id or local folder).

The checkpoint is untrusted input: it is read with `torch.load(weights_only=True)`, which
unpickles tensors and plain containers only, and its sha256 is recorded.
"""
import hashlib
from concurrent.futures import ThreadPoolExecutor

import torch

from . import bounded_json, checked_weights
from .config import RsicrcConfig
from .errors import ModelLoadError
from .net.rsicrc_net import RsicrcNet
from .sources import ModelFiles, resolve
from .vocab import Vocabulary

DEFAULT_SOURCE = "rogerferrod/RSICRC"
FILES = ("config.json", "levir_vocab.json", "pytorch_model.bin")
WEIGHTS = FILES[2]


RSICRC_FILES = ModelFiles("RSICRC", "--model", "RSICRC_MODEL", required=FILES)


# config.json and levir_vocab.json are a few KB; a bigger one is not a model's.
MAX_JSON_BYTES = 16 * 2**20


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
        return bounded_json.load_file(path, MAX_JSON_BYTES)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:  # bounded_json.JsonLimit included: too deep, too big, not a file
        raise ModelLoadError(f"{path}: not readable JSON ({exc})") from None


def read_config(folder):
    """The validated config and its raw JSON; checked before any network is built."""
    path = folder / "config.json"
    raw = _read_json(path)
    try:
        return RsicrcConfig.from_dict(raw), raw
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


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_zip(path):
    # What torch.save writes by default (and torch.load(mmap=True) needs): a zip archive.
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def read_state_dict(path):
    """The checkpoint's tensors, memory-mapped when the file allows it; never arbitrary objects.

    A file in PyTorch's legacy (non-zip) format cannot be memory-mapped: torch refuses it under
    mmap=True, so it is read again into memory, still with weights_only=True.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for a corrupt or unsafe file
        if _is_zip(path):
            raise ModelLoadError(f"{path}: not a loadable weights-only PyTorch checkpoint "
                                 f"({_first_line(exc)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a loadable weights-only PyTorch checkpoint (not a zip "
                             f"archive; read as the legacy format: {_first_line(exc)})") from None


def _describe(names, limit=12):
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_is_state_dict(state, path):
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: expected a state dict of tensors")


def check_state_dict(state, expected, path):
    """Raise ModelLoadError listing missing and unexpected keys and shape mismatches by name
    (`state` is a dict of tensors: check_is_state_dict)."""
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
    odd = [f"{k} ({why})" for k in expected.keys() & state.keys()
           if (why := _not_a_weight(state[k], expected[k]))]
    if odd:
        raise ModelLoadError(f"{path}: tensors that cannot be these weights: {_describe(odd)}")


def _kind(tensor):
    if tensor.is_complex():
        return "complex"
    if tensor.is_floating_point():
        return "floating-point"
    return "boolean" if tensor.dtype == torch.bool else "integer"


def _not_a_weight(tensor, expected):
    """Why a file tensor cannot stand for `expected` (a meta tensor of the network), or None."""
    if tensor.is_quantized:
        return "quantized"
    if tensor.layout != torch.strided:
        return f"{str(tensor.layout).replace('torch.', '')} layout, not dense"
    if tensor.device.type != "cpu":
        return f"on device {tensor.device.type}, holds no readable data"
    if _kind(tensor) != _kind(expected):
        return f"{str(tensor.dtype).replace('torch.', '')}, not {_kind(expected)}"
    return None


def check_finite(state, path):
    """Raise ModelLoadError naming the first tensor (in file order) holding NaN or Inf.

    Such weights load and run, but give garbage ("PAD PAD ...") captions. One pass over the
    floating-point tensors; a tensor tied to another is checked once. A sum is finite only when
    every value is (NaN and Inf propagate), and it reads the values without writing a mask: 0.14 s
    for the released 1.4 GB against 3.8 s for isfinite(t).all(), on 2 AMD EPYC cores. A tensor whose
    sum is not finite (or overflows) is then looked at value by value.
    """
    bad, seen = [], set()
    for key, tensor in state.items():
        if id(tensor) in seen or not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        seen.add(id(tensor))
        if not bool(torch.isfinite(tensor.sum())) and not bool(torch.isfinite(tensor).all()):
            bad.append(key)
    if bad:
        first = state[bad[0]]
        kinds = [name for name, found in (("NaN", torch.isnan(first).any()),
                                          ("Inf", torch.isinf(first).any())) if found]
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise ModelLoadError(f"{path}: {bad[0]} holds non-finite values ({' and '.join(kinds)}){more}: "
                             f"the weights are damaged or come from a diverged training run")


def build_network(cfg, vocab, state, path, check_values=True):
    """The network holding `state`'s tensors; ModelLoadError for a state that is not its weights.
    check_values=False skips check_finite, for a file that passed it before (checked_weights)."""
    # Built on the meta device and then given the checkpoint's tensors: no random init of
    # hundreds of millions of parameters, and no second copy of the weights.
    with torch.device("meta"):
        net = RsicrcNet(cfg, len(vocab))
    expected = net.state_dict()
    check_is_state_dict(state, path)
    emb = state.get("decoder.tokens_embed.weight")
    if emb is not None and emb.dim() == 2 and emb.shape[0] != len(vocab):
        raise ModelLoadError(f"levir_vocab.json has {len(vocab)} words but {path} was trained with "
                             f"{emb.shape[0]}: the vocabulary and the weights come from different models")
    check_state_dict(state, expected, path)
    if check_values:
        check_finite(state, path)
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, TypeError, ValueError) as exc:  # after the checks above: a safety net
        detail = " ".join(str(exc).split())[:300]
        raise ModelLoadError(f"{path}: the weights could not be put into the network ({detail})") from None
    if cfg.tie_embeddings:
        net.decoder.lm_head.weight = net.decoder.tokens_embed.weight
    return net.eval().requires_grad_(False)


def load_checked_network(cfg, vocab, path):
    """build_network on the weights file at `path`, and the file's sha256.

    The two checks that read every byte, sha256_of and check_finite, run side by side (hashlib
    and torch let go of the GIL), and neither runs again for a file that checked_weights
    remembers as passed.
    """
    try:
        before = checked_weights.stamp(path)
    except OSError:  # read_state_dict names the problem
        before = None
    known = checked_weights.known_sha256(before) if before else None
    if known:
        return build_network(cfg, vocab, read_state_dict(path), path, check_values=False), known
    pool = ThreadPoolExecutor(1, thread_name_prefix="rsicrc-sha256")
    digest = pool.submit(sha256_of, path)
    try:
        net = build_network(cfg, vocab, read_state_dict(path), path)
        sha = digest.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    try:
        unchanged = before is not None and checked_weights.stamp(path) == before
    except OSError:
        unchanged = False
    if unchanged:  # not a file that was replaced while it was read
        checked_weights.remember(before, sha)
    return net, sha
