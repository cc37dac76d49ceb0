"""The parity weight and input recipe (shared/parity/README.md), written for this test suite.

A parity case names a config, a vocabulary, the official state-dict layout and a seed; the
weights drawn here from that seed, fed the inputs drawn here, must make the official outputs
stored in the case. Keeping the recipe in the tests lets them run from a plain clone.
"""
import json
import math
from pathlib import Path

import numpy as np

CASES_DIR = Path(__file__).parent / "data" / "parity"
CASE_NAMES = sorted(p.stem for p in CASES_DIR.glob("*.json"))


def load_case(name):
    with open(CASES_DIR / f"{name}.json") as f:
        return json.load(f)


def _sinusoid_table(max_len, d):
    table = np.zeros((max_len, d), dtype=np.float32)
    pos = np.arange(max_len, dtype=np.float32)[:, None]
    div = np.exp(np.arange(0, d, 2, dtype=np.float32) * np.float32(-math.log(10000.0) / d))
    table[:, 0::2] = np.sin(pos * div)
    table[:, 1::2] = np.cos(pos * div)
    return table


def _draw(key, shape, dtype, rng, gain):
    if dtype.startswith("int"):
        return np.zeros(shape, dtype=np.int64)
    if key.endswith("running_mean"):
        return np.zeros(shape, dtype=np.float32)
    if key.endswith("running_var"):
        return np.ones(shape, dtype=np.float32)
    if key.endswith("position_encoding.pe"):
        return _sinusoid_table(shape[1], shape[2]).reshape(shape)
    if len(shape) <= 1:
        noise = rng.standard_normal(shape, dtype=np.float32)
        return (1 + 0.1 * noise) if key.endswith("weight") else 0.1 * noise
    scale = np.float32(gain / math.sqrt(int(np.prod(shape[1:]))))
    return rng.standard_normal(shape, dtype=np.float32) * scale


def state_dict_arrays(case):
    """Key -> numpy array, in manifest order; tied keys hold the very same array."""
    rng = np.random.default_rng(case["seed"])
    second_of_pair = {second: first for first, second in case.get("tied", [])}
    gain = case.get("gain", 1.0)
    arrays = {}
    for key, shape, dtype in case["manifest"]:
        if key in second_of_pair:
            arrays[key] = arrays[second_of_pair[key]]
            continue
        arr = _draw(key, tuple(shape), dtype, rng, gain)
        arrays[key] = arr if arr.dtype == np.int64 else arr.astype(np.float32)
    arrays["decoder.lm_head.weight"][case["vocab"]["END"]] *= np.float32(case.get("end_boost", 1.0))
    return arrays


def pair_inputs(case):
    spec = case["inputs"]
    rng = np.random.default_rng(spec["seed"])
    n, size = spec["n"], spec["size"]

    def image():
        coarse = rng.standard_normal((n, 3, size // 32, size // 32), dtype=np.float32)
        coarse = coarse.repeat(32, axis=2).repeat(32, axis=3)
        return coarse + np.float32(0.5) * rng.standard_normal((n, 3, size, size), dtype=np.float32)

    before = image()
    after = image()
    return before, after


def write_checkpoint(case, out_dir):
    """Write config.json, levir_vocab.json and pytorch_model.bin as the released repo lays them out."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, shared = {}, {}
    for key, arr in state_dict_arrays(case).items():
        if id(arr) not in shared:
            shared[id(arr)] = torch.from_numpy(arr)
        tensors[key] = shared[id(arr)]
    torch.save(tensors, out_dir / "pytorch_model.bin")
    (out_dir / "config.json").write_text(json.dumps(case["config"], indent=1))
    (out_dir / "levir_vocab.json").write_text(json.dumps(case["vocab"]))
    return out_dir
