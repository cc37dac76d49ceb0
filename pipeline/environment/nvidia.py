"""What NVIDIA driver and GPUs this machine has, asked of the machine (nvidia-smi,
/proc/driver/nvidia/version), never of torch: the set-up chooses torch's build from it, and
`rsicrc device` explains with it why torch does not use a GPU."""
import os
import re
import shutil
import subprocess

NVIDIA_PROC = "/proc/driver/nvidia/version"
NVIDIA_SMI_TIMEOUT_S = 15
# The oldest driver branch each CUDA major version runs on (NVIDIA's CUDA toolkit release notes,
# "minor version compatibility": 12.x needs >= 525 on Linux and 528 on Windows, 13.x >= 580).
MIN_DRIVER = {"linux": {11: 450, 12: 525, 13: 580}, "win32": {11: 452, 12: 528, 13: 580}}


def min_driver(cuda_major, platform):
    return MIN_DRIVER.get(platform, MIN_DRIVER["linux"]).get(cuda_major)


def _query(smi, fields):
    try:
        return subprocess.run([smi, f"--query-gpu={fields}", "--format=csv,noheader,nounits"], capture_output=True,
                              text=True, timeout=NVIDIA_SMI_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return exc


def _nvidia_smi(smi):
    proc = _query(smi, "name,driver_version,memory.total,compute_cap")
    if not isinstance(proc, Exception) and proc.returncode != 0:  # drivers before 510 know no compute_cap
        proc = _query(smi, "name,driver_version,memory.total")
    if isinstance(proc, Exception):
        return {"error": f"{smi} failed: {proc}"}
    if proc.returncode != 0:
        last = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
        return {"error": f"{smi}: " + (last[0] if last else f"exit code {proc.returncode}")}
    gpus, driver, caps = [], None, []
    for line in proc.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2:
            gpus.append(parts[0])
            driver = driver or parts[1]
            found = re.match(r"^(\d+)\.(\d+)$", parts[3]) if len(parts) >= 4 else None
            caps.append([int(found.group(1)), int(found.group(2))] if found else None)
    return {"gpus": gpus, "driver": driver, "compute_caps": caps}


def nvidia_facts(which=shutil.which, proc_file=NVIDIA_PROC):
    """Whether an NVIDIA driver is installed, its version and the GPUs' names and compute
    capabilities ([major, minor], None where the driver does not say)."""
    smi = which("nvidia-smi")
    facts = {"smi": smi, "proc": os.path.isfile(proc_file), "gpus": [], "driver": None, "compute_caps": []}
    if facts["proc"]:
        try:
            with open(proc_file, encoding="utf-8", errors="replace") as f:
                found = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?(\d+[.\d]*)", f.read())
            facts["driver"] = found.group(1) if found else None
        except OSError:
            pass
    if smi:
        answer = _nvidia_smi(smi)
        facts["gpus"] = answer.get("gpus", [])
        facts["compute_caps"] = answer.get("compute_caps", [])
        facts["driver"] = answer.get("driver") or facts["driver"]
        if "error" in answer:
            facts["smi_error"] = answer["error"]
    return facts


def driver_major(driver):
    found = re.match(r"(\d+)", driver or "")
    return int(found.group(1)) if found else None
