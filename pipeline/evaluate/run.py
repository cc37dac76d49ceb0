"""`rsicrc evaluate`: the RSICRC model on a LEVIR-CC split, scored as the official `src/eval.py` does.

One pass of the model over the split's pairs (batched, greedy decoding with the key/value cache,
the next batch read while the model works) gives each pair's caption and embedding. Captioning
is scored by `caption_metrics`, text-to-pair retrieval by `retrieval_metrics`; each also without
the no-change pairs ("_sub", as the official run). OUT_DIR receives metrics.json, captions.json
({filename: caption}) and report.md, each written to a temporary file and moved into place.

Where the official code cannot be followed: it stops with an error on a first sentence longer
than max_len - 2 tokens (that pair asks no query here, and stays in the gallery), and pads a
record of fewer than five sentences with random repeats that then also count as references
(here the sentences are used as written; LEVIR-CC has five each).
"""
import datetime
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import caption_metrics as cm, retrieval_metrics as rm
from ..caption_params import MAX_BATCH_PIXELS, CaptionParams, ParamError, check_value, default_model
from ..errors import BadInput
from ..models import load_captioner
from ..output_file import OutputKind, check_output, folder_write_problem
from .levir_cc import check_images, read_pair, read_split

OUTPUT_FILES = ("metrics.json", "captions.json", "report.md")
EVALUATION_FILE = OutputKind("file name", "output folder", "output folder", "an evaluation file written by rsicrc",
                             lambda path: True, ".tmpXXXXXXXX.tmp.")


@dataclass
class EvaluateResult:
    output: str
    metrics: dict
    captions: dict
    report: str


def run_evaluate(annotations, images, output, reporter, *, split="test", model=None, device="auto",
                 batch_size=CaptionParams.batch_size, captioner=None, precision=CaptionParams.precision):
    """Evaluate one split; returns EvaluateResult. `captioner`: an already loaded Captioner."""
    try:
        batch_size = check_value("batch_size", batch_size)
        device = check_value("device", device)
        precision = check_value("precision", precision)
    except ParamError as e:
        raise BadInput(str(e)) from None
    pairs = read_split(annotations, images, split)
    h, w = check_images(pairs)
    if batch_size * h * w > MAX_BATCH_PIXELS:
        raise BadInput(f"--batch-size {batch_size} with {w}x{h} px images would hold too many pixels in memory; "
                       f"use --batch-size {max(1, MAX_BATCH_PIXELS // (h * w))} or less")
    out, made = _prepare_output(output, annotations)
    try:
        return _evaluate(pairs, split, annotations, images, out, reporter, model, device, batch_size, captioner,
                         precision)
    except BaseException:
        if made:  # leave no empty folder behind a refused run
            try:
                out.rmdir()
            except OSError:
                pass
        raise


