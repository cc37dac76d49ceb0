"""The RSICRC config.json, validated, and the facts that follow from its backbone name."""
from dataclasses import dataclass

# Backbone facts: open_clip tower settings, feature channels and the side of the feature grid
# at 224 px input.
BACKBONES = {
    "RN50": dict(kind="resnet", layers=(3, 4, 6, 3), width=64, heads=32, output_dim=1024,
                 feat_dim=2048, grid=7),
    "ViT-B-32": dict(kind="vit", patch_size=32, width=768, layers=12, heads=12, output_dim=512,
                     feat_dim=768, grid=7),
    "ViT-L-14": dict(kind="vit", patch_size=14, width=1024, layers=24, heads=16, output_dim=768,
                     feat_dim=1024, grid=16),
}
IMAGE_SIZE = 224
REQUIRED_KEYS = ("backbone", "d_model", "max_len", "encoder_layers", "decoder_layers",
                 "num_heads", "h_dim", "a_dim")
# Sane upper bounds for the sizes, far above any trained RSICRC (the released model: d_model
# 2048, max_len 41, 3 encoder and 1 decoder layers, 8 heads, h_dim 512, a_dim 2048). They are
# checked before the network is built, so a hostile config.json cannot ask for a giant model.
SIZE_LIMITS = {
    "d_model": 16384,
    "max_len": 4096,
    "encoder_layers": 64,
    "decoder_layers": 64,
    "num_heads": 1024,
    "h_dim": 65536,
    "a_dim": 16384,
}
FLAGS = {"learnable": False, "tie_embeddings": True, "prenorm": False}


def _show(value, limit=60):
    """A JSON value as config.json spells it, cut short: messages stay one short line."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def validate(raw):
    """Check config.json's contents: types, bounds and the sizes' relations.

    Raises ValueError naming the bad key; the caller adds the file's path.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object with keys {', '.join(REQUIRED_KEYS)}, "
                         f"got {_json_type(raw)}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ValueError(f"missing keys {missing}")
    backbone = raw["backbone"]
    if not isinstance(backbone, str) or backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {_show(backbone)}")
    for key, limit in SIZE_LIMITS.items():
        value = raw[key]
        # bool is an int in Python but true/false is no size; 64.0 is no integer either.
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise ValueError(f"{key} must be an integer from 1 to {limit}, got {_show(value)}")
    for key in FLAGS:
        if key in raw and not isinstance(raw[key], bool):
            raise ValueError(f"{key} must be true or false, got {_show(raw[key])}")
    d_model, heads, a_dim = raw["d_model"], raw["num_heads"], raw["a_dim"]
    if d_model % 2:
        raise ValueError(f"d_model must be even, got {d_model}")
    if d_model % heads or a_dim % heads:
        raise ValueError(f"d_model ({d_model}) and a_dim ({a_dim}) must be divisible by "
                         f"num_heads ({heads})")


@dataclass(frozen=True)
class RsicrcConfig:
    backbone: str
    d_model: int
    max_len: int
    encoder_layers: int
    decoder_layers: int
    num_heads: int
    h_dim: int
    a_dim: int
    learnable: bool = False
    tie_embeddings: bool = True
    prenorm: bool = False

    @classmethod
    def from_dict(cls, raw):
        """Build from config.json contents; raises ValueError naming what is wrong."""
        validate(raw)
        return cls(**{k: raw[k] for k in REQUIRED_KEYS},
                   **{k: raw.get(k, default) for k, default in FLAGS.items()})

    @property
    def backbone_spec(self):
        return BACKBONES[self.backbone]
