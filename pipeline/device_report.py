"""`rsicrc device`: which device the worker will use, and why not the GPU when there is one.

"Is my GPU used?" is the second most common question about deep-learning plugins. The answer is
made in two steps so that it can be tested without a GPU: `gather_facts()` asks torch and the
machine (nvidia-smi, /proc/driver/nvidia/version), `build_report(facts)` is pure and turns the
facts into the device, its name and memory, or the reason for the CPU, a warning when an NVIDIA
GPU is present but torch cannot use it, and the command that fixes it.
"""
import platform
import sys
import warnings
from pathlib import PurePosixPath, PureWindowsPath

from .environment.nvidia import NVIDIA_PROC, driver_major, min_driver, nvidia_facts
from .environment.torch_build import NoTorchBuild, choose_torch_build

def gather_facts(requested="auto"):
    """Everything build_report needs, from torch and the machine."""
    facts = {"requested": requested, "platform": sys.platform, "machine": platform.machine(),
             "python": sys.executable, "nvidia": nvidia_facts()}
    try:
        import torch
    except Exception as exc:  # a broken install: report it rather than fail
        facts["torch_error"] = f"{type(exc).__name__}: {exc}"
        return facts
    from ..model.device import resolve_device

    facts["torch"] = torch.__version__
    facts["torch_cuda"] = torch.version.cuda
    try:
        import torchvision

        facts["torchvision"] = torchvision.__version__
    except Exception:
        facts["torchvision"] = None
    with warnings.catch_warnings(record=True) as caught:  # torch says why CUDA failed only here
        warnings.simplefilter("always")
        facts["cuda_available"] = bool(torch.cuda.is_available())
    facts["cuda_warning"] = " ".join(str(w.message).strip() for w in caught) or None
    facts["cuda_devices"] = []
    if facts["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            facts["cuda_devices"].append({"name": props.name, "memory_bytes": int(props.total_memory)})
    mps = getattr(torch.backends, "mps", None)
    facts["mps_built"] = bool(mps is not None and mps.is_built())
    facts["mps_available"] = bool(mps is not None and mps.is_available())
    try:  # the worker's own choice, so the report cannot drift from what caption does
        facts["resolved"] = str(resolve_device(requested))
    except ValueError as exc:
        facts["resolve_error"] = str(exc)
        return facts
    from ..model.device import matmul_rates

    facts["matmul_gflops"] = matmul_rates(facts["resolved"])
    return facts


def precision_advice(rates):
    """Whether --precision bf16 would pay on this device, from measured matrix-product rates
    ({"fp32": GFLOP/s, "bf16": ...}): a dict for the report, with the sentence a user reads."""
    from ..model.device import BF16_PAYS_AT

    fp32, bf16 = (rates or {}).get("fp32"), (rates or {}).get("bf16")
    if not fp32:
        return None
    advice = {"fp32_gflops": fp32, "bf16_gflops": bf16, "bf16_speedup": None, "bf16_pays": False}
    if not bf16:
        advice["text"] = f"bf16: not available here (fp32 matrix products {fp32:.0f} GFLOP/s); keep fp32"
        return advice
    speedup = bf16 / fp32
    advice.update(bf16_speedup=round(speedup, 2), bf16_pays=speedup >= BF16_PAYS_AT)
    measured = f"bf16 matrix products {bf16:.0f} GFLOP/s, {speedup:.1f}x fp32's {fp32:.0f}"
    if advice["bf16_pays"]:
        advice["text"] = (f"bf16 would pay here ({measured}): --precision bf16 is faster but lossy (a few captions "
                          "differ, see the README's speed table); fp32 stays the default")
    else:
        advice["text"] = f"bf16 would not pay here ({measured}); keep fp32"
    return advice


def _base_version(version):
    return (version or "").split("+", 1)[0]


def _cuda_fix(facts):
    """How to put the CUDA build that fits this driver and GPU (torch_build.py) into the worker's
    environment: the set-up again, asked for CUDA; or why there is no such build."""
    try:
        build = choose_torch_build("cuda", facts.get("platform") or sys.platform, facts.get("machine") or "",
                                   facts.get("nvidia") or {})
    except NoTorchBuild as exc:
        return str(exc)
    flavour = PureWindowsPath if facts.get("platform") == "win32" else PurePosixPath
    python = flavour(facts.get("python") or "python")
    venv = python.parent.parent if python.parent.name in ("bin", "Scripts") else python.parent
    return (f'Run "Set up environment" again, or in the folder that holds the plugin\'s rsicrc folder: python3 -m '
            f'rsicrc setup --venv "{venv}" --torch cuda (it installs the {build.name} build)')


def _nvidia_present(nvidia):
    return bool(nvidia.get("smi") or nvidia.get("proc"))


def _gpu_text(nvidia):
    gpus = nvidia.get("gpus") or []
    what = ", ".join(gpus) if gpus else "an NVIDIA GPU"
    return what + (f" (driver {nvidia['driver']})" if nvidia.get("driver") else "")


def _no_gpu_reason(facts):
    """Why the CPU: (reason, warning, fix); warning/fix only when a GPU sits unused."""
    nvidia = facts.get("nvidia") or {}
    cuda = facts.get("torch_cuda")
    if _nvidia_present(nvidia):
        gpu = _gpu_text(nvidia)
        if not cuda:
            reason = f"this torch ({facts.get('torch')}) is a CPU-only build"
            return reason, f"{gpu} is present, but {reason}, so rsicrc runs on the CPU.", _cuda_fix(facts)
        need = min_driver(int(cuda.split(".")[0]), facts.get("platform")) if cuda.split(".")[0].isdigit() else None
        have = driver_major(nvidia.get("driver"))
        told = facts.get("cuda_warning")
        if need and have is not None and have < need:
            reason = f"the NVIDIA driver {nvidia['driver']} is too old for torch's CUDA {cuda} (needs {need} or newer)"
            fix = (f"Update the NVIDIA driver to {need} or newer (https://www.nvidia.com/Download/index.aspx), "
                   "then check again")
        else:
            reason = f"torch (CUDA {cuda}) cannot initialise CUDA" + (f": {told}" if told else "")
            fix = ("Check that `nvidia-smi` works in the same session QGIS runs in (a driver installed but not "
                   "loaded needs a reboot), then check again")
        return reason, f"{gpu} is present, but {reason}; rsicrc runs on the CPU.", fix
    if facts.get("platform") == "darwin":
        if not facts.get("mps_built"):
            return f"this torch ({facts.get('torch')}) has no Apple MPS support", None, None
        return "Apple's MPS backend is not available (it needs Apple silicon and macOS 12.3 or later)", None, None
    where = "nvidia-smi is not on PATH" + ("" if facts.get("platform") == "win32" else f" and {NVIDIA_PROC} is missing")
    reason = f"no NVIDIA driver found ({where})"
    if not cuda:
        reason += f"; this torch ({facts.get('torch')}) is a CPU-only build anyway"
    return reason, None, None


def build_report(facts):
    """The device the worker will use for facts["requested"], as one JSON-able dict."""
    report = {"requested": facts.get("requested", "auto"), "device": None, "name": None, "memory_bytes": None,
              "reason": None, "warning": None, "fix": None, "error": None, "torch": facts.get("torch"),
              "torch_cuda": facts.get("torch_cuda"), "python": facts.get("python"),
              "nvidia": {k: (facts.get("nvidia") or {}).get(k) for k in ("smi", "proc", "gpus", "driver")}}
    if facts.get("torch_error"):
        report["error"] = f"torch cannot be imported ({facts['torch_error']}): use \"Set up environment\""
        return report
    if facts.get("resolve_error"):
        report["error"] = facts["resolve_error"]
        report["reason"], report["warning"], report["fix"] = _no_gpu_reason(facts)
        return report
    resolved = facts.get("resolved", "cpu")
    kind, _, index = resolved.partition(":")
    report["device"] = resolved
    report["precision"] = precision_advice(facts.get("matmul_gflops"))
    if kind == "cuda":
        devices = facts.get("cuda_devices") or []
        number = int(index) if index.isdigit() else 0
        chosen = devices[number] if number < len(devices) else {}
        report["name"] = chosen.get("name")
        report["memory_bytes"] = chosen.get("memory_bytes")
    elif kind == "mps":
        report["name"] = "Apple GPU (MPS)"
    else:
        report["name"] = "CPU"
        if report["requested"] == "cpu":
            report["reason"] = "the CPU was chosen in the settings"
            gpu_unused = facts.get("cuda_available") or facts.get("mps_available")
            if gpu_unused:
                report["warning"] = "A GPU is available to torch; choose auto to use it."
        else:
            report["reason"], report["warning"], report["fix"] = _no_gpu_reason(facts)
    return report


def format_device_report(report):
    """The report as a few lines for a terminal (or a label)."""
    if report.get("device") is None:
        lines = [f"error: {report.get('error')}"]
        if report.get("reason"):
            lines.append(f"no GPU because {report['reason']}")
    else:
        line = f"device: {report['device']}"
        if report.get("name") and report["name"] != "CPU":
            line += f" ({report['name']}"
            if report.get("memory_bytes"):
                line += f", {report['memory_bytes'] / 2**30:.1f} GiB"
            line += ")"
        lines = [line]
        if report.get("reason"):
            lines.append(f"why not a GPU: {report['reason']}")
        if report.get("precision"):
            lines.append(report["precision"]["text"])
    if report.get("warning"):
        lines.append(f"warning: {report['warning']}")
    if report.get("fix"):
        lines.append(f"fix: {report['fix']}")
    lines.append(f"torch {report.get('torch') or '-'} (CUDA {report.get('torch_cuda') or 'none'}) "
                 f"in {report.get('python') or '-'}")
    return "\n".join(lines)
