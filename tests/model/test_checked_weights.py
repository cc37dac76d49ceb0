"""A weights file that passed the checks once is not read twice on a later load; any change to it
(same size, same path) is checked again."""
import json
import shutil

import pytest
import torch

from rsicrc.model import ModelLoadError, load_model, loading


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "rsicrc" / "checked-weights.json"


@pytest.fixture
def counted(monkeypatch):
    """How often each full-file check ran."""
    calls = {"sha256_of": 0, "check_finite": 0}
    for name in calls:
        real = getattr(loading, name)

        def wrapped(*args, _real=real, _name=name):
            calls[_name] += 1
            return _real(*args)
        monkeypatch.setattr(loading, name, wrapped)
    return calls


def test_a_second_load_reads_neither_the_digest_nor_the_values_again(tmp_path, small_checkpoint, cache, counted):
    folder = shutil.copytree(small_checkpoint, tmp_path / "m")
    first = load_model(str(folder), device="cpu")
    assert counted == {"sha256_of": 1, "check_finite": 1}
    assert first.sha256 == loading.sha256_of(folder / "pytorch_model.bin")
    counted.update(sha256_of=0, check_finite=0)
    again = load_model(str(folder), device="cpu")
    assert counted == {"sha256_of": 0, "check_finite": 0}
    assert again.sha256 == first.sha256
    for (name, a), (_, b) in zip(first.net.state_dict().items(), again.net.state_dict().items()):
        assert torch.equal(a, b), name
    assert list(json.loads(cache.read_text()).values()) == [first.sha256]


def test_weights_changed_in_place_are_checked_again(tmp_path, small_checkpoint, cache):
    folder = shutil.copytree(small_checkpoint, tmp_path / "m")
    weights = folder / "pytorch_model.bin"
    load_model(str(folder), device="cpu")
    state = torch.load(weights, weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() >= 16)
    data = weights.read_bytes()
    at = data.find(state[key].reshape(-1)[:16].numpy().tobytes())  # the tensor's bytes, stored as is
    assert at > 0 and data.find(state[key].reshape(-1)[:16].numpy().tobytes(), at + 1) < 0
    with open(weights, "r+b") as f:  # the same file (inode, size), one value made NaN in place
        f.seek(at)
        f.write(torch.tensor([float("nan")]).numpy().tobytes())
    with pytest.raises(ModelLoadError, match=f"{key} holds non-finite values"):
        load_model(str(folder), device="cpu")


def test_a_finite_tensor_whose_sum_overflows_is_not_refused():
    """check_finite's quick sum is only a first look: 3e38 + 3e38 is Inf, the values are finite."""
    big = torch.full((4,), 3e38)
    loading.check_finite({"w": big}, "x.bin")
    big[2] = float("nan")
    with pytest.raises(ModelLoadError, match="w holds non-finite values"):
        loading.check_finite({"w": big}, "x.bin")


def test_a_cache_folder_that_cannot_be_written_is_no_cache(tmp_path, small_checkpoint, monkeypatch, counted):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    for _ in range(2):
        model = load_model(str(small_checkpoint), device="cpu")
    assert counted == {"sha256_of": 2, "check_finite": 2}
    assert model.sha256 == loading.sha256_of(small_checkpoint / "pytorch_model.bin")
