"""`rsicrc device`: the report logic from injected facts (no GPU here), and the real command."""
import json
import subprocess
import sys

import pytest

from rsicrc.pipeline.device_report import build_report, format_device_report, gather_facts
from rsicrc.pipeline.environment.nvidia import nvidia_facts

NO_NVIDIA = {"smi": None, "proc": False, "gpus": [], "driver": None}
H200 = {"smi": "/usr/bin/nvidia-smi", "proc": True, "gpus": ["NVIDIA H200"], "driver": "580.65.06"}


def facts(**over):
    base = {"requested": "auto", "platform": "linux", "python": "/env/bin/python", "nvidia": NO_NVIDIA,
            "torch": "2.14.1+cu130", "torch_cuda": "13.0", "torchvision": "0.29.1+cu130",
            "cuda_available": False, "cuda_warning": None, "cuda_devices": [], "mps_built": False,
            "mps_available": False, "resolved": "cpu"}
    base.update(over)
    return base


def test_cuda_device_with_name_and_memory():
    r = build_report(facts(nvidia=H200, cuda_available=True, resolved="cuda",
                           cuda_devices=[{"name": "NVIDIA H200", "memory_bytes": 150_000_000_000}]))
    assert (r["device"], r["name"], r["memory_bytes"]) == ("cuda", "NVIDIA H200", 150_000_000_000)
    assert r["reason"] is None and r["warning"] is None and r["fix"] is None
    assert format_device_report(r).splitlines()[0] == "device: cuda (NVIDIA H200, 139.7 GiB)"


def test_second_cuda_device_is_named():
    devices = [{"name": "GPU A", "memory_bytes": 1}, {"name": "GPU B", "memory_bytes": 2}]
    r = build_report(facts(cuda_available=True, resolved="cuda:1", requested="cuda:1", cuda_devices=devices))
    assert (r["device"], r["name"], r["memory_bytes"]) == ("cuda:1", "GPU B", 2)


def test_nvidia_gpu_with_cpu_only_torch_says_which_command_fixes_it():
    """PyPI's Windows torch wheel is CPU-only: the GPU sits unused."""
    r = build_report(facts(platform="win32", nvidia=H200, torch="2.14.1+cpu", torch_cuda=None,
                           torchvision="0.29.1+cpu", python=r"C:\rsicrc\venv\Scripts\python.exe"))
    assert r["device"] == "cpu" and "CPU-only build" in r["reason"]
    assert "NVIDIA H200 (driver 580.65.06) is present" in r["warning"]
    assert r["fix"].endswith('python3 -m rsicrc setup --venv "C:\\rsicrc\\venv" --torch cuda (it installs the cu130 '
                             "build)"), r["fix"]


def test_driver_too_old_for_torchs_cuda():
    old = dict(H200, driver="535.183.01")
    r = build_report(facts(nvidia=old, cuda_warning="CUDA initialization: The NVIDIA driver on your system "
                                                    "is too old (found version 12020)."))
    assert r["device"] == "cpu"
    assert "driver 535.183.01 is too old for torch's CUDA 13.0 (needs 580 or newer)" in r["reason"]
    assert r["warning"].startswith("NVIDIA H200 (driver 535.183.01) is present") and "580" in r["fix"]


def test_cuda_fails_for_another_reason_passes_torchs_words_on():
    r = build_report(facts(nvidia={"smi": None, "proc": True, "gpus": [], "driver": "580.1"},
                           cuda_warning="CUDA unknown error - this may be due to an incorrectly set up environment"))
    assert "cannot initialise CUDA: CUDA unknown error" in r["reason"]
    assert r["warning"].startswith("an NVIDIA GPU (driver 580.1) is present") and "nvidia-smi" in r["fix"]


def test_no_nvidia_driver_is_the_reason():
    r = build_report(facts())
    assert r["device"] == "cpu" and r["warning"] is None and r["fix"] is None
    assert r["reason"] == ("no NVIDIA driver found (nvidia-smi is not on PATH and "
                           "/proc/driver/nvidia/version is missing)")
    r = build_report(facts(torch="2.14.1+cpu", torch_cuda=None, platform="win32"))
    assert r["reason"] == ("no NVIDIA driver found (nvidia-smi is not on PATH); this torch (2.14.1+cpu) "
                           "is a CPU-only build anyway")


