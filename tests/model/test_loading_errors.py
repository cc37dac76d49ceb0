"""Every way a model source can be wrong gives a ModelLoadError that says what to do."""
import json
import os
import shutil
import socket
import threading
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rsicrc.model import ModelLoadError, load_model

REPO_ROOT = Path(__file__).resolve().parents[2]


def copy_checkpoint(src, dst):
    shutil.copytree(src, dst)
    return dst


def load_in_subprocess(source, env_extra):
    """Hub behaviour depends on environment read at import time: check it in a fresh process."""
    env = dict(os.environ, **env_extra)
    code = ("import sys\nfrom rsicrc.model import load_model, ModelLoadError\n"
            "try:\n    m = load_model(sys.argv[1], device='cpu')\nexcept ModelLoadError as e:\n"
            "    print('ERROR', e); sys.exit(3)\nprint('OK', m.sha256, m.source)\n")
    return subprocess.run([sys.executable, "-c", code, source], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO_ROOT)


def test_offline_hub_id_not_cached_says_how_to_download(tmp_path):
    out = load_in_subprocess("someone/RSICRC", {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
    assert out.returncode == 3, out.stderr
    assert "not in the local Hugging Face cache" in out.stdout
    assert "--local-dir" in out.stdout and "--model" in out.stdout
    assert "Traceback" not in out.stderr


def test_unresolvable_hub_host_is_said_at_once_for_both_models(tmp_path):
    """No retries against a host that does not even resolve (".invalid" never does, RFC 6761):
    the one resolver says so, with the same advice for RSICRC and RS-M-CLIP."""
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "https://hub.rsicrc-test.invalid", "HF_HOME": str(tmp_path)}
    out = load_in_subprocess("someone/RSICRC", env)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "hub.rsicrc-test.invalid does not resolve" in out.stdout
    assert "hf download someone/RSICRC" in out.stdout and "--model /path/to/RSICRC" in out.stdout
    code = ("import sys\nfrom rsicrc.model.clip import load_clip\nfrom rsicrc.model import ModelLoadError\n"
            "try:\n    load_clip('hf-hub:someone/RS-M-CLIP', device='cpu')\nexcept ModelLoadError as e:\n"
            "    print('ERROR', e); sys.exit(3)\n")
    clip = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env), capture_output=True,
                          text=True, timeout=300, cwd=REPO_ROOT)
    assert clip.returncode == 3, clip.stdout + clip.stderr
    assert "hub.rsicrc-test.invalid does not resolve" in clip.stdout
    assert "hf download someone/RS-M-CLIP --local-dir RS-M-CLIP" in clip.stdout
    assert "--clip-model /path/to/RS-M-CLIP" in clip.stdout


