"""Write a randomly initialised model folder of the RS-M-CLIP kind, for tests and benchmarks.

The folder has the hub repo's layout (open_clip_config.json with model_cfg and preprocess_cfg,
open_clip_model.safetensors, tokenizer files), so `load_clip(folder)` reads it through the same
code as a real RS-M-CLIP download. The XLM-RoBERTa-type tokenizer is a Unigram model trained here
with `tokenizers` on a few lines in each of RS-M-CLIP's languages: nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Short remote-sensing sentences in RS-M-CLIP's ten languages, to train the generated tokenizer.
MULTILINGUAL_LINES = [
    "new buildings appeared near the road", "a forest next to a river", "many cars in a parking lot",
    "novos edifícios apareceram perto da estrada", "uma floresta ao lado do rio", "área agrícola",
    "nuevos edificios aparecieron cerca de la carretera", "un bosque junto al río", "tierra árida",
    "de nouveaux bâtiments sont apparus près de la route", "une forêt à côté d'une rivière", "eau",
    "neue Gebäude sind an der Straße entstanden", "ein Wald neben einem Fluss", "Ackerland, Wiese",
    "nieuwe gebouwen verschenen bij de weg", "een bos naast een rivier", "parkeerplaats en water",
    "nuovi edifici sono apparsi vicino alla strada", "una foresta accanto a un fiume", "città",
    "道路附近出现了新建筑", "河边的森林", "停车场里有很多汽车", "农田和草地", "水体",
    "도로 근처에 새 건물이 나타났다", "강 옆의 숲", "주차장에 많은 자동차", "농경지와 초원", "물",
    "возле дороги появились новые здания", "лес рядом с рекой", "много машин на парковке", "вода",
    "a satellite image of buildings, road, parking lot, forest, grassland, farmland, bare land, water",
]

TINY_VISION = {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32}
TINY_TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 130}
# open_clip's xlm-roberta-base-ViT-B-32 sizes (what RS-M-CLIP is built on).
VIT_B_32 = {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32}
XLMR_BASE_TEXT = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                  "intermediate_size": 3072, "max_position_embeddings": 514, "vocab_size": 250002}
# Means and stds of OpenAI CLIP, which RS-M-CLIP keeps.
PREPROCESS_CFG = {"mean": [0.48145466, 0.4578275, 0.40821073],
                  "std": [0.26862954, 0.2613026, 0.27577711],
                  "interpolation": "bicubic", "resize_mode": "shortest"}


def write_tokenizer(folder: Path, lines=MULTILINGUAL_LINES, vocab_size: int = 400):
    """Train an XLM-RoBERTa-style Unigram tokenizer on `lines` and save it (HF files) to `folder`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]  # XLM-R's ids 0..3
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials + ["<mask>"],
                                      unk_token="<unk>", shrinking_factor=0.9)
    tok.train_from_iterator(list(lines) * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return fast


def write_generated_clip(folder, *, vision: dict = TINY_VISION, text: dict = TINY_TEXT,
                         embed_dim: int = 32, text_name: str = "generated-xlm-roberta",
                         text_config_in_folder: bool = True, seed: int = 0) -> Path:
    """Build an open_clip CustomTextCLIP with an XLM-RoBERTa text tower, random weights; save it.

    text_name becomes text_cfg.hf_model_name; with text_config_in_folder the transformers config is
    saved as the folder's config.json (how a self-contained folder resolves it), otherwise the
    loader has to find it by name (e.g. "xlm-roberta-base", like the real hub repo).
    """
    import open_clip
    from safetensors.torch import save_file
    from transformers import XLMRobertaConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(folder)
    text = dict(text)
    text.setdefault("vocab_size", len(tokenizer))
    if text["vocab_size"] < len(tokenizer):
        raise ValueError(f"text vocab_size {text['vocab_size']} < tokenizer size {len(tokenizer)}")
    hf_config = XLMRobertaConfig(pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
                                 layer_norm_eps=1e-5, **text)
    model_cfg = {"embed_dim": embed_dim, "vision_cfg": dict(vision),
                 "text_cfg": {"hf_model_name": text_name, "hf_tokenizer_name": text_name,
                              "hf_pooler_type": "mean_pooler", "hf_proj_type": "mlp"}}
    # Build from a config folder like the loader does; `model_cfg` in the saved folder keeps the name.
    cfg_dir = folder if text_config_in_folder else folder / ".textcfg"
    hf_config.save_pretrained(str(cfg_dir))
    build_cfg = json.loads(json.dumps(model_cfg))
    build_cfg["text_cfg"]["hf_model_name"] = str(cfg_dir)
    build_cfg["text_cfg"]["hf_model_pretrained"] = False
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(**build_cfg)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": PREPROCESS_CFG}, indent=2), encoding="utf-8")
    if not text_config_in_folder:
        for f in cfg_dir.iterdir():
            f.unlink()
        cfg_dir.rmdir()
    return folder
