"""Pipeline benchmark: end-to-end tiles/s against model-only tiles/s on the same tiles, and
peak RSS of `rsicrc caption` for a small and a large raster pair.

    python benchmarks/bench_pipeline.py [--device auto] [--quick]

Throughput: one Captioner is loaded, then (a) `run_caption` writes a GeoPackage from a generated
pair (pair checks, tiling, reading, stretching, model, GeoPackage writes, finalising), and (b) the
same tiles, already in memory, go through `preprocess` + `describe_pairs` in the same batches.
Overhead = time(a) / time(b) - 1, each the best of a few alternated runs; on a shared CPU this
A/B ratio is noisy, so the share of (a)'s wall time spent outside the model call is reported too. Done for the rn50-small parity checkpoint and for the released
configuration (rn50-full: d_model 2048, 1.4 GB of generated weights; a handful of tiles).
The model load is excluded from both.

Memory: `rsicrc caption` runs as a child process on a 2048 px and on a 16384 px square pair and
its peak RSS is read from /proc VmHWM. Both runs use 1024 px tiles and batches of one, so that
the big one is 256 tiles (feasible on a laptop CPU) and both keep the reader's queue full: the
per-tile memory is then the same in both runs and the difference is what grows with the
raster's size.

Heat map: the cost of --heatmap over caption (goal: under 5 %), the "overhead %" of the
throughput table's "--heatmap" row: its two parts (the decoder's attention maps, timed as
greedy decoding with and without them on the same tiles, and the GeoTIFF built from the layer),
each the best of many alternated timings, over the best plain caption run; the whole-run A/B is
in the JSON too. `--only heatmap` runs just that row (results in pipeline_heatmap.json).

Sparse mosaic: a 1,000,000 x 1,000,000 px GeoTIFF with no block written (all nodata, 15.3 M tiles
of 256 px, run with --yes-large) is walked for SPARSE_SECONDS; RSS when the walk starts and at
its end, and the tiles walked, show that memory does not grow with the number of tiles (no tile
list, skipped tiles counted rather than kept).
Prints tables and writes benchmarks/results/pipeline.json.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, generated_checkpoint, print_table, write_result  # noqa: E402

sys.path.insert(0, str(ROOT / "resources" / "sample"))
import make_sample  # noqa: E402

RSS_TILE = 1024
SPARSE_SIDE = 1_000_000
SPARSE_SECONDS = 60


def _pair(folder, size):
    folder = Path(folder)
    b, a = folder / f"before_{size}.tif", folder / f"after_{size}.tif"
    if not (b.exists() and a.exists()):
        make_sample.write_scene(b, size, after=False, block=256)
        make_sample.write_scene(a, size, after=True, block=256)
    return str(b), str(a)


def _throughput(cap, pair, out_dir, tile, batch, repeats):
    from rsicrc.pipeline.caption.run import CaptionParams, run_caption
    from rsicrc.pipeline.progress import Reporter
    from rsicrc.pipeline.raster.grid_reader import open_on_grid
    from rsicrc.pipeline.raster.pair_plan import plan_pair
    from rsicrc.pipeline.raster.tiling import tile_grid

    out = Path(out_dir) / f"bench_{cap.embedding_dim}_{tile}.gpkg"
    params = CaptionParams(*pair, str(out), model=cap.source, tile_size=tile, batch_size=batch)
    # warm-up on the model path (allocator, thread pool), not counted
    warm = np.zeros((min(batch, 2), 3, tile, tile), np.uint8)
    cap.describe_pairs(cap.preprocess(warm), cap.preprocess(warm))

    plan = plan_pair(*pair, tile_size=tile)
    tiles = tile_grid(plan.window, tile)
    with open_on_grid(plan.before, plan.grid) as rb, open_on_grid(plan.after, plan.grid) as ra:
        before = np.stack([rb.read((t.col, t.row, tile, tile))[0] for t in tiles])
        after = np.stack([ra.read((t.col, t.row, tile, tile))[0] for t in tiles])

    # Alternate the two measurements and keep each one's best run: on a shared machine the
    # slowest runs measure the neighbours, not the code.
    pipeline_runs, model_runs, outside_model = [], [], []
    describe = cap.describe_dates  # the pipeline's one model call a batch
    in_model = [0.0]

    def timed_describe(*args, **kw):
        t = time.perf_counter()
        try:
            return describe(*args, **kw)
        finally:
            in_model[0] += time.perf_counter() - t

    for _ in range(repeats):
        in_model[0] = 0.0
        cap.describe_dates = timed_describe
        t0 = time.perf_counter()
        try:
            summary = run_caption(params, Reporter(), captioner=cap)
        finally:
            del cap.describe_dates  # the method again
        pipeline_runs.append(time.perf_counter() - t0)
        outside_model.append(pipeline_runs[-1] - in_model[0])
        t0 = time.perf_counter()
        for s in range(0, len(tiles), batch):
            cap.describe_pairs(cap.preprocess(before[s:s + batch]), cap.preprocess(after[s:s + batch]))
        model_runs.append(time.perf_counter() - t0)
    pipeline_s, model_s = min(pipeline_runs), min(model_runs)
    out.unlink()
    n = summary.features
    return {"tiles": n, "tile_size": tile, "batch_size": batch,
            "pipeline_tiles_per_s": n / pipeline_s, "model_tiles_per_s": n / model_s,
            "overhead_pct": 100.0 * (pipeline_s / model_s - 1.0), "repeats": repeats,
            # wall time of the pipeline run spent outside the model call (describe_dates), relative to the time in it
            "outside_model_pct": 100.0 * min(o / (p - o) for o, p in zip(outside_model, pipeline_runs)),
            "pipeline_runs_s": pipeline_runs, "model_runs_s": model_runs}


def _heatmap_cost(cap, pair, out_dir, tile, batch, repeats):
    """The cost of --heatmap over caption on one pair, from its two parts, each the best of many
    short alternated timings (robust on a shared CPU, where whole-run A/B times swing by 2x):
    the decoder's attention maps (greedy decoding with and without them, on the same tiles) and
    the GeoTIFF built from the finished layer; over the best plain caption run. The direct A/B of
    whole runs (alternated, best of each) is kept too."""
    import torch

    from rsicrc.pipeline.caption import heatmap as hm
    from rsicrc.pipeline.caption.run import CaptionParams, run_caption
    from rsicrc.pipeline.progress import Reporter
    from rsicrc.pipeline.raster.grid_reader import open_on_grid
    from rsicrc.pipeline.raster.pair_plan import plan_pair
    from rsicrc.pipeline.raster.tiling import tile_grid

    out, heat = Path(out_dir) / "bench_heat.gpkg", Path(out_dir) / "bench_heat.tif"
    out_maps = Path(out_dir) / "bench_heat_maps.gpkg"
    plan = plan_pair(*pair, tile_size=tile)
    tiles = tile_grid(plan.window, tile)
    with open_on_grid(plan.before, plan.grid) as rb, open_on_grid(plan.after, plan.grid) as ra:
        before = np.stack([rb.read((t.col, t.row, tile, tile))[0] for t in tiles])
        after = np.stack([ra.read((t.col, t.row, tile, tile))[0] for t in tiles])
    with torch.inference_mode():
        memories = [cap.net.encoder(cap.preprocess(before[s:s + batch]).to(cap.dtype),
                                    cap.preprocess(after[s:s + batch]).to(cap.dtype))[0]
                    for s in range(0, len(tiles), batch)]

    def decode(attention):
        t0 = time.perf_counter()
        for memory in memories:
            cap._greedy(memory, attention=attention)
        return time.perf_counter() - t0

    decode(True)
    plain_decode, maps_decode = [], []
    for _ in range(10 * repeats):
        plain_decode.append(decode(False))
        maps_decode.append(decode(True))

    runs = {"caption": [], "heatmap": []}
    for i in range(repeats):
        for kind in (("caption", "heatmap") if i % 2 == 0 else ("heatmap", "caption")):
            with_maps = kind == "heatmap"
            params = CaptionParams(*pair, str(out_maps if with_maps else out), model=cap.source, tile_size=tile,
                                   batch_size=batch, heatmap=str(heat) if with_maps else None)
            t0 = time.perf_counter()
            summary = run_caption(params, Reporter(), captioner=cap)
            runs[kind].append(time.perf_counter() - t0)
    builds = []
    for _ in range(3 * repeats):
        t0 = time.perf_counter()
        hm.build_heatmap(out_maps, plan.grid, tiles, 8, str(heat))
        builds.append(time.perf_counter() - t0)
    plain_s, heat_s = min(runs["caption"]), min(runs["heatmap"])
    extra_s = max(0.0, min(maps_decode) - min(plain_decode)) + min(builds)
    for path in (out, out_maps, heat):
        path.unlink()
    n = summary.features
    return {"tiles": n, "tile_size": tile, "batch_size": batch, "pipeline_tiles_per_s": n / (plain_s + extra_s),
            "caption_tiles_per_s": n / plain_s, "overhead_pct": 100.0 * extra_s / plain_s,
            "attention_decode_s": min(maps_decode) - min(plain_decode), "plain_decode_s": min(plain_decode),
            "geotiff_build_s": min(builds), "repeats": repeats,
            "ab_overhead_pct": 100.0 * (heat_s / plain_s - 1.0),
            "caption_runs_s": runs["caption"], "heatmap_runs_s": runs["heatmap"]}


def _throughput_rows(throughput):
    rows = []
    for k, v in throughput.items():
        if "caption_tiles_per_s" in v:  # the --heatmap row: its overhead is over plain caption
            rows.append([k, v["tiles"], v["batch_size"], f"{v['pipeline_tiles_per_s']:.3f}",
                         f"{v['caption_tiles_per_s']:.3f} (caption)", f"{v['overhead_pct']:+.1f}", "-"])
        else:
            rows.append([k, v["tiles"], v["batch_size"], f"{v['pipeline_tiles_per_s']:.3f}",
                         f"{v['model_tiles_per_s']:.3f}", f"{v['overhead_pct']:+.1f}",
                         f"{v['outside_model_pct']:.1f}"])
    return rows


THROUGHPUT_HEADER = ["model", "tiles", "batch", "pipeline tiles/s", "model-only tiles/s", "overhead %",
                     "outside model %"]
HEATMAP_ROW = "rn50-small --heatmap"


def _proc_status_mb(pid, key):
    """A size line of /proc/PID/status (VmRSS: now, VmHWM: peak) in MB; None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _vm_hwm_mb(pid):
    """Peak resident size of a running process (its own address space, so not inherited at fork)."""
    return _proc_status_mb(pid, "VmHWM")