@pytest.fixture
def recording_endpoint():
    """A loopback 'hub' that records each request line and answers none; yields (url, requests)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    requests, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:  # timeout, or closed
                continue
            with conn:
                conn.settimeout(5)
                try:
                    requests.append(conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1"))
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", requests
    stop.set()
    thread.join(timeout=5)
    server.close()


def hub_cache_with(tmp_path, checkpoint):
    # The layout huggingface_hub itself keeps: refs/main names a snapshot folder of the files.
    repo = tmp_path / "hub" / "models--someone--RSICRC"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    copy_checkpoint(checkpoint, repo / "snapshots" / commit)
    return tmp_path / "hub"


def test_offline_hub_id_loads_from_cache(tmp_path, small_checkpoint):
    cache = hub_cache_with(tmp_path, small_checkpoint)
    out = load_in_subprocess("someone/RSICRC", {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)})
    assert out.returncode == 0, out.stdout + out.stderr
    from rsicrc.model.loading import sha256_of
    assert out.stdout.split()[1] == sha256_of(small_checkpoint / "pytorch_model.bin")


def test_cached_hub_id_loads_without_asking_the_hub(tmp_path, small_checkpoint, recording_endpoint):
    url, requests = recording_endpoint
    cache = hub_cache_with(tmp_path, small_checkpoint)
    out = load_in_subprocess("someone/RSICRC", {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": url,
                                                "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_CACHE": str(cache)})
    assert out.returncode == 0, out.stdout + out.stderr
    # (huggingface_hub may fetch its user-agent registry; no model file may be asked for)
    assert not [r for r in requests if "someone/RSICRC" in r], requests


def test_records_sha256(small_checkpoint):
    import hashlib
    model = load_model(str(small_checkpoint), device="cpu")
    assert model.sha256 == hashlib.sha256((small_checkpoint / "pytorch_model.bin").read_bytes()).hexdigest()


@pytest.mark.parametrize("missing", ["config.json", "levir_vocab.json", "pytorch_model.bin"])
def test_missing_file_is_named(tmp_path, small_checkpoint, missing):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    (folder / missing).unlink()
    with pytest.raises(ModelLoadError, match=f"{missing} missing"):
        load_model(str(folder), device="cpu")


def test_not_a_folder_nor_a_hub_id(tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model(str(tmp_path / "nowhere" / "deeper"), device="cpu")
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not a folder"):
        load_model(str(f), device="cpu")


def test_checkpoint_that_does_not_fit_the_config_lists_keys(tmp_path, small_checkpoint):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    del state["encoder.Conv1.bias"]
    state["encoder.extra.weight"] = torch.zeros(2)
    state["encoder.att_pool_norm.weight"] = torch.zeros(3)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    msg = str(info.value)
    assert "does not fit config.json" in msg
    assert "missing keys: encoder.Conv1.bias" in msg
    assert "unexpected keys: encoder.extra.weight" in msg
    assert "encoder.att_pool_norm.weight (file (3,), config (64,))" in msg


def test_config_of_another_size(tmp_path, small_checkpoint):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["d_model"] = 128
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="shape mismatches"):
        load_model(str(folder), device="cpu")


def test_vocabulary_size_mismatch(tmp_path, small_checkpoint):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    vocab = json.loads((folder / "levir_vocab.json").read_text())
    vocab["zebra"] = len(vocab)
    (folder / "levir_vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ModelLoadError, match="has 49 words but .* trained with 48"):
        load_model(str(folder), device="cpu")


def test_bad_config_and_vocab_files(tmp_path, small_checkpoint):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json: not readable JSON"):
        load_model(str(folder), device="cpu")
    shutil.copy(small_checkpoint / "config.json", folder / "config.json")
    (folder / "levir_vocab.json").write_text(json.dumps({"a": 0}))
    with pytest.raises(ModelLoadError, match="special tokens"):
        load_model(str(folder), device="cpu")


def test_corrupt_weights(tmp_path, small_checkpoint):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    (folder / "pytorch_model.bin").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelLoadError, match="not a loadable weights-only PyTorch checkpoint"):
        load_model(str(folder), device="cpu")


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path, small_checkpoint):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    torch.save({"x": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="weights-only"):
        load_model(str(folder), device="cpu")


def test_bad_device_and_dtype(small_checkpoint):
    with pytest.raises(ModelLoadError, match="unknown device"):
        load_model(str(small_checkpoint), device="tpu9")
    with pytest.raises(ModelLoadError, match="fp16 runs only on a GPU"):
        load_model(str(small_checkpoint), device="cpu", dtype="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            load_model(str(small_checkpoint), device="cuda")


def test_bf16_on_a_cpu_without_bf16_instructions_is_refused(small_checkpoint, monkeypatch):
    from rsicrc.model import device as dev

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    assert not dev.cpu_has_bf16()
    with pytest.raises(ModelLoadError, match="needs bf16 instructions"):
        load_model(str(small_checkpoint), device="cpu", dtype="bf16")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert dev.cpu_has_bf16()


@pytest.mark.skipif(not __import__("rsicrc.model.device", fromlist=["x"]).cpu_has_bf16(),
                    reason="this CPU has no bf16 instructions")
def test_bf16_on_a_cpu_with_bf16_instructions_runs_close_to_fp32(small_checkpoint):
    fp32 = load_model(str(small_checkpoint), device="cpu")
    bf16 = load_model(str(small_checkpoint), device="cpu", dtype="bf16")
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    assert next(bf16.net.parameters()).dtype == torch.bfloat16
    g = torch.Generator().manual_seed(3)
    images = [fp32.preprocess(torch.randint(0, 256, (3, 3, 96, 96), dtype=torch.uint8, generator=g))
              for _ in range(2)]
    want, got = fp32.describe_pairs(*images), bf16.describe_pairs(*images)
    assert got.embeddings.dtype == torch.float32 and got.change_scores.dtype == torch.float32
    cosine = (got.embeddings * want.embeddings).sum(-1)  # both L2-normalised
    assert float(cosine.min()) > 0.9, cosine  # generated weights: bf16 moves some pairs by a few per cent
    assert len(got.captions) == 3


def test_a_folder_source_is_recorded_absolute(small_checkpoint, monkeypatch):
    monkeypatch.chdir(small_checkpoint.parent)
    model = load_model(small_checkpoint.name, device="cpu")
    assert model.source == str(small_checkpoint.resolve())


# -- hostile config.json: refused with the file and the key named, before any network is built --

def _refuse_network(monkeypatch):
    """Fail the test if a network is built: a hostile config must be refused before that."""
    import rsicrc.model.loading as loading

    def built(*args, **kwargs):
        raise AssertionError("a network was built for a config.json that should be refused")

    monkeypatch.setattr(loading, "RsicrcNet", built)


def _assert_one_line_naming(msg, path, *words):
    assert "\n" not in msg
    assert str(path) in msg, msg
    for word in words:
        assert word in msg, msg


@pytest.mark.parametrize("content, expected", [
    ("null", "got null"), ("[1, 2]", "got a list"), ("[]", "got a list"), ("3", "got a number"),
    ('"RN50"', "got a string"), ("true", "got a boolean")])
def test_config_that_is_not_an_object(tmp_path, small_checkpoint, monkeypatch, content, expected):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    (folder / "config.json").write_text(content)
    _refuse_network(monkeypatch)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    _assert_one_line_naming(str(info.value), folder / "config.json", "expected a JSON object", expected)


def _refused_config(tmp_path, checkpoint, monkeypatch, key, value):
    """(message, config.json path) of the ModelLoadError for a copy of `checkpoint` whose config
    has `key` set to `value`; the network must never be built for it."""
    folder = copy_checkpoint(checkpoint, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    _refuse_network(monkeypatch)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    return str(info.value), folder / "config.json"


SIZE_KEYS = ["d_model", "max_len", "encoder_layers", "decoder_layers", "num_heads", "h_dim", "a_dim"]
BAD_SIZES = [2 ** 40, 10 ** 6, 0, -64, 64.0, 1.5, "64", True, False, None, [64], {"v": 64}]


@pytest.mark.parametrize("key", SIZE_KEYS)
@pytest.mark.parametrize("value", BAD_SIZES, ids=repr)
def test_config_with_a_bad_size(tmp_path, small_checkpoint, monkeypatch, key, value):
    message, config = _refused_config(tmp_path, small_checkpoint, monkeypatch, key, value)
    _assert_one_line_naming(message, config, f"{key} must be an integer from 1 to")


@pytest.mark.parametrize("value", [["RN50"], {"name": "RN50"}, 5, None, True, "RN51", "rn50"], ids=repr)
def test_config_with_a_bad_backbone(tmp_path, small_checkpoint, monkeypatch, value):
    message, config = _refused_config(tmp_path, small_checkpoint, monkeypatch, "backbone", value)
    _assert_one_line_naming(message, config, "backbone must be one of",
                            "'RN50'", "'ViT-B-32'")


@pytest.mark.parametrize("key", ["learnable", "tie_embeddings", "prenorm"])
@pytest.mark.parametrize("value", ["false", "true", 0, 1, None, []], ids=repr)
def test_config_with_a_flag_that_is_not_a_boolean(tmp_path, small_checkpoint, monkeypatch, key, value):
    """bool("false") is True: a string flag would silently build another network (prenorm)."""
    message, config = _refused_config(tmp_path, small_checkpoint, monkeypatch, key, value)
    _assert_one_line_naming(message, config, f"{key} must be true or false")


@pytest.mark.parametrize("change, words", [
    ({"d_model": 63, "num_heads": 1, "a_dim": 63}, ["d_model must be even"]),
    ({"num_heads": 3}, ["d_model (64)", "num_heads (3)"]),
    ({"a_dim": 66}, ["a_dim (66)", "num_heads (4)"])])
def test_config_sizes_that_do_not_divide(tmp_path, small_checkpoint, monkeypatch, change, words):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(change)
    (folder / "config.json").write_text(json.dumps(cfg))
    _refuse_network(monkeypatch)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    _assert_one_line_naming(str(info.value), folder / "config.json", *words)


def test_released_and_parity_configs_stay_valid():
    from parity_recipe import CASE_NAMES, load_case
    from rsicrc.model.config import RsicrcConfig

    released = {"backbone": "RN50", "d_model": 2048, "max_len": 41, "encoder_layers": 3,
                "decoder_layers": 1, "num_heads": 8, "h_dim": 512, "a_dim": 2048, "dropout": 0.1,
                "learnable": False, "fine_tune": True, "tie_embeddings": True, "prenorm": False,
                "s-transformers": "sentence-transformers/msmarco-distilbert-cos-v5",
                "s-threshold": 1.0, "fna": True}
    cfg = RsicrcConfig.from_dict(released)
    assert (cfg.backbone, cfg.d_model, cfg.max_len, cfg.encoder_layers, cfg.decoder_layers,
            cfg.num_heads, cfg.h_dim, cfg.a_dim) == ("RN50", 2048, 41, 3, 1, 8, 512, 2048)
    assert (cfg.learnable, cfg.tie_embeddings, cfg.prenorm) == (False, True, False)
    assert len(CASE_NAMES) >= 4
    for name in CASE_NAMES:
        raw = load_case(name)["config"]
        cfg = RsicrcConfig.from_dict(raw)
        for key in ("backbone", "d_model", "max_len", "encoder_layers", "decoder_layers",
                    "num_heads", "h_dim", "a_dim"):
            assert getattr(cfg, key) == raw[key], (name, key)
        for key, default in (("learnable", False), ("tie_embeddings", True), ("prenorm", False)):
            assert getattr(cfg, key) is raw.get(key, default), (name, key)
    # The flags may be left out: their defaults are the released model's.
    bare = {k: v for k, v in released.items() if k not in ("learnable", "tie_embeddings", "prenorm")}
    assert RsicrcConfig.from_dict(bare) == RsicrcConfig.from_dict(released)


# -- weights --------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["all-nan", "one-nan", "one-inf", "two-bad"])
def test_non_finite_weights_are_refused(tmp_path, small_checkpoint, how):
    """NaN/Inf weights load and caption "PAD PAD ...": refused, naming the first such tensor."""
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    keys = [k for k, v in state.items() if v.is_floating_point()]
    first, later = keys[len(keys) // 3], keys[2 * len(keys) // 3]
    if how == "all-nan":
        state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                 for k, v in state.items()}
        first = keys[0]
    elif how == "one-nan":
        state[first].view(-1)[-1] = float("nan")
    elif how == "one-inf":
        state[first].view(-1)[0] = float("-inf")
    else:
        state[later].view(-1)[0] = float("inf")
        state[first].view(-1)[0] = float("nan")
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    msg = str(info.value)
    _assert_one_line_naming(msg, folder / "pytorch_model.bin", f": {first} holds non-finite values")
    assert ("Inf)" if how == "one-inf" else "NaN") in msg
    if how == "two-bad":
        assert "(and 1 more tensors)" in msg and later not in msg


def test_legacy_non_zip_checkpoint_loads_like_the_zip_one(tmp_path, small_checkpoint):
    """torch.save(..., _use_new_zipfile_serialization=False) cannot be memory-mapped: it is
    read without mmap (still weights_only) and gives the very same tokens."""
    from parity_recipe import load_case, pair_inputs

    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert (folder / "pytorch_model.bin").read_bytes()[:4] != b"PK\x03\x04"
    case = load_case("rn50-small")
    before, after = (torch.from_numpy(x) for x in pair_inputs(case))
    legacy = load_model(str(folder), device="cpu")
    tokens = legacy.generate(before, after)
    assert tokens == case["expected"]["token_ids"]
    assert tokens == load_model(str(small_checkpoint), device="cpu").generate(before, after)


def test_legacy_checkpoint_with_bad_tensors_is_still_checked(tmp_path, small_checkpoint):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    del state["encoder.Conv1.bias"]
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(ModelLoadError, match="missing keys: encoder.Conv1.bias"):
        load_model(str(folder), device="cpu")
    state = torch.load(small_checkpoint / "pytorch_model.bin", weights_only=True)
    state["encoder.Conv1.bias"][0] = float("nan")
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(ModelLoadError, match="encoder.Conv1.bias holds non-finite values"):
        load_model(str(folder), device="cpu")


def test_corrupt_non_zip_weights_say_both_ways_failed(tmp_path, small_checkpoint):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02this is not a checkpoint")
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    _assert_one_line_naming(str(info.value), folder / "pytorch_model.bin",
                            "not a loadable weights-only PyTorch checkpoint (not a zip archive")


class MarkerPayload:
    """Unpickling this would create a file: the proof that no code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_code_in_the_pickle_never_runs(tmp_path, small_checkpoint, zipped):
    """Neither the mmap read nor the legacy fallback unpickles anything but tensors."""
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    marker = tmp_path / "ran"
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["x"] = MarkerPayload(marker)
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=zipped)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    _assert_one_line_naming(str(info.value), folder / "pytorch_model.bin", "weights-only")
    assert not marker.exists()


