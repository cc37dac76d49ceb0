"""GPU throughput of the released configuration: pairs per second per number format and batch.

    python benchmarks/bench_gpu.py [--pairs 1024] [--batches 16,32,64,128,256] [--size 8192]

Without a CUDA GPU it says so and exits 0 (`make bench` on a CPU machine). `--device cpu --case
rn50-small --pairs 16 --batches 4,8` runs the same code on the CPU, small (a check of the bench).

Each row is what `rsicrc caption` runs a batch, timed from uint8 tiles in host memory:
`preprocess` (a page-locked, non-blocking copy to the GPU, resize, normalise) + `describe_pairs`
(caption, embedding, change score), on the released configuration (rn50-full with generated
weights and LEVIR-CC's "no change" words in its vocabulary, bench_model.py) with 11-token
captions (max_len 11: LEVIR-CC's length, the user's case) and 41-token ones, in fp32 (exact: no
TF32), bf16 and fp16, at each batch and at the batch `batch_for_free_memory` chooses. Per row:
pairs/s, ms a batch, peak GPU memory, and the share of the time spent in the encoder (the same
batch through `encode_pairs` alone: the rest is decoding and the change score).

Baseline: the official loop (one pair, PIL preprocessing, the whole prefix recomputed per token:
official_loop.py) on the same GPU in fp32, same run, same tiles. Agreement: the captions of bf16
and fp16 against fp32 (identical pairs, share of agreeing tokens) on the bench tiles and on the
parity cases. End to end: `rsicrc caption` on the generated pair (read, preprocess, describe,
write a GeoPackage) at the fastest bf16 batch, against describe_pairs alone on its tiles in the
same batches (bench_pipeline's measurement), when rasterio and pyogrio are there.
Writes benchmarks/results/gpu.json.
"""
import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import generated_checkpoint, print_table, write_result

PRECISIONS = ("fp32", "bf16", "fp16")
OFFICIAL_PAIRS = 5
GOAL_PAIRS_PER_S = 1000  # issue 22: one H100-class GPU in bf16


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _scene_tiles(work, size, tile):
    """Tiles of the generated scene pair (bench_model's), or None without rasterio."""
    if importlib.util.find_spec("rasterio") is None:
        return None, None
    from bench_model import _tiles
    from bench_pipeline import _pair

    pair = _pair(work, size)
    return _tiles(pair, tile), pair