def _vm_rss_mb(pid):
    return _proc_status_mb(pid, "VmRSS")


def _peak_rss_mb(pair, model, out, tile, batch, device):
    """Peak RSS of `rsicrc caption` in a child process, from /proc VmHWM polled until it exits.

    (wait4's ru_maxrss would also count the parent's size at fork time.)
    """
    cmd = [sys.executable, "-m", "rsicrc", "caption", *pair, "-o", str(out), "--model", str(model),
           "--tile-size", str(tile), "--batch-size", str(batch), "--device", device, "--progress", "json"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0.0
        while proc.poll() is None:
            hwm = _vm_hwm_mb(proc.pid)
            if hwm is not None:
                peak = max(peak, hwm)
            time.sleep(0.05)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"rsicrc caption failed ({proc.returncode}): {err.read().decode().strip()[-500:]}")
    os.unlink(out)
    return peak, time.perf_counter() - t0


def _sparse_mosaic(folder):
    import rasterio
    from rasterio.transform import from_origin

    path = Path(folder) / "sparse_1M.tif"
    if not path.exists():
        with rasterio.open(path, "w", driver="GTiff", width=SPARSE_SIDE, height=SPARSE_SIDE, count=3, dtype="uint8",
                           crs="EPSG:32632", transform=from_origin(600000.0, 5100000.0, 0.5, 0.5), nodata=0,
                           tiled=True, blockxsize=512, blockysize=512, sparse_ok=True, BIGTIFF="YES"):
            pass
    return str(path)


