"""`rsicrc train`: fine-tune an RSICRC model on a LEVIR-CC-format dataset, with the official objective.

The loop is the official src/train.py's: every caption of the 'train' split is a sample, shuffled
each epoch (here by --seed and the epoch, so that a resumed run sees the same order), batches of
--batch-size; loss = caption cross-entropy + lamb x InfoNCE (`model/train/objective`); AdamW
(eps 1e-8) with a linear warm-up over --warmup of all steps, constant after. After each epoch the
'val' split is scored: the official selection loss (the same objective on each pair's first
sentence, eval mode) chooses the best epoch, and the official caption metrics of the greedy
captions (BLEU-1..4, ROUGE-L, CIDEr) are recorded beside it.

The new model folder is built in OUT_DIR.partial (the training state, the cached backbone
features) and moved to OUT_DIR when done: config.json and levir_vocab.json of the starting model,
pytorch_model.bin with the best epoch's weights, training.json (settings, data hash, the
vocabulary report and the metrics of every epoch). Run again, the same command goes on from the
last saved state; other settings, data or starting weights are refused rather than mixed.
Where the official code is not followed: no dropout (the network here is the inference one; the
official config trains with dropout 0.1), and two sentences are the same sentence when their
words are equal (the official compares sentence-transformer embeddings at a threshold of 1.0,
which only equal sentences reach).
"""
import hashlib
import json
import math
import os
import shutil
import time

import numpy as np
import torch

from rsicrc.model.device import resolve_dtype
from rsicrc.model.train.objective import objective
from rsicrc.model.train.trainable import set_trainable, train_mode

from ..errors import BadInput
from ..evaluate import caption_metrics as cm
from ..evaluate.levir_cc import check_images, read_pair, read_split
from ..models import load_captioner
from ..output_file import folder_write_problem
from . import state as saved
from .features import FeatureCache
from .samples import split_captions

WORK = ".training"
RECORD = "training.json"
HASH_CHUNK = 1 << 22


def run_train(params, reporter):
    """Train as `params` (TrainParams, checked) say; returns the path of the finished model folder."""
    out = os.path.abspath(params.output)
    partial = out + ".partial"
    if os.path.lexists(out):
        raise BadInput("exists; give a new folder for the trained model (it is built in "
                       f"{os.path.basename(partial)} and moved there when done)", out)
    train_pairs = read_split(params.annotations, params.images, "train")
    val_pairs = read_split(params.annotations, params.images, "val")
    _check_sizes(train_pairs + val_pairs)
    cap = load_captioner(params.model, params.device, "fp32")
    try:  # bf16 autocast where the model could run bf16 (resolve_dtype's rule), the weights fp32
        resolve_dtype(params.precision, cap.device)
    except ValueError as exc:
        raise BadInput(f"--precision {params.precision}: {exc}") from None
    train = split_captions(train_pairs, cap.vocab, cap.cfg.max_len, "train", params.annotations)
    val = split_captions(val_pairs, cap.vocab, cap.cfg.max_len, "val", params.annotations)
    _prepare(partial)  # after every check: a refused run leaves nothing behind
    for report in (train, val):
        if report.unknown_words or report.too_long:
            reporter.warning(report.summary("train" if report is train else "val"))
    fingerprint = {"settings": params.objective_settings(), "model": cap.source, "model_sha256": cap.sha256,
                   "data_sha256": _data_hash(params.annotations, train_pairs + val_pairs)}
    trainer = _Trainer(cap, params, train_pairs, val_pairs, train, val, os.path.join(partial, WORK), fingerprint)
    finished = trainer.run(reporter)
    if not finished:
        reporter.close()
        return None
    _write_model(cap, trainer, partial, params, fingerprint, train, val)
    shutil.rmtree(os.path.join(partial, WORK))
    os.replace(partial, out)
    reporter.close()
    return out


def _check_sizes(pairs):
    """Every image of the run has one size (LEVIR-CC's are all 256 x 256): a mixed dataset is a mistake."""
    first = None
    for pair in pairs:
        size = check_images([pair])
        if first is None:
            first = (size, pair.before)
        elif size != first[0]:
            (h, w), (h0, w0) = size, first[0]
            raise BadInput(f"is {w}x{h} px but {first[1]} is {w0}x{h0} px; every image of a training set must "
                           "have one size", pair.before)


