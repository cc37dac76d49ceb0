"""RSICRC model throughput: the model card's way against this package's batched, cached path.

The model card's way encodes one pair at a time and decodes greedily by running the whole
decoder over the growing prefix at every step. This package encodes and decodes a batch at
once with a key/value cache, dropping rows that have finished. Both run on pairs of the
released configuration (generated weights: the real ones are not reachable here). The model
card's way takes tens of seconds a pair on a laptop CPU, so it runs on the first
`--card-pairs` of the pairs (its rate per pair does not depend on how many); the tokens are
compared on those pairs and must be identical.
"""
import argparse

import torch

from common import Timer, generated_checkpoint, peak_rss_mb, print_table, write_result


def model_card_generate(model, before, after):
    """One pair at a time, the whole prefix recomputed each step (the official loop)."""
    vocab, dec = model.vocab, model.net.decoder
    out = []
    with torch.inference_mode():
        for i in range(len(before)):
            memory, _ = model.net.encoder(before[i:i + 1], after[i:i + 1])
            ids = [vocab.start]
            for _ in range(model.cfg.max_len):
                logits = dec.logits(torch.tensor([ids], device=memory.device), memory)
                ids.append(int(logits[0, -1].argmax()))
                if ids[-1] == vocab.end:
                    break
            out.append(ids)
    return out


def random_pairs(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    before = torch.randint(0, 256, (n, 3, 256, 256), dtype=torch.uint8, generator=g)
    after = torch.randint(0, 256, (n, 3, 256, 256), dtype=torch.uint8, generator=g)
    return model.preprocess(before), model.preprocess(after)


def run(case="rn50-full", pairs=16, batch=16, device="cpu", dtypes=("fp32",), card_pairs=4):
    from rsicrc.model import load_model

    folder = generated_checkpoint(case)
    card_pairs = min(card_pairs, pairs)
    rows, results = [], {"case": case, "pairs": pairs, "batch": batch, "device": device,
                         "model_card_pairs": card_pairs}
    base = load_model(str(folder), device=device)
    results["rss_after_load_mb"] = round(peak_rss_mb(), 1)
    before, after = random_pairs(base, pairs)
    base.generate(before[:1], after[:1])  # warm-up

    with Timer() as t_card:
        card_tokens = model_card_generate(base, before[:card_pairs], after[:card_pairs])
    card_rate = card_pairs / t_card.seconds
    rows.append(["model card (1 pair, no cache)", "fp32", f"{card_rate:.3f}", "1.0x", "-"])
    results["model_card_pairs_per_s"] = card_rate

    for dt in dtypes:
        model = base if dt == "fp32" else load_model(str(folder), device=device, dtype=dt)
        with Timer() as t:
            tokens = []
            for s in range(0, pairs, batch):
                tokens += model.generate(before[s:s + batch], after[s:s + batch])
        rate = pairs / t.seconds
        same = tokens[:card_pairs] == card_tokens
        agree = sum(a == b for a, b in zip(tokens, card_tokens))
        rows.append([f"rsicrc (batch {batch}, cached)", dt, f"{rate:.3f}", f"{rate / card_rate:.1f}x",
                     f"{agree}/{card_pairs} identical"])
        results[f"rsicrc_{dt}_pairs_per_s"] = rate
        results[f"rsicrc_{dt}_speedup"] = rate / card_rate
        results[f"rsicrc_{dt}_tokens_identical"] = same
        results[f"rsicrc_{dt}_pairs_identical"] = agree
    results["mean_generated_tokens"] = sum(len(t) - 1 for t in card_tokens) / card_pairs
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    title = f"RSICRC model, {case} config, {pairs} pairs, device {device}"
    if device.startswith("cuda"):
        title += f" ({torch.cuda.get_device_name(0)})"
    print_table(title, ["path", "dtype", "pairs/s", "speed-up", "tokens vs model card"], rows)
    print(f"peak RSS {results['peak_rss_mb']} MB; mean new tokens per pair {results['mean_generated_tokens']:.1f}")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="rn50-full")
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--card-pairs", type=int, default=4, help="pairs run the model card's way")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", default=None, help="comma list; default fp32 on CPU, fp32,bf16,fp16 on GPU")
    args = p.parse_args(argv)
    dtypes = args.dtypes.split(",") if args.dtypes else (
        ["fp32"] if args.device == "cpu" else ["fp32", "bf16", "fp16"])
    results = run(args.case, args.pairs, args.batch, args.device, dtypes, args.card_pairs)
    write_result("model" if args.device == "cpu" else f"model-{args.device.replace(':', '')}", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
