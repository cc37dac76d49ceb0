"""Find, without the network when need be, the transformers config of an open_clip HF text tower.

open_clip builds an HF text tower from `AutoConfig.from_pretrained(text_cfg["hf_model_name"])`.
For RS-M-CLIP that name is "xlm-roberta-base", a different hub repo from the CLIP checkpoint, so a
copied model folder would still need the hub. Only the architecture is read from that config (the
weights all come from the CLIP checkpoint, loaded strictly, so a wrong shape fails loudly), hence
the public architecture of the two XLM-RoBERTa sizes is kept here.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import bounded_json
from .errors import ModelLoadError

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