def _evaluate(pairs, split, annotations, images, out, reporter, model, device, batch_size, captioner, precision):
    cap = captioner or load_captioner(model or default_model(), device, precision)
    reporter.start(len(pairs), str(out))
    captions, gallery = _caption_pairs(cap, pairs, batch_size, reporter)
    query_rows, skipped, queries = _queries(cap, pairs, batch_size)
    related, rule = rm.relatedness([p.references for p in pairs], cap.config, cap.device)
    if rule["relevance"] != "sentence_embeddings":
        reporter.warning(f"retrieval: {rule['rule']} ({rule['why']})")

    changed = [i for i, p in enumerate(pairs) if p.changed]
    references = [list(p.references) for p in pairs]
    corpora = {"captioning": list(range(len(pairs))), "captioning_sub": changed}
    metrics = {}
    for key, rows in corpora.items():
        metrics[key] = cm.official_scores([references[i] for i in rows], [captions[i] for i in rows]) if rows else None
    present = [key for key, rows in corpora.items() if rows]
    meteor, why_not = cm.meteor_scores([([references[i] for i in corpora[key]], [captions[i] for i in corpora[key]])
                                        for key in present])
    if meteor is not None:
        for key, score in zip(present, meteor):
            metrics[key]["METEOR"] = score
    else:
        reporter.warning(f"METEOR not computed: {why_not}")

    flags = np.array([p.flag for p in pairs])
    metrics["retrieval"] = rm.search_scores(gallery, queries, query_rows, flags, related)
    sub = np.array(changed, dtype=np.int64)
    position = {row: j for j, row in enumerate(changed)}
    sub_queries = [q for q, row in enumerate(query_rows) if row in position]
    metrics["retrieval_sub"] = rm.search_scores(gallery[sub], queries[sub_queries],
                                                [position[query_rows[q]] for q in sub_queries],
                                                flags[sub], related[np.ix_(sub, sub)]) if changed else None
    metrics["settings"] = _settings(cap, pairs, split, annotations, images, changed, query_rows, sub_queries,
                                    skipped, rule, why_not)
    by_name = {p.filename: c for p, c in zip(pairs, captions)}
    report = format_evaluation_report(metrics)
    _write_outputs(out, {
        "metrics.json": json.dumps(metrics, indent=1, allow_nan=False) + "\n",
        "captions.json": json.dumps(by_name, indent=1, ensure_ascii=False) + "\n",
        "report.md": report,
    })
    reporter.done(str(out), len(pairs), 0)
    return EvaluateResult(str(out), metrics, by_name, report)


def _prepare_output(output, annotations):
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise BadInput("exists and is not a folder (give the folder for metrics.json, captions.json, report.md)",
                       out)
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot be created ({exc.strerror or exc})", out) from None
    problem = folder_write_problem(out)
    if problem:
        if made:
            out.rmdir()
        raise BadInput(f"output folder is not writable ({problem})", out)
    for name in OUTPUT_FILES:  # rsicrc's own results in the folder chosen for them: replaced
        check_output(out / name, EVALUATION_FILE, [(annotations, "the annotation file")], overwrite=True)
    return out, made


def _image_batches(pairs, size):
    """(pairs, befores, afters) per batch; the next batch is read while the caller runs the model."""
    chunks = [pairs[i:i + size] for i in range(0, len(pairs), size)]

    def read(chunk):
        images = [read_pair(p) for p in chunk]
        return [b for b, _ in images], [a for _, a in images]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rsicrc-levir-reader") as pool:
        pending = pool.submit(read, chunks[0])
        for i, chunk in enumerate(chunks):
            before, after = pending.result()
            if i + 1 < len(chunks):
                pending = pool.submit(read, chunks[i + 1])
            yield chunk, before, after


def _preprocessed(cap, images):
    if len({im.shape for im in images}) == 1:
        return cap.preprocess(np.stack(images))
    import torch  # pairs of several sizes in one batch: each is resized to the model's input on its own

    return torch.cat([cap.preprocess(im[None]) for im in images])


def _caption_pairs(cap, pairs, batch_size, reporter):
    """Greedy captions and L2-normalised pair embeddings (N, d) float32, in pair order."""
    captions, embeddings = [], []
    for chunk, before, after in _image_batches(pairs, batch_size):
        texts, emb = cap.caption_and_embed(_preprocessed(cap, before), _preprocessed(cap, after))
        captions += [t.strip() for t in texts]  # the official sentence is ' '.join(words).strip()
        embeddings.append(emb.numpy().astype(np.float32))
        reporter.advance(len(captions), len(pairs))
    return captions, np.concatenate(embeddings)


def _queries(cap, pairs, batch_size):
    """Each pair's first sentence as the official query: its tokens through the vocabulary (unknown
    words -> UNK), START + ids + END; a sentence longer than max_len - 2 tokens asks no query."""
    vocab, limit = cap.vocab, cap.cfg.max_len - 2
    rows, skipped, seqs = [], [], []
    for i, p in enumerate(pairs):
        if len(p.first_tokens) > limit:
            skipped.append(p.filename)
            continue
        rows.append(i)
        seqs.append([vocab.start] + [vocab.word_to_id.get(t, vocab.unk) for t in p.first_tokens] + [vocab.end])
    parts = [cap.embed_token_ids(seqs[i:i + batch_size]).numpy() for i in range(0, len(seqs), batch_size)]
    queries = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, cap.embedding_dim), np.float32)
    return rows, skipped, queries