def _sparse_rss(folder, model, device, seconds=SPARSE_SECONDS):
    """RSS of `rsicrc caption --yes-large` walking the sparse mosaic: at the first progress event,
    and after `seconds`; tiles walked in between."""
    import json
    import signal
    import threading

    mosaic = _sparse_mosaic(folder)
    out = Path(folder) / "sparse.gpkg"
    cmd = [sys.executable, "-m", "rsicrc", "caption", mosaic, mosaic, "-o", str(out), "--model", str(model),
           "--device", device, "--yes-large", "--progress", "json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    events = {"total": None, "done": 0, "first": None}

    def read():
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") in ("start", "progress"):
                events["total"] = event.get("total", events["total"])
                events["done"] = event.get("done", events["done"])
                if events["first"] is None:
                    events["first"] = (time.perf_counter(), _vm_rss_mb(proc.pid), events["done"])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while events["first"] is None and proc.poll() is None:
        time.sleep(0.1)
    if events["first"] is None:
        raise RuntimeError(f"rsicrc caption on the sparse mosaic stopped early ({proc.returncode})")
    start = events["first"][0]
    warm = None  # RSS and tiles a quarter of the way in: the reader queue and GDAL's cache filled
    while time.perf_counter() < start + seconds and proc.poll() is None:
        time.sleep(0.5)
        if warm is None and time.perf_counter() >= start + seconds / 4:
            warm = (_vm_rss_mb(proc.pid), events["done"])
    rss_end, hwm = _vm_rss_mb(proc.pid), _vm_hwm_mb(proc.pid)
    walked = events["done"] - events["first"][2]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    for path in (out, Path(str(out) + ".partial"), Path(str(out) + ".lock")):
        if path.exists():
            path.unlink()
    return {"side_px": SPARSE_SIDE, "tiles_planned": events["total"], "seconds": seconds, "tiles_walked": walked,
            "rss_at_start_mb": events["first"][1], "rss_warm_mb": warm[0], "tiles_walked_warm": warm[1],
            "rss_at_end_mb": rss_end, "peak_rss_mb": hwm, "growth_after_warm_mb": rss_end - warm[0]}


def main(argv=None):
    ap = argparse.ArgumentParser(description="rsicrc pipeline benchmark")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="skip the released-size model and the 16384 px pair")
    ap.add_argument("--work", help="folder for generated rasters and checkpoints (default: a temp folder)")
    ap.add_argument("--only", choices=["heatmap"], help="run only this row (the cost of --heatmap)")
    args = ap.parse_args(argv)

    from rsicrc.model import load_model

    work = Path(args.work or tempfile.mkdtemp(prefix="rsicrc-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    small = generated_checkpoint("rn50-small")
    results = {"throughput": {}, "memory": {}}
    if args.only == "heatmap":
        cap = load_model(str(small), device=args.device)
        results["throughput"][HEATMAP_ROW] = _heatmap_cost(cap, _pair(work, 1024), work, tile=256, batch=8,
                                                           repeats=4)
        print_table("pipeline throughput (model load excluded)", THROUGHPUT_HEADER,
                    _throughput_rows(results["throughput"]))
        row = results["throughput"][HEATMAP_ROW]
        print(f"--heatmap costs {row['overhead_pct']:+.1f} % over caption (goal < 5 %): attention maps "
              f"{row['attention_decode_s'] * 1000:.0f} ms, GeoTIFF {row['geotiff_build_s'] * 1000:.0f} ms; "
              f"whole-run A/B {row['ab_overhead_pct']:+.1f} %")
        write_result("pipeline_heatmap", results)
        return 0

    # Memory first, while this process is small.
    sizes = [2048] if args.quick else [2048, 16384]
    for size in sizes:
        rss, seconds = _peak_rss_mb(_pair(work, size), small, work / f"rss_{size}.gpkg", RSS_TILE, 1,
                                    args.device)
        results["memory"][str(size)] = {"peak_rss_mb": rss, "seconds": seconds, "tile_size": RSS_TILE,
                                        "batch_size": 1, "tiles": (size // RSS_TILE) ** 2}
    if len(sizes) == 2:
        results["memory"]["growth_mb"] = results["memory"]["16384"]["peak_rss_mb"] - \
            results["memory"]["2048"]["peak_rss_mb"]
    results["sparse"] = _sparse_rss(work, small, args.device, 15 if args.quick else SPARSE_SECONDS)

    cap = load_model(str(small), device=args.device)
    results["throughput"]["rn50-small"] = _throughput(cap, _pair(work, 1024), work, tile=256, batch=8, repeats=3)
    results["throughput"][HEATMAP_ROW] = _heatmap_cost(cap, _pair(work, 1024), work, tile=256, batch=8, repeats=4)
    del cap
    if not args.quick:
        full = generated_checkpoint("rn50-full")
        cap = load_model(str(full), device=args.device)
        results["throughput"]["rn50-full"] = _throughput(cap, _pair(work, 512), work, tile=256, batch=2, repeats=2)
        del cap

    print_table("pipeline throughput (model load excluded)", THROUGHPUT_HEADER,
                _throughput_rows(results["throughput"]))
    print_table(f"rsicrc caption peak RSS (rn50-small, {RSS_TILE} px tiles, batch 1)",
                ["pair", "tiles", "peak RSS MB", "seconds"],
                [[f"{k} px", v["tiles"], f"{v['peak_rss_mb']:.0f}", f"{v['seconds']:.0f}"]
                 for k, v in results["memory"].items() if k != "growth_mb"])
    sp = results["sparse"]
    print_table(f"rsicrc caption on a sparse {sp['side_px']:,} px mosaic (--yes-large), {sp['seconds']} s walked",
                ["tiles planned", "tiles walked", "RSS at start MB", f"RSS at {sp['seconds'] // 4} s MB",
                 "RSS at end MB", "peak RSS MB", "growth after warm-up MB"],
                [[f"{sp['tiles_planned']:,}", f"{sp['tiles_walked']:,}", f"{sp['rss_at_start_mb']:.0f}",
                  f"{sp['rss_warm_mb']:.0f}", f"{sp['rss_at_end_mb']:.0f}", f"{sp['peak_rss_mb']:.0f}",
                  f"{sp['growth_after_warm_mb']:+.0f}"]])
    if "growth_mb" in results["memory"]:
        print(f"RSS growth 2048 -> 16384 px: {results['memory']['growth_mb']:+.0f} MB (target < 150 MB)")
    write_result("pipeline", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
