"""RSICRC per-tile work: the official algorithm against rsicrc, and the pipeline end to end.

    python benchmarks/bench_model.py [--size 4096] [--card-pairs 3] [--device cpu]

The user's ratio: the baseline is the official inference re-implemented op for op
(`official_loop.py`: one pair at a time, open_clip's PIL preprocessing, the whole prefix
recomputed for every token), against what `rsicrc caption` runs for a tile pair
(`preprocess` + `describe_pairs`: caption, embedding and change score) at the default batch size,
in the same process, on the same tiles. Both run the released configuration (rn50-full: d_model
2048, 351 M parameters) with generated weights, the real ones not being reachable here; its
vocabulary is the parity case's with the missing words of LEVIR-CC's "no change" sentences
renamed in, so the change score costs what it costs with the real vocabulary.

Rows: the official loop on `--card-pairs` tiles (its rate per pair does not depend on how many;
it takes seconds a pair); rsicrc on all tiles of a `--size` px generated pair; rsicrc in bf16 when
the CPU has bf16 instructions (an explicit, lossy option: its token agreement with fp32 is
printed, on the bench tiles and on the parity cases); and `rsicrc caption` end to end on the
same pair, with its overhead over the model alone. Token checks: rsicrc against the official
code on the same preprocessed tensors (must be identical) and each with its own preprocessing.
Generated weights write 41-token captions, the longest there are, which flatters a cached
decoder against the official loop (its cost grows with the square of the caption length); so
both run again, same run, same tiles, on the same weights cut to max_len 11 (the position
table's first rows): 11-token captions, LEVIR-CC's length, the user's ratio.
"""
import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import RESULTS, Timer, generated_checkpoint, peak_rss_mb, print_table, write_result

LEVIR_WORDS_CASE = "rn50-full-levir-words"


def levir_words_checkpoint(cache_dir=None):
    """rn50-full with every word of the "no change" sentences in its vocabulary (renamed onto the
    highest ids, which those sentences and the generated captions do not use); same weights."""
    from rsicrc.model.change_score import NO_CHANGE_SENTENCES

    source = generated_checkpoint("rn50-full", cache_dir)
    folder = Path(cache_dir or (RESULTS / "checkpoints")) / LEVIR_WORDS_CASE
    if (folder / "levir_vocab.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    vocab = json.loads((source / "levir_vocab.json").read_text())
    wanted = sorted({w for s in NO_CHANGE_SENTENCES for w in s.split()} - set(vocab))
    by_id = sorted(vocab.items(), key=lambda kv: -kv[1])
    for word, (old, idx) in zip(wanted, by_id):
        del vocab[old]
        vocab[word] = idx
    (folder / "config.json").write_text((source / "config.json").read_text())
    weights = folder / "pytorch_model.bin"
    if not weights.exists():
        os.symlink((source / "pytorch_model.bin").resolve(), weights)
    tmp = folder / "levir_vocab.json.tmp"
    tmp.write_text(json.dumps(vocab))
    tmp.replace(folder / "levir_vocab.json")
    return folder


SHORT_MAX_LEN = 11  # LEVIR-CC's captions are about 10 words: generated weights then write 11 tokens


def short_caption_checkpoint(source):
    """`source` with max_len SHORT_MAX_LEN: the same weights, the position table cut to its first
    rows, so each caption is the first SHORT_MAX_LEN tokens of the long model's (same greedy steps)."""
    folder = source.parent / f"{source.name}-len{SHORT_MAX_LEN}"
    if (folder / "pytorch_model.bin").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((source / "config.json").read_text())
    long_len, cfg["max_len"] = cfg["max_len"], SHORT_MAX_LEN
    state = torch.load(source / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True)
    state = {k: v[:, :SHORT_MAX_LEN].clone() if k.endswith("position_encoding.pe") and v.shape[1] == long_len
             else v for k, v in state.items()}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "levir_vocab.json").write_text((source / "levir_vocab.json").read_text())
    torch.save(state, folder / "pytorch_model.bin.tmp")
    (folder / "pytorch_model.bin.tmp").replace(folder / "pytorch_model.bin")
    return folder


