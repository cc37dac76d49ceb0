"""`make bench`: every benchmark in turn; each prints its table and writes benchmarks/results/*.json."""
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

BENCHES = ["bench_load", "bench_model", "bench_roofline", "bench_series", "bench_pipeline", "bench_clip", "bench_click", "bench_ray", "bench_gpu"]


def main(argv=None):
    failed = []
    for name in BENCHES:
        print(f"\n=== {name} ===", flush=True)
        try:
            code = importlib.import_module(name).main([])
        except Exception as exc:  # report and go on: one broken bench must not hide the others
            print(f"{name} failed: {exc!r}")
            code = 1
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
