"""Shared benchmark plumbing: generated checkpoints, timing, peak memory, result files."""
import json
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))  # the parity recipe makes the checkpoints


def generated_checkpoint(case_name, cache_dir=None):
    """A checkpoint folder of a parity case (rn50-full = the released configuration)."""
    from parity_recipe import load_case, write_checkpoint

    folder = Path(cache_dir or (RESULTS / "checkpoints")) / case_name
    if not (folder / "pytorch_model.bin").is_file():
        write_checkpoint(load_case(case_name), folder)
    return folder


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def cpu_model():
    """The CPU's model name (every figure is named with it: machines differ)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine():
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(), "processor": cpu_model()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_table(title, header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = "  ".join("{:<%d}" % w for w in widths)
    print(f"\n{title}")
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*[str(x) for x in row]))


def write_result(name, payload):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = dict(payload, machine=machine(), written=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    path.write_text(json.dumps(payload, indent=1))
    print(f"wrote {path}")
    return path
