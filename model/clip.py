"""RS-M-CLIP (multilingual remote-sensing CLIP) through open_clip.

`load_clip(source)` accepts the hub id `hf-hub:joaodaniel/RS-M-CLIP` (also `org/name`), or a local
folder holding the hub repo's files (`open_clip_config.json`, `open_clip_model.safetensors` or
`open_clip_pytorch_model.bin`, the tokenizer files). A hub id is resolved to the snapshot folder of
the Hugging Face cache (downloaded when online, cache only when HF_HUB_OFFLINE is set) and then
loaded by the same folder loader as a local folder, so both paths behave the same.

The text tower of RS-M-CLIP is a `transformers` XLM-RoBERTa that open_clip builds from
`AutoConfig.from_pretrained(text_cfg.hf_model_name)`. That name ("xlm-roberta-base") is another hub
repo, so a downloaded folder would not load offline. `resolve_text_config` finds that configuration
locally (the folder, a known public architecture, the local cache; never a download) and the folder
loader points open_clip at it. Only the architecture is read from it: the weights all come from the
CLIP checkpoint, loaded strictly, so a wrong shape fails loudly.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from . import bounded_json
from .device import resolve_device
from .errors import ModelLoadError
from .loading import MAX_JSON_BYTES, sha256_of
from .sources import HUB_PREFIX, LOCAL_PREFIX, ModelFiles, hub_offline, resolve

DEFAULT_CLIP_SOURCE = "hf-hub:joaodaniel/RS-M-CLIP"

# --- the text tower's config: the public architecture of the two XLM-RoBERTa sizes ---------------
_XLMR_COMMON = {
    "model_type": "xlm-roberta",
    "architectures": ["XLMRobertaForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "pad_token_id": 1,
    "position_embedding_type": "absolute",
    "type_vocab_size": 1,
    "vocab_size": 250002,
}
_XLMR_BASE = {**_XLMR_COMMON, "hidden_size": 768, "intermediate_size": 3072,
              "num_attention_heads": 12, "num_hidden_layers": 12}
_XLMR_LARGE = {**_XLMR_COMMON, "hidden_size": 1024, "intermediate_size": 4096,
               "num_attention_heads": 16, "num_hidden_layers": 24}
KNOWN_TEXT_CONFIGS = {
    "xlm-roberta-base": _XLMR_BASE,
    "FacebookAI/xlm-roberta-base": _XLMR_BASE,
    "xlm-roberta-large": _XLMR_LARGE,
    "FacebookAI/xlm-roberta-large": _XLMR_LARGE,
}


def _is_config_dir(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return "model_type" in bounded_json.load_file(cfg, 16 * 2**20)
    except (OSError, ValueError, TypeError):
        return False


def resolve_text_config(name: str, folder: Path, scratch: Path, *, cache_dir: str | None = None) -> Path:
    """A folder holding `config.json` for the text tower named `name` of the model in `folder`.

    In order: `name` is itself such a folder (absolute or relative to `folder`); `folder` holds the
    text config (`config.json` with a model_type); `name` is a known public architecture (written to
    `scratch`); the local Hugging Face cache has that repo's config.json (copied to `scratch`). It is
    never downloaded: an unpinned download of another repo's file is what a supply-chain attack
    would swap, and RS-M-CLIP's own text tower is a known architecture.
    """
    for candidate in (Path(name).expanduser(), folder / name):
        if candidate.is_dir() and _is_config_dir(candidate):
            return candidate
    if _is_config_dir(folder):
        return folder
    if name in KNOWN_TEXT_CONFIGS:
        (scratch / "config.json").write_text(json.dumps(KNOWN_TEXT_CONFIGS[name]), encoding="utf-8")
        return scratch
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir)
    except ValueError:  # not a repo id
        cached = None
    if isinstance(cached, str) and _is_config_dir(Path(cached).parent):
        (scratch / "config.json").write_bytes(Path(cached).read_bytes())
        return scratch
    raise ModelLoadError(
        f"the text tower of {folder} is the transformers model {name!r}, whose config.json is neither "
        f"in that folder nor in the local Hugging Face cache: run `hf download {name} config.json "
        f"--local-dir tmp` and copy tmp/config.json into {folder}")


# --- RS-M-CLIP ----------------------------------------------------------------------------------
CONFIG_FILE = "open_clip_config.json"
# In open_clip's order of preference.
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "open_clip_pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "sentencepiece.bpe.model")
# The weights are fetched in the first format the repo has, so one holding two is not downloaded twice.
CLIP_FILES = ModelFiles("RS-M-CLIP", "--clip-model", "RSICRC_CLIP_MODEL", required=(CONFIG_FILE,),
                        one_of=WEIGHT_FILES, optional=("config.json", *TOKENIZER_FILES), whole_repo=True)
DEFAULT_BATCH_SIZE = 32
DEFAULT_CONTEXT_LENGTH = 77


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        return resolve_device(device)
    except ValueError as exc:  # load_clip reports every load problem as ModelLoadError
        raise ModelLoadError(str(exc)) from exc


def _read_open_clip_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    try:
        config = bounded_json.load_file(path, MAX_JSON_BYTES)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not readable JSON: {exc}") from exc
    model_cfg = config.get("model_cfg") if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("vision_cfg"), dict) \
            or not isinstance(model_cfg.get("text_cfg"), dict) or "embed_dim" not in model_cfg:
        raise ModelLoadError(f"{path} lacks model_cfg with embed_dim, vision_cfg and text_cfg")
    return config


def _weights_file(folder: Path) -> Path:
    # The resolver made sure that one of them is there.
    return next(folder / name for name in WEIGHT_FILES if (folder / name).is_file())


def _tokenizer(folder: Path, text_cfg: dict, offline: bool):
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    context_length = int(text_cfg.get("context_length") or DEFAULT_CONTEXT_LENGTH)
    name = text_cfg.get("hf_tokenizer_name")
    if not name:  # a CLIP-BPE text tower: open_clip ships its vocabulary
        return open_clip.get_tokenizer(f"{LOCAL_PREFIX}{folder}")
    if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return open_clip.get_tokenizer(f"{LOCAL_PREFIX}{folder}")
    # The repo has no tokenizer files: open_clip would ask the hub for `name`; the cache may hold it.
    try:
        return HFTokenizer(name, context_length=context_length,
                           tokenizer_mode=text_cfg.get("tokenizer_mode"), local_files_only=offline)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{folder} has no tokenizer files and the tokenizer {name!r} is not in the local Hugging "
            f"Face cache: on a machine with internet access run `huggingface-cli download {name} "
            f"tokenizer.json tokenizer_config.json sentencepiece.bpe.model special_tokens_map.json "
            f"--local-dir tok` and copy those files into {folder}") from exc


def _load_folder(folder: Path, device: torch.device, source: str, cache_dir: str | None) -> "ClipEncoder":
    import open_clip

    folder = folder.resolve()
    config = _read_open_clip_config(folder)
    weights = _weights_file(folder)
    model_cfg = config["model_cfg"]
    text_cfg = dict(model_cfg["text_cfg"])
    offline = hub_offline()
    with tempfile.TemporaryDirectory(prefix="rsicrc-clip-textcfg-") as scratch:
        overrides = {}
        if text_cfg.get("hf_model_name"):
            text_cfg["hf_model_name"] = str(resolve_text_config(
                text_cfg["hf_model_name"], folder, Path(scratch), cache_dir=cache_dir))
            # The full checkpoint replaces every weight, so never fetch the base text weights.
            text_cfg["hf_model_pretrained"] = False
            overrides["text_cfg"] = text_cfg
        try:
            model = open_clip.create_model(f"{LOCAL_PREFIX}{folder}", device=device, precision="fp32",
                                           pretrained_text=False, **overrides)
        except ModelLoadError:
            raise
        except Exception as exc:  # open_clip and torch raise many kinds for a bad folder
            raise ModelLoadError(f"could not build RS-M-CLIP from {folder}: "
                                 f"{type(exc).__name__}: {exc}") from exc
    tokenizer = _tokenizer(folder, model_cfg["text_cfg"], offline)
    model.eval()
    return ClipEncoder(model=model, tokenizer=tokenizer, source=source, sha256=sha256_of(weights),
                       embedding_dim=int(model_cfg["embed_dim"]), device=device, folder=folder,
                       preprocess_cfg=dict(model.visual.preprocess_cfg))


def load_clip(source: str = DEFAULT_CLIP_SOURCE, device: str | torch.device = "auto", *,
              revision: str | None = None, cache_dir: str | None = None) -> "ClipEncoder":
    """Load RS-M-CLIP (or any open_clip model folder of the same kind).

    source: `hf-hub:org/name`, `org/name`, a local folder or `local-dir:<folder>`.
    Raises ModelLoadError, whose message says what is wrong and what to do, for every problem.
    """
    dev = _resolve_device(device)
    resolved = resolve(source, CLIP_FILES, revision, cache_dir)
    label = f"{HUB_PREFIX}{resolved.repo_id}" if resolved.repo_id else str(resolved.folder)
    return _load_folder(resolved.folder, dev, label, cache_dir)


@dataclass(eq=False)
class ClipEncoder:
    """A loaded RS-M-CLIP: batched, L2-normalised image and text embeddings (float32, CPU)."""

    model: torch.nn.Module = field(repr=False)
    tokenizer: object = field(repr=False)
    source: str
    sha256: str
    embedding_dim: int
    device: torch.device
    folder: Path
    preprocess_cfg: dict
    batch_size: int = DEFAULT_BATCH_SIZE

    @property
    def logit_scale(self) -> float:
        """The trained softmax temperature (exp of the model's log scale, capped at 100 as in CLIP)."""
        return float(min(self.model.logit_scale.detach().float().exp().item(), 100.0))

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.preprocess_cfg["size"]
        return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))

    def preprocess(self, images) -> torch.Tensor:
        """uint8 RGB (N,3,H,W) -> float32 (N,3,h,w) on the device, per the model's preprocess_cfg.

        Tensor ops replace open_clip's PIL transforms so that batches stay in one array; resize
        uses antialiased bicubic like PIL.
        """
        x = torch.as_tensor(images)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (N,3,H,W) RGB, got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got {x.dtype}")
        x = x.to(self.device).float().div_(255.0)
        x = _resize(x, self.image_size, self.preprocess_cfg.get("resize_mode", "shortest"),
                    self.preprocess_cfg.get("interpolation", "bicubic"),
                    float(self.preprocess_cfg.get("fill_color", 0)) / 255.0)
        mean = torch.tensor(self.preprocess_cfg["mean"], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess_cfg["std"], device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def encode_images(self, images, batch_size: int | None = None) -> torch.Tensor:
        """uint8 RGB (N,3,H,W) -> (N, embedding_dim) float32 CPU, L2-normalised."""
        step = int(batch_size or self.batch_size)
        n = len(images)
        if n == 0:
            return torch.zeros((0, self.embedding_dim), dtype=torch.float32)
        out = []
        for start in range(0, n, step):
            batch = self.preprocess(images[start:start + step])
            feats = self.model.encode_image(batch, normalize=True)
            out.append(feats.float().cpu())
        return torch.cat(out)

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        """Texts in any supported language -> (N, embedding_dim) float32 CPU, L2-normalised."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not one string")
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"encode_text: {t!r} is not a string")
        if not texts:
            return torch.zeros((0, self.embedding_dim), dtype=torch.float32)
        step = int(batch_size or self.batch_size)
        out = []
        for start in range(0, len(texts), step):
            tokens = self._trim_padding(self.tokenizer(texts[start:start + step])).to(self.device)
            feats = self.model.encode_text(tokens, normalize=True)
            out.append(feats.float().cpu())
        return torch.cat(out)


    def _trim_padding(self, tokens: torch.Tensor) -> torch.Tensor:
        """Drop the columns that are padding in every row (HF text towers only).

        The tokenizer pads to the context length (77); an HF tower masks padding out of attention
        and of its mean pooling, and positions are absolute, so the result is unchanged while a
        short query costs a fraction of the full length.
        """
        config = getattr(getattr(self.model, "text", None), "config", None)
        pad = getattr(config, "pad_token_id", None)
        if pad is None or tokens.ndim != 2:
            return tokens
        used = (tokens != pad).any(dim=0).nonzero()
        keep = int(used.max()) + 1 if used.numel() else 1
        return tokens[:, :keep]


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str, interpolation: str,
            fill: float) -> torch.Tensor:
    interp = {"bicubic": "bicubic", "bilinear": "bilinear", "random": "bicubic"}.get(interpolation)
    if interp is None:
        raise ValueError(f"unsupported preprocess interpolation {interpolation!r}")
    h, w = x.shape[-2:]
    th, tw = size

    def scaled(nh: int, nw: int) -> torch.Tensor:
        if (nh, nw) == (h, w):
            return x
        return F.interpolate(x, size=(nh, nw), mode=interp, align_corners=False,
                             antialias=True).clamp_(0.0, 1.0)

    if mode == "squash":
        return scaled(th, tw)
    if mode == "shortest":
        # Scale so that the image covers the target (torchvision Resize(short side)), centre crop.
        # Truncation and rounding as torchvision's Resize and CenterCrop do them.
        scale = max(th / h, tw / w)
        y = scaled(max(th, int(h * scale)), max(tw, int(w * scale)))
        top, left = int(round((y.shape[-2] - th) / 2.0)), int(round((y.shape[-1] - tw) / 2.0))
        return y[..., top:top + th, left:left + tw]
    if mode == "longest":
        scale = min(th / h, tw / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        y = scaled(nh, nw)
        canvas = torch.full((x.shape[0], 3, th, tw), fill, dtype=y.dtype, device=y.device)
        top, left = (th - nh) // 2, (tw - nw) // 2
        canvas[..., top:top + nh, left:left + nw] = y
        return canvas
    raise ValueError(f"unsupported preprocess resize_mode {mode!r}")
