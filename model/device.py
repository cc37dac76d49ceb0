"""Choosing the torch device and dtype from the user's words."""
import time

import torch

DTYPES = {None: None, "fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
          "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_device(device="auto"):
    """'auto' -> cuda, then mps, then cpu; anything else must name an available device."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no CUDA GPU is available; use 'cpu' or 'auto'")
    if name.startswith("cuda:") and name[5:].isdigit() and int(name[5:]) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"device {device!r} asked for, but this machine has {count} CUDA GPU"
                         f"{'' if count == 1 else 's'} (cuda:0 to cuda:{count - 1})")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' asked for, but Apple's MPS backend is not available; use 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None


def cpu_has_bf16():
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX). Without it torch emulates
    bf16 on the CPU, slower than fp32, so bf16 is refused there."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(bool(probe()) for probe in probes if probe is not None)
    except RuntimeError:
        return False


def resolve_dtype(dtype, device):
    """fp32 unless asked: fp16 and bf16 on a GPU, bf16 also on a CPU that computes it natively."""
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    else:
        key = dtype.lower() if isinstance(dtype, str) else dtype
        if key not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}: use fp32, fp16 or bf16")
        chosen = DTYPES[key] or torch.float32
    if device.type == "cpu":
        if chosen == torch.float16:
            raise ValueError("fp16 runs only on a GPU; on the CPU use fp32 (the default) or bf16")
        if chosen == torch.bfloat16 and not cpu_has_bf16():
            raise ValueError("bf16 on the CPU needs bf16 instructions (AVX512-BF16 or AMX), which this CPU "
                             "lacks (torch would emulate them, slower than fp32); use fp32 (the default)")
    return chosen


def exact_fp32(device, dtype):
    """fp32 on a CUDA GPU computed as fp32: cuDNN would run convolutions in TF32 by default (10-bit
    mantissa), and fp32 is the exact option. Process-wide, as torch's switch is."""
    if device.type != "cuda" or dtype != torch.float32:
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9: the per-backend switch
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


# A bf16 number format pays when its matrix products run this much faster than fp32's.
BF16_PAYS_AT = 1.5
PROBE_SIZE = 1024  # one product of 1024 x 1024 matrices: 2.1 GFLOP
PROBE_SECONDS = 0.1  # timed this long at least (after one untimed product), at most PROBE_MAX_PRODUCTS
PROBE_MAX_PRODUCTS = 50


def _matmul_gflops(device, dtype):
    a = torch.randn(PROBE_SIZE, PROBE_SIZE, device=device).to(dtype)
    b = torch.randn(PROBE_SIZE, PROBE_SIZE, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        torch.mm(a, b)
        sync()
        done, start = 0, time.perf_counter()
        while done < PROBE_MAX_PRODUCTS and (done == 0 or time.perf_counter() - start < PROBE_SECONDS):
            torch.mm(a, b)
            sync()
            done += 1
        seconds = time.perf_counter() - start
    return 2 * PROBE_SIZE ** 3 * done / seconds / 1e9


def matmul_rates(device):
    """Measured GFLOP/s of a matrix product on `device` per number format: {"fp32", "bf16", and
    "fp16" on a GPU}; None for a format that fails there. Measured, not read from CPU flags: a
    flag does not say how fast torch runs it (emulated bf16 is slower than fp32)."""
    device = torch.device(device)
    formats = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if device.type != "cpu":
        formats["fp16"] = torch.float16
    rates = {}
    for name, dtype in formats.items():
        try:
            rates[name] = round(_matmul_gflops(device, dtype), 1)
        except (RuntimeError, TypeError):
            rates[name] = None
    return rates