def _short_captions(folder, before, after, batch, card_pairs):
    """The ratio at real caption length: the official loop and describe_pairs, same run, same tiles,
    on the SHORT_MAX_LEN checkpoint; tokens compared on the same preprocessed input."""
    from official_loop import load_official, official_pair, official_transform
    from rsicrc.model import load_model

    short = short_caption_checkpoint(folder)
    cap = load_model(str(short), device="cpu")
    cap.describe_pairs(cap.preprocess(torch.from_numpy(before[:2])), cap.preprocess(torch.from_numpy(after[:2])))
    ours_s, described = describe_all(cap, before, after, batch)
    official, vocab = load_official(short)
    transform = official_transform()
    official_pair(official, vocab, transform, before[0], after[0])  # warm-up
    with Timer() as t_off:
        for i in range(card_pairs):
            official_pair(official, vocab, transform, before[i], after[i])
    same = _same_input_check(official, vocab, cap, before[:card_pairs], after[:card_pairs])
    ours_rate, off_rate = len(before) / ours_s, card_pairs / t_off.seconds
    return {"max_len": SHORT_MAX_LEN, "rsicrc_pairs_per_s": ours_rate, "official_pairs_per_s": off_rate,
            "official_pairs": card_pairs, "speedup": ours_rate / off_rate,
            "mean_caption_tokens": float(np.mean([len(c.split()) + 1 for r in described for c in r.captions])),
            **same}


def bf16_supported():
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _tiles(pair, tile, limit=None):
    from rsicrc.pipeline.raster.grid_reader import open_on_grid
    from rsicrc.pipeline.raster.pair_plan import plan_pair
    from rsicrc.pipeline.raster.tiling import tile_grid

    plan = plan_pair(*pair, tile_size=tile)
    tiles = list(tile_grid(plan.window, tile))[:limit]
    with open_on_grid(plan.before, plan.grid) as rb, open_on_grid(plan.after, plan.grid) as ra:
        before = np.stack([rb.read((t.col, t.row, tile, tile))[0] for t in tiles])
        after = np.stack([ra.read((t.col, t.row, tile, tile))[0] for t in tiles])
    return before, after


def describe_all(cap, before, after, batch):
    """describe_pairs over every tile in batches, as `rsicrc caption` calls it: (seconds, results)."""
    results = []
    with Timer() as t:
        for s in range(0, len(before), batch):
            b = torch.from_numpy(before[s:s + batch])
            a = torch.from_numpy(after[s:s + batch])
            results.append(cap.describe_pairs(cap.preprocess(b), cap.preprocess(a)))
    return t.seconds, results


def _generate(cap, before, after, batch):
    out = []
    for s in range(0, len(before), batch):
        out += cap.generate(cap.preprocess(torch.from_numpy(before[s:s + batch])),
                            cap.preprocess(torch.from_numpy(after[s:s + batch])))
    return out


def token_agreement(a, b):
    """(pairs whose tokens are identical, share of token positions that agree) of two decodings."""
    same = sum(x == y for x, y in zip(a, b))
    agree = total = 0
    for x, y in zip(a, b):
        total += max(len(x), len(y))
        agree += sum(p == q for p, q in zip(x, y))
    return same, agree / max(total, 1)


def parity_agreement(dtype, device="cpu"):
    """`dtype` against fp32 tokens on every parity case's inputs (the cases' own checkpoints), on `device`."""
    from parity_recipe import CASE_NAMES, load_case, pair_inputs
    from rsicrc.model import load_model

    out = {}
    for name in CASE_NAMES:
        case = load_case(name)
        folder = generated_checkpoint(name)
        before, after = (torch.from_numpy(x) for x in pair_inputs(case))
        ref = load_model(str(folder), device=device).generate(before, after)
        low = load_model(str(folder), device=device, dtype=dtype).generate(before, after)
        same, share = token_agreement(ref, low)
        out[name] = {"pairs": len(ref), "identical": same, "token_share": share}
    return out


