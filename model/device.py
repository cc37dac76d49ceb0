"""Choosing the torch device and dtype from the user's words."""
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
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' asked for, but Apple's MPS backend is not available; use 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None


def resolve_dtype(dtype, device):
    """Half precision only on a GPU; on the CPU the model always runs in float32."""
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    else:
        key = dtype.lower() if isinstance(dtype, str) else dtype
        if key not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}: use fp32, fp16 or bf16")
        chosen = DTYPES[key] or torch.float32
    if chosen != torch.float32 and device.type == "cpu":
        raise ValueError(f"{dtype} runs only on a GPU; on the CPU use fp32 (the default)")
    return chosen
