"""rsicrc.model.clip: loading RS-M-CLIP-kind folders (tiny generated model) and encoding."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from rsicrc.model import clip as clip_textcfg
from rsicrc.model.clip import load_clip
from rsicrc.model.errors import ModelLoadError


def _copy(src, dst, drop=()):
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


def _edit_config(folder, **text_cfg):
    path = folder / "open_clip_config.json"
    cfg = json.loads(path.read_text())
    cfg["model_cfg"]["text_cfg"].update(text_cfg)
    path.write_text(json.dumps(cfg))


def test_folder_loads_with_identity(tiny_clip, tiny_clip_folder):
    weights = (tiny_clip_folder / "open_clip_model.safetensors").read_bytes()
    assert tiny_clip.sha256 == hashlib.sha256(weights).hexdigest()
    assert tiny_clip.source == str(tiny_clip_folder.resolve())
    assert tiny_clip.embedding_dim == 32
    assert tiny_clip.device == torch.device("cpu")
    assert 1.0 < tiny_clip.logit_scale <= 100.0


def test_image_embeddings_are_normalised_and_batch_invariant(tiny_clip, tile_pairs):
    before, after = tile_pairs
    one = tiny_clip.encode_images(before, batch_size=1)
    many = tiny_clip.encode_images(before, batch_size=4)
    assert one.shape == (6, 32) and one.dtype == torch.float32 and one.device.type == "cpu"
    torch.testing.assert_close(one.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(one, many, atol=1e-5, rtol=1e-4)
    changed = tiny_clip.encode_images(after)
    assert not torch.allclose(changed, many, atol=1e-3)
    assert tiny_clip.encode_images(before[:0]).shape == (0, 32)


@pytest.mark.parametrize("mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("shape", [(96, 96), (100, 140), (140, 100)])
def test_preprocess_matches_open_clip_pil_transform(tiny_clip, mode, shape):
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    cfg = dict(tiny_clip.preprocess_cfg, resize_mode=mode)
    reference = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    image = np.random.default_rng(1).integers(0, 256, size=(1, 3) + shape, dtype=np.uint8)
    saved = tiny_clip.preprocess_cfg
    tiny_clip.preprocess_cfg = cfg
    try:
        ours = tiny_clip.preprocess(image)[0]
    finally:
        tiny_clip.preprocess_cfg = saved
    ref = reference(Image.fromarray(image[0].transpose(1, 2, 0)))
    assert ours.shape == ref.shape
    # PIL rounds to uint8 between resize and normalise: one grey level is 1/255/std ~ 0.015.
    assert (ours - ref).abs().mean().item() < 0.01


@pytest.mark.parametrize("bad", [np.zeros((2, 96, 96, 3), np.uint8), np.zeros((2, 3, 96, 96), np.float32),
                                 np.zeros((3, 96, 96), np.uint8)])
def test_bad_image_arrays_are_refused(tiny_clip, bad):
    with pytest.raises(ValueError, match="images must be"):
        tiny_clip.encode_images(bad)


def test_text_in_every_script_embeds(tiny_clip, queries):
    texts = list(queries.values())
    unk = tiny_clip.tokenizer.tokenizer.unk_token_id
    for text in texts:
        ids = tiny_clip.tokenizer([text])[0].tolist()
        words = [i for i in ids if i not in (0, 1, 2)]
        # The script is tokenised into real pieces, not collapsed to <unk>.
        assert sum(i != unk for i in words) >= len(words) // 2 + 1, (text, ids)
    emb = tiny_clip.encode_text(texts, batch_size=3)
    assert emb.shape == (len(texts), 32)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(texts)))
    torch.testing.assert_close(emb, tiny_clip.encode_text(texts), atol=1e-5, rtol=1e-4)
    # Different languages give different vectors.
    sims = emb @ emb.T
    assert (sims - torch.eye(len(texts))).abs().max() < 0.99999
    assert tiny_clip.encode_text([]).shape == (0, 32)
    with pytest.raises(TypeError):
        tiny_clip.encode_text("one string")


def test_hub_id_resolves_through_offline_cache(tmp_path, tiny_clip, tiny_clip_folder, tile_pairs):
    # The Hugging Face cache layout that snapshot_download leaves behind.
    repo = tmp_path / "models--someone--tiny-rs-m-clip"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_clip_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    clip = load_clip("hf-hub:someone/tiny-rs-m-clip", device="cpu", cache_dir=str(tmp_path))
    assert clip.source == "hf-hub:someone/tiny-rs-m-clip"
    assert clip.sha256 == tiny_clip.sha256
    torch.testing.assert_close(clip.encode_images(tile_pairs[0]), tiny_clip.encode_images(tile_pairs[0]))
    bare = load_clip("someone/tiny-rs-m-clip", device="cpu", cache_dir=str(tmp_path))
    assert bare.source == "hf-hub:someone/tiny-rs-m-clip"


def test_hub_id_offline_and_not_cached_says_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_clip("hf-hub:joaodaniel/RS-M-CLIP", device="cpu", cache_dir=str(tmp_path))
    msg = str(err.value)
    assert "joaodaniel/RS-M-CLIP" in msg and "HF_HUB_OFFLINE" in msg
    assert "hf download joaodaniel/RS-M-CLIP" in msg and "folder" in msg


def test_text_config_found_by_known_name(tmp_path, tiny_clip, tiny_clip_folder, queries, monkeypatch):
    # Like the real hub repo: no config.json, hf_model_name names another repo (xlm-roberta-base).
    folder = _copy(tiny_clip_folder, tmp_path / "m", drop=["config.json"])
    _edit_config(folder, hf_model_name="tiny-known-xlmr", hf_tokenizer_name="tiny-known-xlmr")
    config = json.loads((tiny_clip_folder / "config.json").read_text())
    monkeypatch.setitem(clip_textcfg.KNOWN_TEXT_CONFIGS, "tiny-known-xlmr", config)
    clip = load_clip(str(folder), device="cpu")
    texts = [queries["ru"], queries["zh"]]
    torch.testing.assert_close(clip.encode_text(texts), tiny_clip.encode_text(texts))
    assert (folder / "open_clip_config.json").read_text().count("tiny-known-xlmr") == 2


def test_xlm_roberta_base_is_a_known_text_config():
    from transformers import XLMRobertaConfig

    cfg = XLMRobertaConfig(**clip_textcfg.KNOWN_TEXT_CONFIGS["xlm-roberta-base"])
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.pad_token_id) == (768, 12, 250002, 1)


def test_text_config_unknown_and_uncached_is_a_clear_error(tmp_path, tiny_clip_folder):
    folder = _copy(tiny_clip_folder, tmp_path / "m", drop=["config.json"])
    _edit_config(folder, hf_model_name="nobody/unknown-text-tower")
    with pytest.raises(ModelLoadError, match=r"nobody/unknown-text-tower.*config\.json"):
        load_clip(str(folder), device="cpu")


def test_text_config_is_read_from_the_hugging_face_cache_never_downloaded(tmp_path, tiny_clip_folder, monkeypatch):
    folder = _copy(tiny_clip_folder, tmp_path / "m", drop=["config.json"])
    _edit_config(folder, hf_model_name="nobody/cached-text-tower")
    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--nobody--cached-text-tower" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_bytes((tiny_clip_folder / "config.json").read_bytes())
    (cache / "models--nobody--cached-text-tower" / "refs").mkdir()
    (cache / "models--nobody--cached-text-tower" / "refs" / "main").write_text("0123abc")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("a download was tried"))
    clip = load_clip(str(folder), device="cpu", cache_dir=str(cache))
    assert clip.encode_text(["a road"]).shape[0] == 1


def test_missing_tokenizer_is_a_clear_error(tmp_path, tiny_clip_folder):
    folder = _copy(tiny_clip_folder, tmp_path / "m", drop=["tokenizer.json", "tokenizer_config.json"])
    _edit_config(folder, hf_tokenizer_name="nobody/unknown-tokenizer")
    with pytest.raises(ModelLoadError, match=r"no tokenizer files.*nobody/unknown-tokenizer"):
        load_clip(str(folder), device="cpu")


def test_folder_problems_name_the_folder(tmp_path, tiny_clip_folder):
    with pytest.raises(ModelLoadError, match="no such folder, and not a Hugging Face repo id"):
        load_clip(str(tmp_path / "does" / "not" / "exist"), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=f"{empty}.*open_clip_config.json"):
        load_clip(str(empty), device="cpu")
    no_weights = _copy(tiny_clip_folder, tmp_path / "nw", drop=["open_clip_model.safetensors"])
    with pytest.raises(ModelLoadError, match="open_clip_model.safetensors or .* missing"):
        load_clip(str(no_weights), device="cpu")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_clip(str(tiny_clip_folder / "open_clip_config.json"), device="cpu")
    bad_json = _copy(tiny_clip_folder, tmp_path / "bj")
    (bad_json / "open_clip_config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not readable JSON"):
        load_clip(str(bad_json), device="cpu")


def test_weights_of_another_shape_are_refused(tmp_path, tiny_clip_folder):
    folder = _copy(tiny_clip_folder, tmp_path / "m")
    path = folder / "open_clip_config.json"
    cfg = json.loads(path.read_text())
    cfg["model_cfg"]["embed_dim"] = 48
    path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=f"could not build RS-M-CLIP from {folder}"):
        load_clip(str(folder), device="cpu")


def test_unavailable_device_is_a_load_error(tiny_clip_folder):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(ModelLoadError, match="cuda"):
        load_clip(str(tiny_clip_folder), device="cuda")


def test_trimmed_padding_gives_the_full_length_embedding(tiny_clip, queries):
    texts = list(queries.values())
    full = tiny_clip.tokenizer(texts)
    trimmed = tiny_clip._trim_padding(full)
    assert trimmed.shape[1] < full.shape[1]
    with torch.inference_mode():
        reference = tiny_clip.model.encode_text(full, normalize=True)
    torch.testing.assert_close(tiny_clip.encode_text(texts), reference, atol=1e-5, rtol=1e-4)


def test_bare_hub_id_that_is_neither_cached_nor_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=r"not in the local Hugging Face cache.*no folder .*models/rsclip"):
        load_clip("models/rsclip", device="cpu", cache_dir=str(tmp_path / "cache"))