def _bench_tiles(n, work, size, tile):
    """n tile pairs (uint8 (n, 3, tile, tile) each): the generated scene's tiles, repeated to n; smooth
    random images where rasterio is missing. Returns (before, after, source, pair paths or None)."""
    (scene, pair) = _scene_tiles(work, size, tile)
    if scene is not None:
        before, after = scene
        reps = -(-n // len(before))
        return np.tile(before, (reps, 1, 1, 1))[:n], np.tile(after, (reps, 1, 1, 1))[:n], "generated scene", pair
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (2, n, 3, tile // 16, tile // 16), dtype=np.uint8)
    smooth = coarse.repeat(16, axis=-1).repeat(16, axis=-2)
    return smooth[0], smooth[1], "smooth random images (no rasterio)", None


def _timed_rate(cap, before, after, batch):
    """(pairs/s, ms a batch, peak GPU MB, encoder share, results) of one format and batch."""
    from bench_model import describe_all  # as the pipeline calls it; its results are on the CPU: synchronised

    dev = cap.device
    describe_all(cap, before[:batch], after[:batch], batch)  # warm-up: kernels, allocator
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    seconds, results = describe_all(cap, before, after, batch)
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 20 if dev.type == "cuda" else float("nan")
    # The encoder alone on the same preprocessed batches: what the decoder and score add is the rest.
    pre = [(cap.preprocess(torch.from_numpy(before[s:s + batch])), cap.preprocess(torch.from_numpy(after[s:s + batch])))
           for s in range(0, min(len(before), 4 * batch), batch)]
    cap.encode_pairs(*pre[0])
    _sync(dev)
    t = time.perf_counter()
    for b, a in pre:
        cap.encode_pairs(b, a)
    _sync(dev)
    encoder_s_per_pair = (time.perf_counter() - t) / sum(len(b) for b, _ in pre)
    rate = len(before) / seconds
    return rate, 1000 * seconds / -(-len(before) // batch), peak, encoder_s_per_pair * rate, results


def _tokens(results):
    return [c for r in results for c in r.captions]


def _agreement(ref, low):
    from bench_model import token_agreement

    same, share = token_agreement([c.split() for c in ref], [c.split() for c in low])
    return {"pairs": len(ref), "identical": same, "token_share": share}


def _official_rate(folder, device, before, after, pairs):
    from official_loop import load_official, official_pair, official_transform

    model, vocab = load_official(folder, device)
    transform = official_transform()
    official_pair(model, vocab, transform, before[0], after[0])  # warm-up
    _sync(device)
    t = time.perf_counter()
    tokens = [official_pair(model, vocab, transform, before[i], after[i])[0] for i in range(pairs)]
    _sync(device)
    rate = pairs / (time.perf_counter() - t)
    del model
    return rate, tokens


def _one_length(folder, label, device, before, after, batches, precisions, official_pairs):
    """Rows of one caption length: the official loop, then every format at every batch."""
    from rsicrc.model import load_model

    rows, out = [], {"official": None, "formats": {}}
    if official_pairs:
        off_rate, off_tokens = _official_rate(folder, device, before, after, official_pairs)
        out["official"] = {"pairs_per_s": off_rate, "pairs": official_pairs}
    reference = None
    for precision in precisions:
        cap = load_model(str(folder), device=device, dtype=precision)
        chosen = cap.batch_for_free_memory(tile_size=before.shape[-1], most=max(batches))
        runs = {}
        for batch in sorted(set(batches) | ({chosen} if chosen else set())):
            rate, ms, peak, enc, results = _timed_rate(cap, before, after, batch)
            runs[batch] = {"pairs_per_s": rate, "ms_per_batch": ms, "peak_gpu_mb": peak, "encoder_share": enc}
            if reference is None:
                reference = _tokens(results)
            if official_pairs and precision == "fp32" and batch == min(batches):
                ids = cap.generate(cap.preprocess(torch.from_numpy(before[:official_pairs])),
                                   cap.preprocess(torch.from_numpy(after[:official_pairs])))
                out["official"]["tokens_identical_own_preprocessing"] = \
                    f"{sum(x == y for x, y in zip(ids, off_tokens))}/{official_pairs}"
            agree = _agreement(reference, _tokens(results)) if precision != "fp32" else None
            runs[batch]["agreement_with_fp32"] = agree
            vs = f"{rate / out['official']['pairs_per_s']:.0f}x" if out["official"] else "-"
            rows.append([label, precision, batch if batch != chosen else f"{batch} (free memory)", f"{rate:.1f}",
                         f"{ms:.1f}", f"{peak:.0f}", f"{100 * enc:.0f} %", vs,
                         "-" if agree is None else f"{agree['identical']}/{agree['pairs']}, "
                                                   f"{100 * agree['token_share']:.1f} % tokens"])
            print("  " + "  ".join(str(x) for x in rows[-1]), flush=True)  # a run cut short keeps its rows
        out["formats"][precision] = {"chosen_batch": chosen, "runs": {str(k): v for k, v in runs.items()}}
        del cap
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if out["official"]:
        o = out["official"]
        rows.insert(0, [label, "fp32", "1 (official loop)", f"{o['pairs_per_s']:.2f}",
                        f"{1000 / o['pairs_per_s']:.0f}", "-", "-", "1x", f"own preprocessing: "
                        f"{o.get('tokens_identical_own_preprocessing', '-')} identical"])
    return rows, out


def _end_to_end(folder, device, pair, work, tile, batch, precision):
    from bench_pipeline import _throughput
    from rsicrc.model import load_model

    cap = load_model(str(folder), device=device, dtype=precision)
    return _throughput(cap, pair, work, tile=tile, batch=batch, repeats=2)


def _best(results, label):
    formats = results["lengths"][label]["formats"]
    return {p: max(formats[p]["runs"].items(), key=lambda kv: kv[1]["pairs_per_s"]) for p in formats}


def _print_best(results, label):
    for p, (batch, r) in _best(results, label).items():
        print(f"{p}, {label} captions: best {r['pairs_per_s']:.0f} pairs/s at batch {batch}"
              + (f" (goal {GOAL_PAIRS_PER_S} in bf16)" if p == "bf16" else ""), flush=True)


def _add_end_to_end(results, label, folder, device, pair, work, size, tile):
    """`rsicrc caption` on the generated pair at the fastest bf16 batch of `label`'s captions
    (needs rasterio and pyogrio)."""
    best = _best(results, label)
    if pair is None or importlib.util.find_spec("pyogrio") is None or "bf16" not in best:
        results["end_to_end"] = None
        return
    batch = int(best["bf16"][0])
    e2e = _end_to_end(folder, device, pair, work, tile, batch, "bf16")
    results["end_to_end"] = dict(e2e, precision="bf16", size_px=size)
    print(f"rsicrc caption end to end, {size} px pair ({e2e['tiles']} tiles), bf16 batch {batch}: "
          f"{e2e['pipeline_tiles_per_s']:.0f} tiles/s against {e2e['model_tiles_per_s']:.0f} for the model "
          f"alone ({e2e['overhead_pct']:+.1f} %; {e2e['outside_model_pct']:.1f} % of the run outside the model)",
          flush=True)


def run(device="cuda", case=None, pairs=1024, batches=(16, 32, 64, 128, 256), size=8192, tile=256,
        precisions=PRECISIONS, official_pairs=OFFICIAL_PAIRS, work=None):
    from bench_model import SHORT_MAX_LEN, parity_agreement, levir_words_checkpoint, short_caption_checkpoint

    device = torch.device(device)
    work = Path(work or tempfile.mkdtemp(prefix="rsicrc-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    long_folder = generated_checkpoint(case) if case else levir_words_checkpoint()
    folders = {f"{SHORT_MAX_LEN}-token": short_caption_checkpoint(long_folder), "41-token": long_folder}
    before, after, source, pair = _bench_tiles(pairs, work, size, tile)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    results = {"device": str(device), "gpu": gpu, "case": case or "rn50-full-levir-words", "pairs": len(before),
               "tile_size": tile, "tiles": source, "lengths": {}}
    name = "gpu" if device.type == "cuda" else "gpu_cpu_check"
    rows = []
    short_label = f"{SHORT_MAX_LEN}-token"
    for label, folder in folders.items():
        length_rows, results["lengths"][label] = _one_length(folder, label, device, before, after, batches,
                                                             precisions, official_pairs)
        rows += length_rows
        if label == short_label:  # the user's case first: a run cut short keeps it
            _print_best(results, short_label)
            _add_end_to_end(results, label, folder, device, pair, work, size, tile)
            write_result(name, results)
    low = [p for p in precisions if p != "fp32"]
    results["parity_agreement"] = {p: parity_agreement(p, device) for p in low}
    title = (f"rsicrc on {gpu if device.type == 'cuda' else 'the CPU'}: {results['case']}, {len(before)} pairs "
             f"of {tile} px tiles ({source}), preprocess + describe_pairs from host uint8")
    print_table(title, ["captions", "format", "batch", "pairs/s", "ms/batch", "peak GPU MB", "encoder",
                        "vs official", "vs fp32"], rows)
    for p in low:
        cases = ", ".join(f"{k} {v['identical']}/{v['pairs']}" for k, v in results["parity_agreement"][p].items())
        print(f"{p} against fp32 on the parity cases: {cases}")

    write_result(name, results)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--case", help="a parity case instead of the released configuration (a quick check)")
    p.add_argument("--pairs", type=int, default=1024)
    p.add_argument("--batches", default="16,32,64,128,256")
    p.add_argument("--size", type=int, default=8192, help="side of the generated pair in px")
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--official-pairs", type=int, default=OFFICIAL_PAIRS)
    p.add_argument("--work")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu: skipped: no CUDA GPU on this machine")
        return 0
    run(args.device, args.case, args.pairs, [int(b) for b in args.batches.split(",")], args.size,
        precisions=tuple(args.precisions.split(",")), official_pairs=args.official_pairs, work=args.work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