@pytest.mark.parametrize("how, why", [
    ("int64", "encoder.Conv1.weight (int64, not floating-point)"),
    ("bool", "encoder.Conv1.weight (bool, not floating-point)"),
    ("complex64", "encoder.Conv1.weight (complex64, not floating-point)"),
    ("sparse", "encoder.Conv1.weight (sparse_coo layout, not dense)"),
    ("meta", "encoder.Conv1.weight (on device meta, holds no readable data)"),
    ("quantized", "encoder.Conv1.weight (quantized)")])
@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's notes on sparse and quantized files
def test_tensors_that_cannot_be_weights(tmp_path, small_checkpoint, how, why):
    """Right name and shape, wrong kind of tensor: named, not a traceback from load_state_dict
    or the finiteness check (and no imaginary parts silently dropped)."""
    if how == "quantized" and not hasattr(torch, "quantize_per_tensor"):
        pytest.skip("this torch no longer makes quantized tensors")
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    w = state["encoder.Conv1.weight"]
    state["encoder.Conv1.weight"] = {
        "int64": lambda: w.long(), "bool": lambda: w > 0, "complex64": lambda: w.to(torch.complex64),
        "sparse": lambda: w.to_sparse(), "meta": lambda: w.to("meta"),
        "quantized": lambda: torch.quantize_per_tensor(w, 0.1, 0, torch.qint8)}[how]()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    _assert_one_line_naming(str(info.value), folder / "pytorch_model.bin",
                            "tensors that cannot be these weights", why)


def test_half_and_double_weights_still_load(tmp_path, small_checkpoint):
    """Another floating-point precision is no hostile file: the weights are cast as before."""
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["encoder.Conv1.weight"] = state["encoder.Conv1.weight"].double()
    state["encoder.Conv1.bias"] = state["encoder.Conv1.bias"].half()
    torch.save(state, folder / "pytorch_model.bin")
    model = load_model(str(folder), device="cpu")
    assert model.net.encoder.Conv1.weight.dtype == torch.float32


@pytest.mark.parametrize("content", [torch.zeros(3), [torch.zeros(3)], {"decoder.tokens_embed.weight": [1]}, 7],
                         ids=["tensor", "list", "dict-of-list", "number"])
def test_checkpoint_that_is_not_a_state_dict(tmp_path, small_checkpoint, content):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "m")
    torch.save(content, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    _assert_one_line_naming(str(info.value), folder / "pytorch_model.bin", "expected a state dict of tensors")
