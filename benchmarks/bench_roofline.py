"""Roofline of the per-tile work: each part's counted FLOPs against the matmul rate at its shapes.

    python benchmarks/bench_roofline.py [--batches 1,16,64] [--threads 2,1] [--step 5]

Parts, on the released configuration (rn50-full, generated weights): the image backbone (both
images of every pair), the pair encoder after it (attentive transformer encoder, fusion, pool)
and one greedy decoder step (the cached step the caption loop repeats, at position --step).
For each batch and thread count: FLOPs counted by torch.utils.flop_counter, the best time of a
few runs, the GFLOP/s achieved, and the "matmul rate at the same shapes": every matrix product
the part runs (linear layers, convolutions as their im2col product, attention's two batched
products) recorded with its shape, each shape timed alone as a plain torch.mm / torch.bmm with
the same threads; the part's FLOPs over the sum of those times. The fraction achieved / that rate
is how near the part runs to what this CPU's matrix products allow at its shapes; below
TARGET_FRACTION the table names the non-matmul work that takes the rest (from the profiler).
The whole describe_pairs at batch 16 is timed too, against the 1024 x 1024 matmul probe of
`rsicrc device` measured in the same run.
"""
import argparse
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from common import Timer, cpu_model, generated_checkpoint, print_table, write_result

TARGET_FRACTION = 0.85
WHOLE_TARGET_FRACTION = 0.75
MIN_SECONDS = 0.3  # a shape's reference product is repeated this long at least
aten = torch.ops.aten
SDPA_OPS = {aten._scaled_dot_product_flash_attention_for_cpu.default,
            aten._scaled_dot_product_attention_math.default}


