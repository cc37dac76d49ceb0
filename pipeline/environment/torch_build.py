"""Which PyTorch build fits this machine, from its OS and its NVIDIA driver and GPUs.

PyPI's torch is the CUDA 13.0 build on Linux (3.3 GB with the CUDA runtime) and a CPU-only build on
Windows; pytorch.org's index has the others. CUDA 13 runs on Turing and newer GPUs (compute
capability 7.5+) with a driver of 580 or newer; CUDA 12.6 still serves older GPUs (5.0+) and
drivers from 525 (528 on Windows). Without an NVIDIA GPU, Linux gets the CPU build (no CUDA
runtime to download) and macOS the PyPI build, which uses Apple's MPS on Apple silicon.
"""
from dataclasses import dataclass

from .nvidia import driver_major, min_driver

TORCH_INDEX = "https://download.pytorch.org/whl/"
# pypi: PyPI's own build for this OS (the CUDA 13 one on Linux), where pytorch.org's index is out of reach.
TORCH_CHOICES = ("auto", "cpu", "cuda", "pypi")
# The CUDA build of PyPI's Linux torch (torch.version.cuda is "13.0" for the pinned 2.14.1).
PYPI_LINUX_CUDA = "cu130"
MIN_CAPABILITY = {"cu130": (7, 5), "cu126": (5, 0)}


class NoTorchBuild(ValueError):
    """The build asked for cannot run here (e.g. --torch cuda without an NVIDIA GPU); the message says why."""


@dataclass(frozen=True)
class TorchBuild:
    name: str  # cu130, cu126, cpu, or pypi (PyPI's own build for this OS)
    index_url: str  # where torch comes from: pytorch.org's index for the build, or None for PyPI
    device: str  # what the verification runs a tensor on: cuda, mps or cpu
    why: str  # one line for the log

    @property
    def gpu(self):
        return self.device != "cpu"


def cpu_build(platform, why):
    if platform == "darwin":  # PyPI's macOS wheel is the only one, CPU and MPS alike
        return TorchBuild("pypi", None, "cpu", why)
    return TorchBuild("cpu", TORCH_INDEX + "cpu", "cpu", why)


def _cuda_build(name, platform, why):
    on_pypi = platform == "linux" and name == PYPI_LINUX_CUDA
    return TorchBuild(name, None if on_pypi else TORCH_INDEX + name, "cuda", why)


def choose_torch_build(want, platform, machine, nvidia):
    """The TorchBuild for `want` (auto, cpu, cuda) on this OS (sys.platform), CPU (platform.machine())
    and NVIDIA facts (nvidia.nvidia_facts()); NoTorchBuild when `want` cannot be had here."""
    if want not in TORCH_CHOICES:
        raise NoTorchBuild(f"--torch must be one of {', '.join(TORCH_CHOICES)}, got {want!r}")
    if want == "pypi":
        device = "mps" if platform == "darwin" and machine.lower() in ("arm64", "aarch64") else "cpu"
        return TorchBuild("pypi", None, device, "PyPI's build, as asked")
    if platform == "darwin":
        if want == "cuda":
            raise NoTorchBuild("there is no CUDA on macOS; use --torch auto (Apple's MPS) or cpu")
        mps = want == "auto" and machine.lower() in ("arm64", "aarch64")
        return TorchBuild("pypi", None, "mps" if mps else "cpu",
                          "PyPI's macOS build" + (", on Apple's MPS" if mps else ", on the CPU"))
    if want == "cpu":
        return cpu_build(platform, "the CPU build, as asked")
    gpus, driver = nvidia.get("gpus") or [], driver_major(nvidia.get("driver"))
    if not gpus or driver is None:
        if want == "cuda":
            raise NoTorchBuild("no NVIDIA GPU with a driver was found (nvidia-smi lists none); install the NVIDIA "
                               "driver, or use --torch cpu")
        return cpu_build(platform, "no NVIDIA GPU found: the CPU build")
    caps = [tuple(c) for c in nvidia.get("compute_caps") or [] if c]
    lowest = min(caps) if caps else None
    for name, cuda_major in (("cu130", 13), ("cu126", 12)):
        if driver >= min_driver(cuda_major, platform) and (lowest is None or lowest >= MIN_CAPABILITY[name]):
            shown = f"compute capability {lowest[0]}.{lowest[1]}" if lowest else "compute capability unknown"
            return _cuda_build(name, platform, f"{', '.join(gpus)} (driver {nvidia['driver']}, {shown}): the "
                                               f"{name} build")
    needed = min_driver(12, platform)
    why = (f"the NVIDIA driver {nvidia['driver']} is older than CUDA 12.6 needs ({needed}); update it for the GPU"
           if driver < needed else f"{', '.join(gpus)} is older than any CUDA build of torch 2.14 supports")
    if want == "cuda":
        raise NoTorchBuild(why)
    return cpu_build(platform, why + ": the CPU build")
