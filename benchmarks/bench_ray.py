"""Ray engine benchmark: tiles/s of `rsicrc caption --engine ray` with 1 and 2 workers against the
local engine on the same tiles of the same machine, and Ray's overhead in %: of whole runs on
36 and 144 tiles, and of the rate past a run's fixed cost (from the difference of the two).

    python benchmarks/bench_ray.py [--case rn50-small] [--size 768] [--tile 128] [--repeats 2]

The local engine gets the loaded Captioner (its model load is not timed); a Ray run (`--workers
1` or `2`) is timed from run_caption's call to its return on an already started local Ray
(`ray.init(num_cpus=2)`, timed apart as "ray start"), so its time includes what a Ray run costs
on top of the model work: starting the actors, each loading the model, shipping shards and
merging part files. The runs are alternated, and each figure is the best of `--repeats` runs
(the JSON keeps every run). A Ray worker gets one CPU and so one torch thread, so each Ray row is
compared with the local engine on as many cores: 1 worker with the local engine held to one torch
thread, 2 workers with the local engine on torch's default (both cores here). Overhead = that
local run's tiles/s / the Ray run's - 1. Writes benchmarks/results/ray.json.
"""
import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, generated_checkpoint, print_table, write_result  # noqa: E402

sys.path.insert(0, str(ROOT / "resources" / "sample"))
import make_sample  # noqa: E402


def _run(params, reporter, captioner=None, threads=None):
    import torch

    from rsicrc.pipeline.caption.run import run_caption

    default = torch.get_num_threads()
    torch.set_num_threads(threads or default)
    t0 = time.perf_counter()
    try:
        summary = run_caption(params, reporter, captioner=captioner)
    finally:
        seconds = time.perf_counter() - t0
        torch.set_num_threads(default)
    Path(params.output).unlink()
    return summary.features, seconds


def run(case, size, tile, batch, repeats):
    """Each engine on a size x size pair and on a 2 size x 2 size one (4x the tiles): the fixed cost
    of a run and the rate past it come from the difference."""
    import ray

    from rsicrc.model import load_model
    from rsicrc.pipeline.caption.run import CaptionParams
    from rsicrc.pipeline.progress import Reporter

    folder = Path(tempfile.mkdtemp(prefix="rsicrc-bench-ray-"))
    pairs = {}
    for side in (size, 2 * size):
        before, after = folder / f"before_{side}.tif", folder / f"after_{side}.tif"
        make_sample.write_scene(before, side, after=False, block=256)
        make_sample.write_scene(after, side, after=True, block=256)
        pairs[side] = (str(before), str(after))
    checkpoint = str(generated_checkpoint(case))
    cap = load_model(checkpoint, device="cpu")
    out = str(folder / "out.gpkg")

    def params(side, **kw):
        return CaptionParams(*pairs[side], out, model=checkpoint, tile_size=tile, batch_size=batch, device="cpu",
                             **kw)

    # name: (caption options, torch threads of the local run, the local row on the same cores)
    engines = {"local": ({}, None, "local"), "local, 1 torch thread": ({}, 1, "local, 1 torch thread"),
               "ray, 1 worker": ({"engine": "ray", "workers": 1}, None, "local, 1 torch thread"),
               "ray, 2 workers": ({"engine": "ray", "workers": 2}, None, "local")}
    # Alternated, best of each: on a shared machine the slowest runs measure the neighbours.
    runs = {(name, side): [] for name in engines for side in pairs}
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    start_s = time.perf_counter() - t0
    try:
        for _ in range(repeats):
            for side in pairs:
                for name, (kw, threads, _) in engines.items():
                    runs[name, side].append(_run(params(side, **kw), Reporter(), captioner=cap, threads=threads))
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    tiles = {side: runs["local", side][0][0] for side in pairs}
    assert all(n == tiles[side] for (_, side), r in runs.items() for n, _ in r)
    small, big = size, 2 * size
    rows = {}
    for name in engines:
        t_small = min(s for _, s in runs[name, small])
        t_big = min(s for _, s in runs[name, big])
        rate = (tiles[big] - tiles[small]) / (t_big - t_small)
        rows[name] = {"seconds": {str(small): t_small, str(big): t_big},
                      "tiles_per_s": {str(small): tiles[small] / t_small, str(big): tiles[big] / t_big},
                      "rate_past_fixed_cost_tiles_per_s": rate, "fixed_cost_s": t_small - tiles[small] / rate,
                      "runs_s": {str(side): [s for _, s in runs[name, side]] for side in pairs}}
    for name, v in rows.items():
        base = rows[engines[name][2]]
        v["compared_with"] = engines[name][2]
        v["overhead_pct"] = {k: 100.0 * (v["seconds"][k] / base["seconds"][k] - 1.0) for k in v["seconds"]}
        v["rate_overhead_pct"] = 100.0 * (base["rate_past_fixed_cost_tiles_per_s"]
                                          / v["rate_past_fixed_cost_tiles_per_s"] - 1.0)
    return {"case": case, "tiles": {str(k): v for k, v in tiles.items()}, "tile_size": tile, "batch_size": batch,
            "raster_px": [small, big], "repeats": repeats, "ray_start_s": start_s, "rows": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="rn50-small", help="parity case of the generated checkpoint")
    p.add_argument("--size", type=int, default=768, help="side of the smaller generated pair in px")
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        print("bench_ray: Ray is not installed (pip install 'rsicrc[ray]'); skipped")
        return 0
    result = run(args.case, args.size, args.tile, args.batch, args.repeats)
    small, big = (str(x) for x in result["raster_px"])
    n_small, n_big = result["tiles"][small], result["tiles"][big]
    print_table(f"caption engines, {n_small} and {n_big} tiles of {args.tile} px ({args.case}, batch {args.batch}); "
                f"ray start {result['ray_start_s']:.1f} s, not counted",
                ["engine", "against", f"tiles/s ({n_small})", f"overhead % ({n_small})", f"tiles/s ({n_big})",
                 f"overhead % ({n_big})", "rate past fixed cost", "its overhead %", "fixed cost s"],
                [[k, v["compared_with"], f"{v['tiles_per_s'][small]:.2f}", f"{v['overhead_pct'][small]:+.0f}",
                  f"{v['tiles_per_s'][big]:.2f}", f"{v['overhead_pct'][big]:+.0f}",
                  f"{v['rate_past_fixed_cost_tiles_per_s']:.2f}", f"{v['rate_overhead_pct']:+.0f}",
                  f"{v['fixed_cost_s']:.1f}"] for k, v in result["rows"].items()])
    write_result("ray", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