def test_apple_mps_and_its_absence():
    mac = dict(platform="darwin", torch="2.14.1", torch_cuda=None)
    r = build_report(facts(**mac, mps_built=True, mps_available=True, resolved="mps"))
    assert (r["device"], r["name"]) == ("mps", "Apple GPU (MPS)")
    r = build_report(facts(**mac, mps_built=True, mps_available=False))
    assert r["device"] == "cpu" and "Apple silicon and macOS 12.3" in r["reason"]
    assert "no Apple MPS support" in build_report(facts(**mac))["reason"]


def test_cpu_chosen_while_a_gpu_is_there():
    r = build_report(facts(requested="cpu", cuda_available=True, nvidia=H200))
    assert r["reason"] == "the CPU was chosen in the settings" and "choose auto" in r["warning"]


def test_asked_for_cuda_without_one_is_an_error():
    r = build_report(facts(requested="cuda", resolved=None,
                           resolve_error="device 'cuda' asked for, but no CUDA GPU is available"))
    assert r["device"] is None and "no CUDA GPU" in r["error"] and "no NVIDIA driver" in r["reason"]
    assert format_device_report(r).startswith("error: device 'cuda' asked for")


def test_torch_missing():
    r = build_report({"requested": "auto", "torch_error": "ModuleNotFoundError: No module named 'torch'"})
    assert r["device"] is None and "No module named 'torch'" in r["error"] and "Set up environment" in r["error"]


def test_nvidia_facts_from_proc_and_nvidia_smi(tmp_path):
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build\n"
                    "GCC version:  gcc version 12.2.0\n")
    assert nvidia_facts(which=lambda _name: None, proc_file=str(proc))["driver"] == "580.65.06"
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200, 590.10, 143771'\necho 'NVIDIA H200, 590.10, 143771'\n")
    smi.chmod(0o755)
    got = nvidia_facts(which=lambda _name: str(smi), proc_file=str(tmp_path / "absent"))
    assert got == {"smi": str(smi), "proc": False, "gpus": ["NVIDIA H200", "NVIDIA H200"], "driver": "590.10",
                   "compute_caps": [None, None]}
    broken = tmp_path / "broken-smi"
    broken.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver'\n"
                      "exit 9\n")
    broken.chmod(0o755)
    got = nvidia_facts(which=lambda _name: str(broken), proc_file=str(tmp_path / "absent"))
    assert got["gpus"] == [] and "could not communicate" in got["smi_error"]
    assert "present" in build_report(facts(nvidia=got, torch_cuda=None))["warning"]  # still a GPU machine


def test_facts_of_this_machine_match_torch():
    torch = pytest.importorskip("torch")
    got = gather_facts("auto")
    assert got["torch"] == torch.__version__ and got["cuda_available"] == torch.cuda.is_available()
    assert got["resolved"] == ("cuda" if torch.cuda.is_available() else "cpu" if not got["mps_available"] else "mps")


def test_device_command_json():
    proc = subprocess.run([sys.executable, "-m", "rsicrc", "device", "--json"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["requested"] == "auto" and report["device"] in ("cpu", "cuda", "mps")
    assert report["python"] == sys.executable
    bad = subprocess.run([sys.executable, "-m", "rsicrc", "device", "--device", "tpu"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1 and bad.stdout.startswith("error: unknown device 'tpu'")


def test_bf16_advice_comes_from_measured_rates():
    from rsicrc.pipeline.device_report import precision_advice

    fast = build_report(facts(matmul_gflops={"fp32": 150.0, "bf16": 900.0}))
    assert fast["precision"]["bf16_pays"] and fast["precision"]["bf16_speedup"] == 6.0
    assert "bf16 would pay here (bf16 matrix products 900 GFLOP/s, 6.0x fp32's 150)" in format_device_report(fast)
    emulated = precision_advice({"fp32": 150.0, "bf16": 20.0})
    assert not emulated["bf16_pays"] and emulated["text"].startswith("bf16 would not pay here")
    assert "not available" in precision_advice({"fp32": 150.0, "bf16": None})["text"]
    assert precision_advice(None) is None and build_report(facts())["precision"] is None


def test_the_device_command_measures_both_formats():
    proc = subprocess.run([sys.executable, "-m", "rsicrc", "device", "--json", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    advice = json.loads(proc.stdout.strip().splitlines()[-1])["precision"]
    assert advice["fp32_gflops"] > 1 and advice["text"].startswith("bf16")
    assert (advice["bf16_speedup"] is None) == (advice["bf16_gflops"] is None)