def run(size=4096, tile=256, card_pairs=3, device="cpu", work=None, low_precision=True):
    from bench_pipeline import _pair, _throughput
    from official_loop import load_official, official_pair, official_transform
    from rsicrc.model import load_model
    from rsicrc.pipeline.caption_params import CaptionParams

    batch = CaptionParams.__dataclass_fields__["batch_size"].default
    folder = levir_words_checkpoint()
    work = Path(work or tempfile.mkdtemp(prefix="rsicrc-bench-model-"))
    work.mkdir(parents=True, exist_ok=True)
    pair = _pair(work, size)
    before, after = _tiles(pair, tile)
    n = len(before)
    results = {"case": LEVIR_WORDS_CASE, "tiles": n, "tile_size": tile, "size_px": size, "batch": batch,
               "device": device, "official_pairs": card_pairs}

    cap = load_model(str(folder), device=device)
    results["rss_after_load_mb"] = round(peak_rss_mb(), 1)
    cap.describe_pairs(cap.preprocess(torch.from_numpy(before[:2])), cap.preprocess(torch.from_numpy(after[:2])))
    ours_s, described = describe_all(cap, before, after, batch)
    ours_rate = n / ours_s
    results["rsicrc_pairs_per_s"] = ours_rate
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    results["mean_caption_tokens"] = float(np.mean([len(c.split()) + 1 for r in described for c in r.captions]))
    ours_tokens = _generate(cap, before[:card_pairs], after[:card_pairs], batch)

    # The pipeline end to end on the same pair (model load excluded), and the model alone again.
    results["pipeline"] = _throughput(cap, pair, work, tile=tile, batch=batch, repeats=1)

    low = None
    if low_precision and device == "cpu" and bf16_supported():
        low_cap = load_model(str(folder), device=device, dtype="bf16")
        low_cap.describe_pairs(low_cap.preprocess(torch.from_numpy(before[:2])),
                               low_cap.preprocess(torch.from_numpy(after[:2])))
        low_s, _ = describe_all(low_cap, before, after, batch)
        agree_n = min(n, 2 * batch)
        same, share = token_agreement(_generate(cap, before[:agree_n], after[:agree_n], batch),
                                       _generate(low_cap, before[:agree_n], after[:agree_n], batch))
        low = {"pairs_per_s": n / low_s, "agree_pairs": agree_n, "identical": same, "token_share": share}
        del low_cap
        low["parity"] = parity_agreement("bf16")
        results["rsicrc_bf16"] = low

    official, vocab = load_official(folder)
    transform = official_transform()
    official_pair(official, vocab, transform, before[0], after[0])  # warm-up
    with Timer() as t_off:
        card = [official_pair(official, vocab, transform, before[i], after[i]) for i in range(card_pairs)]
    off_rate = card_pairs / t_off.seconds
    results["official_pairs_per_s"] = off_rate
    results["speedup"] = ours_rate / off_rate
    same_own, _ = token_agreement([c[0] for c in card], ours_tokens)
    results["tokens_identical_own_preprocessing"] = f"{same_own}/{card_pairs}"
    # The same preprocessed tensors through both: the network itself must agree exactly.
    same_input = _same_input_check(official, vocab, cap, before[:card_pairs], after[:card_pairs])
    results.update(same_input)
    del cap, official
    short = results["short_captions"] = _short_captions(folder, before, after, batch, min(n, max(card_pairs, 5)))

    rows = [["official loop (1 pair, PIL preprocessing, no cache)", "fp32", f"{off_rate:.3f}",
             f"{1 / off_rate:.2f}", "1.0x", "-"],
            [f"rsicrc describe_pairs (batch {batch})", "fp32", f"{ours_rate:.3f}", f"{1 / ours_rate:.3f}",
             f"{ours_rate / off_rate:.1f}x",
             f"same input: {same_input['tokens_identical_same_input']}; own preprocessing: "
             f"{results['tokens_identical_own_preprocessing']}"]]
    if low is not None:
        parity = ", ".join(f"{k} {v['identical']}/{v['pairs']}" for k, v in low["parity"].items())
        rows.append([f"rsicrc describe_pairs (batch {batch}), --precision bf16", "bf16",
                     f"{low['pairs_per_s']:.3f}", f"{1 / low['pairs_per_s']:.3f}",
                     f"{low['pairs_per_s'] / off_rate:.1f}x",
                     f"vs fp32: {low['identical']}/{low['agree_pairs']} pairs, {100 * low['token_share']:.1f} % "
                     f"tokens; parity cases {parity}"])
    rows += [[f"official loop, {SHORT_MAX_LEN}-token captions (max_len {SHORT_MAX_LEN})", "fp32",
              f"{short['official_pairs_per_s']:.3f}", f"{1 / short['official_pairs_per_s']:.2f}", "1.0x", "-"],
             [f"rsicrc describe_pairs (batch {batch}), {SHORT_MAX_LEN}-token captions", "fp32",
              f"{short['rsicrc_pairs_per_s']:.3f}", f"{1 / short['rsicrc_pairs_per_s']:.3f}",
              f"{short['speedup']:.1f}x", f"same input: {short['tokens_identical_same_input']}"]]
    pipe = results["pipeline"]
    rows.append([f"rsicrc caption end to end, {size} px pair", "fp32", f"{pipe['pipeline_tiles_per_s']:.3f}",
                 f"{1 / pipe['pipeline_tiles_per_s']:.3f}", f"{pipe['pipeline_tiles_per_s'] / off_rate:.1f}x",
                 f"overhead over the model alone {pipe['overhead_pct']:+.1f} %"])
    title = (f"RSICRC per-tile work, released configuration ({LEVIR_WORDS_CASE}), {n} tiles of {tile} px, "
             f"device {device}" + (f" ({torch.cuda.get_device_name(0)})" if device.startswith("cuda") else ""))
    print_table(title, ["path", "dtype", "pairs/s", "s/pair", "vs official", "tokens"], rows)
    print(f"baseline: the official algorithm as the official code runs it ({card_pairs} pairs), same run; "
          f"peak RSS of rsicrc {results['peak_rss_mb']:.0f} MB (before the official model loads); "
          f"mean caption length {results['mean_caption_tokens']:.1f} tokens; embeddings on the same input "
          f"differ by at most {same_input['embedding_max_diff_same_input']:.1e}")
    return results


def _same_input_check(official, vocab, cap, before, after):
    from official_loop import official_tokens

    b, a = cap.preprocess(torch.from_numpy(before)), cap.preprocess(torch.from_numpy(after))
    ours = cap.describe_pairs(b, a)
    ours_ids = cap.generate(b, a)
    theirs = [official_tokens(official, vocab, b[i:i + 1], a[i:i + 1]) for i in range(len(b))]
    same = sum(x[0] == y for x, y in zip(theirs, ours_ids))
    diff = max(float((x[1] - e).abs().max()) for x, e in zip(theirs, ours.embeddings))
    return {"tokens_identical_same_input": f"{same}/{len(b)}", "embedding_max_diff_same_input": diff}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096, help="side of the generated pair in px (default 4096)")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--card-pairs", type=int, default=3, help="pairs run the official way")
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", help="folder for the generated pair (default: a temp folder)")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 row")
    args = p.parse_args(argv)
    results = run(args.size, args.tile, args.card_pairs, args.device, args.work, not args.no_bf16)
    write_result("model" if args.device == "cpu" else f"model-{args.device.replace(':', '')}", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