def _gemm_shapes(func, args, out):
    """[(batch, m, k, n)] of the matrix products `func` computes (none for other ops)."""
    if func in (aten.mm.default, aten.addmm.default):
        a, b = (args[0], args[1]) if func is aten.mm.default else (args[1], args[2])
        return [(1, a.shape[0], a.shape[1], b.shape[1])]
    if func in (aten.bmm.default, aten.baddbmm.default):
        a, b = (args[0], args[1]) if func is aten.bmm.default else (args[1], args[2])
        return [(a.shape[0], a.shape[1], a.shape[2], b.shape[2])]
    if func is aten.convolution.default:
        x, w, groups = args[0], args[1], args[8]
        n, cout, ho, wo = out.shape
        return [(groups, n * ho * wo, w.shape[1] * w.shape[2] * w.shape[3], cout // groups)]
    if func in SDPA_OPS:
        q, k = args[0], args[1]
        bh = q.shape[0] * q.shape[1]
        length, keys, dim = q.shape[-2], k.shape[-2], q.shape[-1]
        return [(bh, length, dim, keys), (bh, length, keys, dim)]
    return []


class GemmRecorder(TorchDispatchMode):
    """Records the shape of every matrix product run under it."""

    def __init__(self):
        super().__init__()
        self.shapes = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        result = out[0] if isinstance(out, tuple) else out
        for shape in _gemm_shapes(func, args, result):
            self.shapes[shape] += 1
        return out


def _best_seconds(fn, repeats):
    fn()  # warm-up: first-call allocations and oneDNN primitive creation
    best = float("inf")
    for _ in range(repeats):
        with Timer() as t:
            fn()
        best = min(best, t.seconds)
    return best


_REFERENCE = {}


def _reference_seconds(shape):
    """Seconds of one plain matrix product of `shape` (batch, m, k, n) with the current threads."""
    key = (shape, torch.get_num_threads())
    if key not in _REFERENCE:
        b, m, k, n = shape
        x, y = (torch.randn(m, k), torch.randn(k, n)) if b == 1 else (torch.randn(b, m, k), torch.randn(b, k, n))
        op = torch.mm if b == 1 else torch.bmm
        op(x, y)
        done, start = 0, time.perf_counter()
        while done < 3 or time.perf_counter() - start < MIN_SECONDS:
            op(x, y)
            done += 1
        _REFERENCE[key] = (time.perf_counter() - start) / done
    return _REFERENCE[key]


MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "mkldnn_convolution", "_slow_conv2d_forward",
              "_scaled_dot_product_flash_attention_for_cpu"}


def _why(fn, reference_seconds):
    """Where a part's time goes beyond its products run alone: 'products 162 ms (130 alone);
    native_batch_norm 3%, ...' (self CPU time from the profiler, one pass)."""
    from torch.profiler import profile

    with profile() as prof:
        fn()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    matmul_us = sum(e.self_cpu_time_total for e in events if e.key[6:] in MATMUL_OPS)
    others = sorted((e for e in events if e.key[6:] not in MATMUL_OPS), key=lambda e: -e.self_cpu_time_total)
    shares = ", ".join(f"{e.key[6:]} {100 * e.self_cpu_time_total / total:.0f}%" for e in others[:2])
    return f"products {matmul_us / 1000:.0f} ms ({1000 * reference_seconds:.0f} alone); {shares}"


def _inference(fn):
    with torch.inference_mode():
        return fn()


def measure(name, fn, repeats):
    """fn runs timed in inference mode, as the product runs it; counted under no_grad, where torch
    still splits linear layers and convolutions into the products the counters know."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    recorder = GemmRecorder()
    with torch.no_grad(), recorder:
        fn()
    flops = counter.get_total_flops()
    seconds = _best_seconds(lambda: _inference(fn), repeats)
    gemm_flops = sum(2 * b * m * k * n * c for (b, m, k, n), c in recorder.shapes.items())
    reference = sum(_reference_seconds(shape) * c for shape, c in recorder.shapes.items())
    row = {"part": name, "gflop": flops / 1e9, "seconds": seconds, "gflops": flops / seconds / 1e9,
           "matmul_gflops_at_shapes": gemm_flops / reference / 1e9, "gemm_shapes": len(recorder.shapes),
           "counted_vs_recorded": flops / gemm_flops if gemm_flops else None}
    row["fraction"] = row["gflops"] / row["matmul_gflops_at_shapes"]
    if row["fraction"] < TARGET_FRACTION:
        row["why"] = _why(lambda: _inference(fn), reference)
    return row


def _parts(cap, batch, step):
    """{part: a no-argument callable} for `batch` pairs."""
    enc, dec = cap.net.encoder, cap.net.decoder
    images = cap.preprocess(torch.randint(0, 256, (2 * batch, 3, 256, 256), dtype=torch.uint8))
    with torch.no_grad():  # not inference tensors: the counting passes run outside inference mode
        feats = enc.encoder(images)
        memory, _ = enc.from_features(feats[:batch], feats[batch:])
        cross_kv = dec.cross_keys_values(memory)
        caches = dec.new_caches(memory)
        token = torch.full((batch, 1), cap.vocab.start, dtype=torch.long)
        for s in range(step):
            dec.step(token, s, caches, cross_kv)

    return {"backbone (2 images)": lambda: enc.encoder(images),
            "pair encoder": lambda: enc.from_features(feats[:batch], feats[batch:]),
            f"decoder step {step}": lambda: dec.step(token, step, caches, cross_kv)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--step", type=int, default=5, help="decoder position timed (LEVIR-CC captions: ~11)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    from rsicrc.model import load_model
    from rsicrc.model.device import matmul_rates

    from bench_model import short_caption_checkpoint

    folder = generated_checkpoint("rn50-full")
    cap = load_model(str(folder), device="cpu")
    captioners = {"41 tokens": cap, "11 tokens": load_model(str(short_caption_checkpoint(folder)), device="cpu")}
    batches = [int(b) for b in args.batches.split(",")]
    threads_list = [int(t) for t in args.threads.split(",")]
    default_threads = torch.get_num_threads()
    rows, whole = [], []
    try:
        for threads in threads_list:
            torch.set_num_threads(threads)
            for batch in batches:
                for name, fn in _parts(cap, batch, args.step).items():
                    row = measure(name, fn, args.repeats + (batch == 1))
                    rows.append(dict(row, batch=batch, threads=threads))
                    print(f"{threads} threads, batch {batch}: {name} {row['gflops']:.0f} GFLOP/s, "
                          f"{100 * row['fraction']:.0f}% of {row['matmul_gflops_at_shapes']:.0f}", flush=True)
            probe = matmul_rates("cpu")["fp32"]
            whole += [_whole(c, threads, probe, caption) for caption, c in captioners.items()]
    finally:
        torch.set_num_threads(default_threads)
    print_table(f"Roofline, fp32, rn50-full, {cpu_model()} (target: every part at batch 16 with 2 threads "
                f">= {TARGET_FRACTION:.0%} of the matmul rate at its shapes)",
                ["threads", "batch", "part", "GFLOP", "ms", "GFLOP/s", "matmul at shapes", "fraction", "why not more"],
                [[r["threads"], r["batch"], r["part"], f"{r['gflop']:.3f}", f"{1000 * r['seconds']:.1f}",
                  f"{r['gflops']:.0f}", f"{r['matmul_gflops_at_shapes']:.0f}", f"{100 * r['fraction']:.0f}%",
                  r.get("why", "")] for r in rows])
    print_table(f"The whole describe_pairs, batch 16 (target >= {WHOLE_TARGET_FRACTION:.0%} of the 1024^2 "
                "matmul probe)", ["threads", "captions", "GFLOP a pair", "s a pair", "GFLOP/s", "probe GFLOP/s", "fraction"],
                [[w["threads"], w["captions"], f"{w['gflop_per_pair']:.1f}", f"{w['seconds_per_pair']:.3f}", f"{w['gflops']:.0f}",
                  f"{w['probe_gflops']:.0f}", f"{100 * w['fraction']:.0f}%"] for w in whole])
    write_result("bench_roofline", {"rows": rows, "whole_describe_pairs": whole, "step": args.step,
                                    "target_fraction": TARGET_FRACTION})
    return 0


def _whole(cap, threads, probe_gflops, caption, batch=16):
    before = cap.preprocess(torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8))
    after = cap.preprocess(torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        cap.net.decoder.greedy(cap.net.encoder(before, after)[0], cap.vocab.start, cap.vocab.end)
    seconds = _best_seconds(lambda: cap.describe_pairs(before, after), 1)
    gflops = counter.get_total_flops() / seconds / 1e9
    return {"threads": threads, "captions": caption, "batch": batch, "gflop_per_pair": counter.get_total_flops() / batch / 1e9,
            "seconds_per_pair": seconds / batch, "gflops": gflops, "probe_gflops": probe_gflops,
            "fraction": gflops / probe_gflops}


if __name__ == "__main__":
    raise SystemExit(main())
