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
    with pytest.raises(ModelLoadError, match="only on a GPU"):
        load_model(str(small_checkpoint), device="cpu", dtype="bf16")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            load_model(str(small_checkpoint), device="cuda")


def test_a_folder_source_is_recorded_absolute(small_checkpoint, monkeypatch):
    monkeypatch.chdir(small_checkpoint.parent)
    model = load_model(small_checkpoint.name, device="cpu")
    assert model.source == str(small_checkpoint.resolve())
