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
        return "model_type" in json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def resolve_text_config(name: str, folder: Path, scratch: Path, *, cache_dir: str | None = None,
                        offline: bool = True) -> Path:
    """A folder holding `config.json` for the text tower named `name` of the model in `folder`.

    In order: `name` is itself such a folder (absolute or relative to `folder`); `folder` holds the
    text config (`config.json` with a model_type); `name` is a known public architecture (written to
    `scratch`); the Hugging Face cache (or hub when online) has it (copied to `scratch`).
    """
    for candidate in (Path(name).expanduser(), folder / name):
        if candidate.is_dir() and _is_config_dir(candidate):
            return candidate
    if _is_config_dir(folder):
        return folder
    if name in KNOWN_TEXT_CONFIGS:
        (scratch / "config.json").write_text(json.dumps(KNOWN_TEXT_CONFIGS[name]), encoding="utf-8")
        return scratch
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name, cache_dir=cache_dir, local_files_only=offline)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"the text tower of {folder} is the transformers model {name!r}, whose config.json is "
            f"neither in that folder nor in the local Hugging Face cache: on a machine with internet "
            f"access run `huggingface-cli download {name} config.json --local-dir tmp` and copy "
            f"tmp/config.json into {folder}") from exc
    config.save_pretrained(scratch)
    return scratch
