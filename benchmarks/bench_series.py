"""Time series without double work: each date's image through the backbone once, not twice.

N dates give N-1 intervals a tile; every middle date is the AFTER of one interval and the BEFORE
of the next. `describe_pairs` on the intervals' pairs (what a run did before) sends 2(N-1) images
a tile through the image backbone; `describe_dates` (what `rsicrc caption D1 ... DN` runs now)
sends N. Both on the released configuration with generated weights, the same tiles, one model
call each, in the same process; the captions, embeddings and scores must be identical.
"""
import argparse

import numpy as np
import torch

from bench_model import LEVIR_WORDS_CASE, levir_words_checkpoint
from common import Timer, cpu_model, print_table, write_result


def _dates(n_dates, tiles, size=256, seed=7):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n_dates, tiles, 3, size // 32, size // 32), dtype=np.uint8)
    images = coarse.repeat(32, axis=3).repeat(32, axis=4)
    noise = rng.integers(-20, 21, images.shape)
    return np.clip(images.astype(np.int16) + noise, 0, 255).astype(np.uint8).reshape(-1, 3, size, size)


def run(tiles=8, date_counts=(3, 5), repeats=3):
    from rsicrc.model import load_model

    cap = load_model(str(levir_words_checkpoint()), device="cpu")
    backbone = cap.net.encoder.encoder
    counted = []
    backbone.register_forward_hook(lambda module, args, out: counted.append(len(args[0])))
    warm = cap.preprocess(_dates(2, 1))
    cap.describe_dates(warm, [0], [1])
    results, rows = {"case": LEVIR_WORDS_CASE, "tiles": tiles, "runs": []}, []
    for n in date_counts:
        pre = cap.preprocess(_dates(n, tiles))  # date-major: image d * tiles + t
        b_rows = np.concatenate([k * tiles + np.arange(tiles) for k in range(n - 1)])
        a_rows = b_rows + tiles
        times = {"pairs": [], "dates": []}
        for _ in range(repeats):  # alternated, best of each: this VM's speed drifts minute to minute
            counted.clear()
            with Timer() as old:
                pairs = cap.describe_pairs(pre[b_rows], pre[a_rows])
            old_images = sum(counted)
            counted.clear()
            with Timer() as new:
                dates = cap.describe_dates(pre, b_rows, a_rows)
            new_images = sum(counted)
            times["pairs"].append(old.seconds)
            times["dates"].append(new.seconds)
        same = (dates.captions == pairs.captions and torch.equal(dates.embeddings, pairs.embeddings)
                and torch.equal(dates.change_scores, pairs.change_scores))
        before_s, after_s = min(times["pairs"]), min(times["dates"])
        saved = 1 - after_s / before_s
        results["runs"].append({"dates": n, "pairs": len(b_rows), "backbone_images_before": old_images,
                                "backbone_images_after": new_images, "seconds_before": times["pairs"],
                                "seconds_after": times["dates"], "saved_fraction": saved, "identical": same})
        rows.append([n, len(b_rows), f"{old_images} -> {new_images}", f"{before_s:.2f}", f"{after_s:.2f}",
                     f"{100 * saved:.1f} %", "yes" if same else "NO"])
    print_table(f"Time series of {tiles} tiles, released configuration ({LEVIR_WORDS_CASE}), fp32, {cpu_model()}, "
                f"{torch.get_num_threads()} threads",
                ["dates", "pairs", "backbone images", f"describe_pairs s (best of {repeats})",
                 f"describe_dates s (best of {repeats})", "saved", "identical"],
                rows)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    results = run(args.tiles, repeats=args.repeats)
    write_result("series", results)
    return 0 if all(r["identical"] for r in results["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
