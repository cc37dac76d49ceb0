"""Model load in a fresh process: import rsicrc.model and load the released-size folder.

What every worker start, the map tool's first click and every Ray actor pay. Each load runs in a
new Python process (the one a worker is), with the weights file already in the OS page cache
(a second load of the day, not a cold disk). Two cases:
- first load: the file was never loaded before (an empty record of checked weights), so the
  checks that read every byte (sha256 and finite values) run;
- later load: the median of several, the checks remembered (model/checked_weights.py).
Targets (issue 22): import + load <= 1.5 s, peak RSS <= 1.3x the weights file.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import cpu_model, generated_checkpoint, print_table, write_result

TARGET_S = 1.5
TARGET_RSS_RATIO = 1.3

# Run in the child: the times and the peak RSS of one import + load (ru_maxrss is this process's).
CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
import torch
from rsicrc.model import load_model
t1 = time.perf_counter()
rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
model = load_model(sys.argv[1], device="cpu")
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "total_s": t2 - t0, "sha256": model.sha256,
                  "rss_after_import_mb": rss_import,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _load_once(folder, cache_home):
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_home))
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True,
                         env=env, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(repeats=5):
    from rsicrc.model.loading import sha256_of

    folder = generated_checkpoint("rn50-full")
    weights = folder / "pytorch_model.bin"
    size_mb = weights.stat().st_size / 2**20
    expected_sha = sha256_of(weights)  # also puts the file in the page cache
    with tempfile.TemporaryDirectory(prefix="rsicrc-bench-load-") as cache_home:
        first = _load_once(folder, cache_home)
        later = [_load_once(folder, cache_home) for _ in range(repeats)]
    results = {"weights_mb": round(size_mb, 1), "repeats": repeats, "first": first, "later": later,
               "targets": {"total_s": TARGET_S, "peak_rss_ratio": TARGET_RSS_RATIO}}
    assert all(r["sha256"] == expected_sha for r in [first, *later]), "a load recorded another sha256"
    rows = []
    for name, runs in (("first load (checks run)", [first]), (f"later load (median of {repeats})", later)):
        med = {k: statistics.median(r[k] for r in runs) for k in ("import_s", "load_s", "total_s", "peak_rss_mb")}
        ratio = med["peak_rss_mb"] / size_mb
        results[name.split(" (")[0].replace(" ", "_")] = dict(med, peak_rss_ratio=ratio)
        rows.append([name, f"{med['import_s']:.2f}", f"{med['load_s']:.2f}", f"{med['total_s']:.2f}",
                     f"{med['peak_rss_mb']:.0f}", f"{ratio:.2f}x",
                     "yes" if med["total_s"] <= TARGET_S and ratio <= TARGET_RSS_RATIO else "no"])
    print_table(f"Fresh-process model load, released size ({size_mb:.0f} MiB weights), {cpu_model()}",
                ["case", "import s", "load s", "total s", "peak RSS MB", "RSS/weights",
                 f"<= {TARGET_S} s and <= {TARGET_RSS_RATIO}x"], rows)
    print(f"rss after `import torch, rsicrc.model` alone: {first['rss_after_import_mb']:.0f} MB; "
          f"sha256 of every load = the file's")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    write_result("load", run(args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