def _settings(cap, pairs, split, annotations, images, changed, query_rows, sub_queries, skipped, rule, why_not):
    from rsicrc import __version__

    return {
        "split": split,
        "pairs": len(pairs),
        "pairs_sub": len(changed),
        "annotations": os.path.abspath(annotations),
        "images": os.path.abspath(images),
        "model_source": cap.source,
        "model_sha256": cap.sha256,
        "precision": cap.precision,
        "software_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "captioning": {
            "hypothesis": "the greedy caption",
            "references": "every sentence's raw text as given (no PTB tokenisation)",
            "metrics": "pycocoevalcap 1.2 scorers as the official eval_func copies (BLEU closest length, "
                       "CIDEr n=4 sigma=6, ROUGE-L beta 1.2)",
            "meteor": "computed with pycocoevalcap's METEOR 1.5 jar" if why_not is None else f"absent: {why_not}",
        },
        "retrieval": {
            **rule,
            "gallery": len(pairs),
            "gallery_sub": len(changed),
            "queries": len(query_rows),
            "queries_sub": len(sub_queries),
            "skipped_queries": skipped,
            "skipped_because": f"first sentence longer than max_len - 2 = {cap.cfg.max_len - 2} tokens",
            "at_k": list(rm.AT_K),
            "ranking": "exact inner product with the L2-normalised pair embeddings",
            "precision": "relevant pairs in the top k / k",
            "query_pair": "relevant to itself (same flag) and counted when retrieved",
        },
    }


def format_evaluation_report(metrics):
    """report.md: the captioning and retrieval tables, all pairs and without the no-change pairs."""
    s = metrics["settings"]
    lines = [f"# RSICRC on LEVIR-CC, split {s['split']}", "",
             f"{s['pairs']} pairs ({s['pairs_sub']} with changes). Model {s['model_source']} "
             f"(sha256 {s['model_sha256'][:12]}).", "", "## Captioning", ""]
    names = list(cm.OFFICIAL_METRICS) + (["METEOR"] if "METEOR" in (metrics["captioning"] or {}) else [])
    lines += ["| pairs | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label in (("captioning", "all"), ("captioning_sub", "changed only")):
        lines.append(_row(label, metrics[key], names))
    lines += ["", f"METEOR: {s['captioning']['meteor']}.", "", "## Retrieval", ""]
    names = rm.metric_names()
    lines += ["| pairs | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label in (("retrieval", "all"), ("retrieval_sub", "changed only")):
        lines.append(_row(label, metrics[key], names))
    r = s["retrieval"]
    lines += ["", f"Relevant: {r['rule']}.", f"Queries: {r['queries']} ({r['queries_sub']} changed only); "
              f"{len(r['skipped_queries'])} skipped ({r['skipped_because']}).", ""]
    return "\n".join(lines)


def _row(label, values, names):
    if values is None:
        return f"| {label} | " + " | ".join("-" for _ in names) + " |"
    return f"| {label} | " + " | ".join(f"{values[n]:.4f}" if n in values else "-" for n in names) + " |"


def _write_outputs(out, texts):
    """Every file to a temporary file in OUT_DIR first, then each moved into place."""
    temps = {}
    try:
        for name, text in texts.items():
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
            temps[name] = tmp
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the results are ordinary files
    except OSError as exc:
        for tmp in temps.values():
            try:
                os.remove(tmp)
            except OSError:
                pass
        raise BadInput(f"cannot be written ({exc.strerror or exc}; is the disk full?)", out) from None
    for name, tmp in temps.items():
        os.replace(tmp, out / name)


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