def _prepare(partial):
    if os.path.lexists(partial) and not os.path.isdir(os.path.join(partial, WORK)):
        raise BadInput("exists and is not an interrupted `rsicrc train` run; remove it or choose another output",
                       partial)
    try:
        os.makedirs(os.path.join(partial, WORK), exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot be created ({exc.strerror or exc})", partial) from None
    problem = folder_write_problem(partial)
    if problem:
        raise BadInput(f"is not writable ({problem})", partial)


def _data_hash(annotations, pairs):
    """sha256 of the annotation file and of every image's bytes, in the run's order."""
    digest = hashlib.sha256()
    for path in [annotations] + [p for pair in pairs for p in (pair.before, pair.after)]:
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


class _Trainer:
    def __init__(self, cap, params, train_pairs, val_pairs, train, val, work, fingerprint):
        self.cap, self.params, self.work, self.fingerprint = cap, params, work, fingerprint
        self.train_pairs, self.val_pairs, self.train, self.val = train_pairs, val_pairs, train, val
        self.prefixes = saved.frozen_prefixes(params.freeze_backbone, params.freeze_encoder)
        self.trainable = set_trainable(cap.net, params.freeze_backbone, params.freeze_encoder)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=params.learning_rate, eps=1e-8)
        self.batches_per_epoch = math.ceil(len(train.samples) / params.batch_size)
        # The official warm-up: a fraction of (full batches an epoch x epochs) steps.
        warmup = params.warmup * (len(train.samples) // params.batch_size) * params.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: step / max(1.0, warmup) if step < warmup else 1.0)
        self.epoch = self.batch = self.step = 0
        self.history, self.best = [], None
        self.caches = {}

    # -- state ----------------------------------------------------------------------------
    def _resume(self, reporter):
        state = saved.load_state(self.work, saved.STATE)
        if state is None:
            return
        if state["fingerprint"] != self.fingerprint:
            changed = [k for k in self.fingerprint if state["fingerprint"].get(k) != self.fingerprint[k]]
            raise BadInput(f"holds an interrupted run with other {', '.join(changed)}; run the same command as "
                           "before, or remove it to start over", os.path.dirname(self.work))
        saved.load_learning_part(self.cap.net, state["net"], self.prefixes)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.history, self.best = state["history"], state["best"]
        reporter.warning(f"resuming the interrupted run at step {self.step} (epoch {self.epoch + 1}, batch "
                         f"{self.batch + 1})")

    def _save(self):
        saved.save_state(self.work, saved.STATE, {
            "net": saved.learning_part(self.cap.net, self.prefixes), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "batch": self.batch, "step": self.step,
            "history": self.history, "best": self.best, "fingerprint": self.fingerprint})

    # -- data -----------------------------------------------------------------------------
    def _cache_features(self, name, pairs):
        """The split's backbone features (frozen backbone), computed where missing."""
        spec = self.cap.cfg.backbone_spec
        self.cap.net.eval()
        cache = FeatureCache(self.work, name, 2 * len(pairs), (spec["feat_dim"], spec["grid"], spec["grid"]))
        cache.fill(self.cap, pairs)
        self.caches[name] = cache

    def _pair_features(self, split, indices):
        """The pairs' backbone features (B, C, h, w), from the cache or (backbone learning) computed."""
        cap = self.cap
        if self.params.freeze_backbone:
            return self.caches[split].pairs(indices, cap.device)
        pairs = self.train_pairs if split == "train" else self.val_pairs
        images = [read_pair(pairs[i]) for i in indices]
        before = cap.preprocess(torch.from_numpy(np.stack([b for b, _ in images])))
        after = cap.preprocess(torch.from_numpy(np.stack([a for _, a in images])))
        image_encoder = cap.net.encoder.encoder
        return image_encoder.trunk_features(before), image_encoder.trunk_features(after)

    def _batch_tensors(self, samples):
        device = self.cap.device
        longest = max(len(s.ids) for s in samples)
        ids = torch.full((len(samples), longest), self.cap.vocab.pad, dtype=torch.long)
        for row, s in enumerate(samples):
            ids[row, :len(s.ids)] = torch.tensor(s.ids)
        lengths = torch.tensor([len(s.ids) for s in samples])
        labels = torch.tensor([s.label for s in samples])
        sentences = torch.tensor([s.sentence for s in samples])
        return ids.to(device), lengths.to(device), labels.to(device), sentences.to(device)

    def _loss(self, split, samples):
        f1, f2 = self._pair_features(split, [s.pair for s in samples])
        image_encoder = self.cap.net.encoder.encoder
        autocast = torch.autocast(self.cap.device.type, dtype=torch.bfloat16, enabled=self.params.precision == "bf16")
        with autocast:
            memory, pooled = self.cap.net.encoder.from_features(image_encoder.project(f1), image_encoder.project(f2))
            return objective(self.cap.net, memory, pooled, *self._batch_tensors(samples),
                             lamb=self.params.lamb, temperature=self.params.temperature)

    # -- the loop -------------------------------------------------------------------------
    @property
    def total_steps(self):
        return self.batches_per_epoch * self.params.epochs

    def run(self, reporter):
        """True when every epoch is done; False when --max-steps stopped it first (state saved)."""
        self._resume(reporter)
        reporter.start(self.total_steps, os.path.dirname(self.work))
        if self.params.freeze_backbone:
            self._cache_features("train", self.train_pairs)
            self._cache_features("val", self.val_pairs)
        samples = self.train.samples
        p = self.params
        while self.epoch < p.epochs:
            order = np.random.default_rng([p.seed, self.epoch]).permutation(len(samples))
            train_mode(self.cap.net, p.freeze_backbone, p.freeze_encoder)
            while self.batch < self.batches_per_epoch:
                if p.max_steps is not None and self.step >= p.max_steps:
                    self._save()
                    return False
                rows = order[self.batch * p.batch_size:(self.batch + 1) * p.batch_size]
                loss, _, _ = self._loss("train", [samples[i] for i in rows])
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                if not math.isfinite(float(loss.detach())):
                    raise RuntimeError(f"the loss became {float(loss.detach())} at step {self.step + 1}; try a lower "
                                       "--learning-rate")
                self.batch += 1
                self.step += 1
                reporter.advance(self.step, self.total_steps)
                if self.step % p.checkpoint_every == 0:
                    self._save()
            self._end_epoch(reporter)
        return True

    def _end_epoch(self, reporter):
        started = time.perf_counter()
        record = dict(epoch=self.epoch + 1, step=self.step, **self._validate())
        record["validation_seconds"] = round(time.perf_counter() - started, 1)
        self.history.append(record)
        if self.best is None or record["val_loss"] < self.best["val_loss"]:
            self.best = {"epoch": record["epoch"], "val_loss": record["val_loss"]}
            saved.save_state(self.work, saved.BEST, saved.learning_part(self.cap.net, self.prefixes))
        reporter.warning(f"epoch {record['epoch']}: val loss {record['val_loss']:.4f}, BLEU-4 "
                         f"{record['metrics']['Bleu_4']:.3f}, CIDEr {record['metrics']['CIDEr']:.3f}")
        self.epoch += 1
        self.batch = 0
        self._save()

    def _validate(self):
        """The official selection loss on each val pair's first sentence, and the greedy captions' metrics."""
        cap, p = self.cap, self.params
        cap.net.eval()
        firsts = {}
        for s in self.val.samples:
            firsts.setdefault(s.pair, s)
        losses = []
        with torch.no_grad():
            chunk = list(firsts.values())
            for start in range(0, len(chunk), p.batch_size):
                loss, _, _ = self._loss("val", chunk[start:start + p.batch_size])
                losses.append(float(loss))
        captions = []
        with torch.no_grad():  # a learning backbone's features too
            for start in range(0, len(self.val_pairs), VAL_CAPTION_BATCH):
                indices = list(range(start, min(start + VAL_CAPTION_BATCH, len(self.val_pairs))))
                captions += cap.describe_trunk_features(*self._pair_features("val", indices)).captions
        metrics = cm.official_scores([list(pair.references) for pair in self.val_pairs], captions)
        return {"val_loss": float(np.mean(losses)), "metrics": metrics}


VAL_CAPTION_BATCH = 16


def _write_model(cap, trainer, partial, params, fingerprint, train, val):
    """The released layout in `partial`: the starting config and vocabulary, the best weights, the record."""
    best = saved.load_state(trainer.work, saved.BEST)
    saved.load_learning_part(cap.net, best, trainer.prefixes)
    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in cap.net.state_dict().items()}
    tmp = os.path.join(partial, "pytorch_model.bin.tmp")
    torch.save(state, tmp)
    os.replace(tmp, os.path.join(partial, "pytorch_model.bin"))
    record = {"started_from": fingerprint["model"], "started_from_sha256": fingerprint["model_sha256"],
              "data": {"annotations": os.path.abspath(params.annotations), "images": os.path.abspath(params.images),
                       "sha256": fingerprint["data_sha256"], "train_pairs": len(trainer.train_pairs),
                       "val_pairs": len(trainer.val_pairs)},
              "captions": {"train": train.summary("train"), "val": val.summary("val"),
                           "unknown_words": dict(train.unknown_words.most_common())},
              "settings": fingerprint["settings"], "steps": trainer.step, "best_epoch": trainer.best["epoch"],
              "epochs": trainer.history, "torch": torch.__version__}
    files = {"config.json": json.dumps(cap.config, indent=1) + "\n",
             "levir_vocab.json": json.dumps(cap.vocab.word_to_id) + "\n",
             RECORD: json.dumps(record, indent=1, allow_nan=False) + "\n"}
    for name, text in files.items():
        with open(os.path.join(partial, name), "w", encoding="utf-8") as f:
            f.write(text)
