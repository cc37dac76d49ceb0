"""RS-M-CLIP throughput: image tiles/s and text queries/s at the real model's size.

The model is RS-M-CLIP's architecture (ViT-B-32 image tower, XLM-RoBERTa-base text tower, as
open_clip's xlm-roberta-base-ViT-B-32) with generated random weights: the hub is not reachable
here, and speed does not depend on the weight values. It is written as a hub-like folder without
the text tower's config.json and loaded by `load_clip`, the same path as a real download.

    python benchmarks/bench_clip.py [--device auto] [--batches 1,8,32] [--tile 256] [--no-text]

Prints a table and writes benchmarks/results/clip.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "clip.json"
QUERIES = ["new buildings appeared near the road", "novos edifícios perto da estrada",
           "новые здания возле дороги", "道路附近出现了新建筑", "도로 근처에 새 건물",
           "une forêt à côté d'une rivière", "neue Gebäude an der Straße", "parking lot"]


def _timed(fn, min_seconds: float, min_runs: int) -> list[float]:
    fn()  # warm-up: allocator, kernels, thread pool
    times, start = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def run(device: str = "auto", batches=(1, 8, 32), tile: int = 256, text: bool = True,
        min_seconds: float = 3.0, min_runs: int = 3) -> dict:
    import torch

    from rsicrc.model.clip import load_clip
    from clip_generate import VIT_B_32, XLMR_BASE_TEXT, write_generated_clip

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="rsicrc-bench-clip-") as tmp:
        t0 = time.perf_counter()
        # No config.json in the folder: the text config is found by name, as for the hub repo.
        write_generated_clip(tmp, vision=VIT_B_32, text=XLMR_BASE_TEXT, embed_dim=512,
                             text_name="xlm-roberta-base", text_config_in_folder=False)
        generate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        clip = load_clip(tmp, device=device)
        load_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in clip.model.parameters())
    result = {"model": "RS-M-CLIP architecture (ViT-B-32 + XLM-RoBERTa-base), generated weights",
              "parameters": n_params, "device": str(clip.device),
              "device_name": (torch.cuda.get_device_name(clip.device) if clip.device.type == "cuda"
                              else platform.processor() or platform.machine()),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "generate_s": round(generate_s, 2), "load_s": round(load_s, 2),
              "tile": tile, "images": [], "text": []}
    if hasattr(os, "getloadavg"):  # other processes on the same cores slow every number down
        result["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
    for batch in batches:
        tiles = rng.integers(0, 256, size=(batch, 3, tile, tile), dtype=np.uint8)
        times = _timed(lambda: clip.encode_images(tiles, batch_size=batch), min_seconds, min_runs)
        med = statistics.median(times)
        result["images"].append({"batch": batch, "runs": len(times), "median_s": round(med, 5),
                                 "tiles_per_s": round(batch / med, 2)})
    if text:
        for batch in (1, len(QUERIES)):
            texts = QUERIES[:batch]
            times = _timed(lambda: clip.encode_text(texts, batch_size=batch), min_seconds, min_runs)
            med = statistics.median(times)
            result["text"].append({"batch": batch, "runs": len(times), "median_s": round(med, 5),
                                   "queries_per_s": round(batch / med, 2)})
    if hasattr(os, "getloadavg"):
        result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _table(result: dict) -> str:
    lines = [f"RS-M-CLIP ({result['parameters'] / 1e6:.0f}M parameters, generated weights) on "
             f"{result['device']} ({result['device_name']}), torch {result['torch']}, "
             f"{result['threads']} threads; load {result['load_s']} s; "
             f"1-min load average {result.get('loadavg_before', ['?'])[0]}",
             f"{'what':<28}{'batch':>6}{'median s':>11}{'per s':>10}"]
    for row in result["images"]:
        lines.append(f"{'image tiles ' + str(result['tile']) + 'px':<28}{row['batch']:>6}"
                     f"{row['median_s']:>11.4f}{row['tiles_per_s']:>10.1f}")
    for row in result["text"]:
        lines.append(f"{'text queries':<28}{row['batch']:>6}{row['median_s']:>11.4f}"
                     f"{row['queries_per_s']:>10.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", default="1,8,32", help="image batch sizes, comma-separated")
    parser.add_argument("--tile", type=int, default=256, help="tile side in pixels")
    parser.add_argument("--no-text", action="store_true", help="skip the text tower")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timing per case, at least")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    result = run(device=args.device, batches=batches, tile=args.tile, text=not args.no_text,
                 min_seconds=args.min_seconds)
    print(_table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
