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
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise ValueError(f"missing keys {missing}")
        if raw["backbone"] not in BACKBONES:
            raise ValueError(f"backbone {raw['backbone']!r} is not one of {sorted(BACKBONES)}")
        for key in REQUIRED_KEYS[1:]:
            if not isinstance(raw[key], int) or raw[key] <= 0:
                raise ValueError(f"{key} must be a positive integer, got {raw[key]!r}")
        if raw["d_model"] % 2 or raw["d_model"] % raw["num_heads"] or raw["a_dim"] % raw["num_heads"]:
            raise ValueError("d_model must be even and d_model and a_dim divisible by num_heads")
        return cls(
            backbone=raw["backbone"], d_model=raw["d_model"], max_len=raw["max_len"],
            encoder_layers=raw["encoder_layers"], decoder_layers=raw["decoder_layers"],
            num_heads=raw["num_heads"], h_dim=raw["h_dim"], a_dim=raw["a_dim"],
            learnable=bool(raw.get("learnable", False)),
            tie_embeddings=bool(raw.get("tie_embeddings", True)),
            prenorm=bool(raw.get("prenorm", False)),
        )

    @property
    def backbone_spec(self):
        return BACKBONES[self.backbone]
