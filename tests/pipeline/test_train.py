"""`rsicrc train`: the official objective, resumable and deterministic, a loadable model folder, one-line errors.

The objective is held to a transcription of the official InfoNCELoss (src/Loss.py: index lists,
pair selection, the max-shifted log-ratio) and to the official teacher-forced loss (padded to
max_len, labels -100 on the padding, nn.CrossEntropyLoss). Training runs on the small generated
checkpoint (rn50-small: RN50 backbone, d_model 64) and a generated LEVIR-CC-format dataset.
"""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from levir_cc_dataset import write_training_set
from pipeline_test_rasters import uint8_scene
from rsicrc.model.train.objective import caption_loss_and_embedding, info_nce
from rsicrc.model.train.trainable import set_trainable, train_mode
from rsicrc.pipeline.cli import main
from rsicrc.pipeline.errors import BadInput
from rsicrc.pipeline.progress import Reporter
from rsicrc.pipeline.train.params import TrainParams
from rsicrc.pipeline.train.run import run_train

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_training_set(str(tmp_path_factory.mktemp("train-set")))


def params(dataset, model, output, **kw):
    annotations, images = dataset
    return TrainParams(annotations, images, str(output), model=str(model), device="cpu",
                       **dict(dict(epochs=2, batch_size=4, checkpoint_every=2), **kw)).check()


# --- the objective against transcriptions of the official code ------------------------------------

def official_info_nce(x, y, labels, same_sentence, temperature):
    """src/Loss.py InfoNCELoss.__call__ with k = -1, fna = True; same_sentence: the FNE matrix."""
    matches = (labels[:, None] == labels[None]).byte()
    diffs = matches ^ 1
    fn = torch.where(same_sentence)
    diffs[fn[0], fn[1]] = 0
    matches[fn[0], fn[1]] = 1
    diffs.fill_diagonal_(0)
    matches.fill_diagonal_(1)
    a1, p = torch.where(matches)
    a2, n = torch.where(diffs)
    mat = torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(y, dim=-1).T
    if len(a1) == 0 or len(a2) == 0:
        return torch.tensor(0.0)
    pos, neg = mat[a1, p].unsqueeze(1) / temperature, mat[a2, n] / temperature
    n_per_p = a2.unsqueeze(0) == a1.unsqueeze(1)
    neg = neg * n_per_p
    neg[n_per_p == 0] = torch.finfo(neg.dtype).min
    max_val = torch.max(pos, torch.max(neg, dim=1, keepdim=True)[0]).detach()
    num = torch.exp(pos - max_val).squeeze(1)
    den = torch.sum(torch.exp(neg - max_val), dim=1) + num
    return torch.mean(-torch.log(num / den + torch.finfo(neg.dtype).tiny))


@pytest.mark.parametrize("seed", range(6))
def test_info_nce_is_the_official_loss(seed):
    g = torch.Generator().manual_seed(seed)
    b = 7
    x, y = torch.randn(b, 16, generator=g, dtype=torch.float64), torch.randn(b, 16, generator=g, dtype=torch.float64)
    labels = torch.tensor([-1, -1, 3, 4, 4, 5, -1])[torch.randperm(b, generator=g)]
    sentences = torch.randint(0, 4, (b,), generator=g)
    ours = info_nce(x, y, labels, sentences, temperature=0.05)
    official = official_info_nce(x.float(), y.float(), labels, sentences[:, None] == sentences[None], 0.05)
    assert float(ours) == pytest.approx(float(official), rel=1e-5, abs=1e-6)
    assert float(ours) > 0


def test_info_nce_without_negatives_is_zero():
    x = torch.randn(3, 8)
    assert float(info_nce(x, x, torch.tensor([-1, -1, -1]), torch.tensor([0, 1, 2]))) == 0.0


def test_caption_loss_is_the_official_teacher_forced_loss(captioner):
    net, vocab, max_len = captioner.net, captioner.vocab, captioner.cfg.max_len
    captions = [[30, 18, 26, 27, 28], [4, 16, 7, 4], [5, 19]]
    ids = torch.full((3, max_len), vocab.pad)  # the official batches: every row padded to max_len
    for row, c in enumerate(captions):
        ids[row, :len(c) + 2] = torch.tensor([vocab.start, *c, vocab.end])
    lengths = torch.tensor([len(c) + 2 for c in captions])
    before = captioner.preprocess(torch.from_numpy(np.stack([uint8_scene((224, 224), seed=s) for s in range(3)])))
    after = captioner.preprocess(torch.from_numpy(np.stack([uint8_scene((224, 224), seed=9 + s) for s in range(3)])))
    with torch.no_grad():
        memory, _ = net.encoder(before, after)
        ours, text = caption_loss_and_embedding(net.decoder, memory, ids[:, :lengths.max()], lengths)
        logits = net.decoder.logits(ids, memory)
    labels = ids.clone()
    labels[torch.arange(max_len)[None] >= lengths[:, None]] = -100  # Batcher.create_batch
    official = torch.nn.CrossEntropyLoss()(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    assert float(ours) == pytest.approx(float(official), rel=1e-5)
    # the caption embedding is what text search embeds for the same words
    searched = captioner.embed_token_ids([[vocab.start, *c, vocab.end] for c in captions])
    assert torch.allclose(torch.nn.functional.normalize(text, dim=-1), searched, atol=1e-5)


def test_only_the_chosen_parts_learn(checkpoint_factory):
    from rsicrc.model import load_model

    net = load_model(str(checkpoint_factory("rn50-small")), device="cpu").net
    learning = {id(p) for p in set_trainable(net)}
    names = {n for n, p in net.named_parameters() if id(p) in learning}
    assert names and not any(n.startswith("encoder.encoder.net.") for n in names)
    assert any(n.startswith("encoder.encoder_trans.") for n in names) and any(n.startswith("decoder.") for n in names)
    train_mode(net)
    assert not net.encoder.encoder.net.training and net.encoder.LN.training
    decoder_only = {n for n, p in net.named_parameters() if id(p) in {id(q) for q in set_trainable(net, True, True)}}
    assert decoder_only and all(n.startswith("decoder.") for n in decoder_only)
    backbone = {n for n, p in net.named_parameters() if id(p) in {id(q) for q in set_trainable(net, False)}}
    # the official fine_tune(): the trunk's last three children (layer2..layer4), not the stem or layer1
    assert any(n.startswith("encoder.encoder.net.13.") for n in backbone)
    assert not any(n.startswith(("encoder.encoder.net.0.", "encoder.encoder.net.10.")) for n in backbone)


# --- a training run ---------------------------------------------------------------------------------

def _weights(folder):
    return torch.load(os.path.join(folder, "pytorch_model.bin"), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def trained(dataset, small_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "model"
    assert run_train(params(dataset, small_checkpoint, out), Reporter()) == str(out)
    return out


def test_a_run_writes_a_model_folder_every_command_loads(trained, small_checkpoint, dataset):
    from rsicrc.model import load_model

    assert sorted(os.listdir(trained)) == ["config.json", "levir_vocab.json", "pytorch_model.bin", "training.json"]
    assert not os.path.exists(str(trained) + ".partial")
    record = json.loads((trained / "training.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert record["steps"] == 2 * 8  # 6 pairs x 5 captions = 30 captions, batches of 4: 8 a epoch
    assert set(record["epochs"][0]["metrics"]) >= {"Bleu_4", "CIDEr", "ROUGE_L"}
    assert record["best_epoch"] == 1 + int(np.argmin([e["val_loss"] for e in record["epochs"]]))
    assert len(record["data"]["sha256"]) == 64 and record["settings"]["lamb"] == 0.5
    before, after = _weights(small_checkpoint), _weights(trained)
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("decoder.") for k in changed) and any(k.startswith("encoder.encoder_trans.") for k in changed)
    assert not any(k.startswith("encoder.encoder.net.") for k in changed)  # the frozen backbone, byte for byte
    cap = load_model(str(trained), device="cpu")
    assert cap.vocab.word_to_id == load_model(str(small_checkpoint), device="cpu").vocab.word_to_id
    image = torch.from_numpy(uint8_scene((64, 64), seed=5)[None])
    assert len(cap.describe_pairs(cap.preprocess(image), cap.preprocess(image)).captions) == 1


def test_training_lowers_the_loss(trained):
    first, last = (e["val_loss"] for e in json.loads((trained / "training.json").read_text())["epochs"])
    assert last < first


def test_interrupted_and_resumed_gives_the_same_weights(dataset, small_checkpoint, trained, tmp_path):
    out = tmp_path / "model"
    assert run_train(params(dataset, small_checkpoint, out, max_steps=5), Reporter()) is None  # mid-epoch 1
    assert os.path.isfile(tmp_path / "model.partial" / ".training" / "state.pt") and not out.exists()
    assert run_train(params(dataset, small_checkpoint, out, max_steps=11), Reporter()) is None  # after epoch 1
    assert run_train(params(dataset, small_checkpoint, out), Reporter()) == str(out)
    a, b = _weights(trained), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    epochs = [json.loads((d / "training.json").read_text())["epochs"] for d in (trained, out)]
    assert [e["val_loss"] for e in epochs[0]] == [e["val_loss"] for e in epochs[1]]


def test_another_seed_gives_other_weights(dataset, small_checkpoint, trained, tmp_path):
    run_train(params(dataset, small_checkpoint, tmp_path / "m", seed=7, epochs=1), Reporter())
    a, b = _weights(trained), _weights(tmp_path / "m")
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_a_learning_backbone_changes_its_last_stages_only(dataset, small_checkpoint, tmp_path):
    out = tmp_path / "m"
    run_train(params(dataset, small_checkpoint, out, epochs=1, freeze_backbone=False), Reporter())
    before, after = _weights(small_checkpoint), _weights(out)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("encoder.encoder.net.13.") for k in changed)  # layer4 learnt
    assert not any(k.startswith(("encoder.encoder.net.0.", "encoder.encoder.net.10.")) for k in changed)
    assert not os.path.exists(str(out) + ".partial")


def test_a_resume_with_other_settings_is_refused(dataset, small_checkpoint, tmp_path):
    out = tmp_path / "model"
    run_train(params(dataset, small_checkpoint, out, max_steps=2), Reporter())
    with pytest.raises(BadInput, match="other settings"):
        run_train(params(dataset, small_checkpoint, out, learning_rate=3e-4), Reporter())


# --- bad input: one line, exit 2, nothing left behind -------------------------------------------------

def _cli(capsys, *argv):
    code = main(["train", *argv])
    return code, capsys.readouterr().err.strip().splitlines()


def test_cli_trains_and_reports(dataset, small_checkpoint, tmp_path, capsys):
    annotations, images = dataset
    code, err = _cli(capsys, "--annotations", annotations, "--images", images, "-o", str(tmp_path / "m"),
                     "--model", str(small_checkpoint), "--device", "cpu", "--epochs", "1", "--batch-size", "8")
    assert code == 0 and err[-1] == f"wrote {tmp_path / 'm'}"
    assert any(line.startswith("rsicrc: warning: epoch 1: val loss") for line in err)


@pytest.mark.parametrize("case, message", [
    ("no_val", "holds no pairs of split 'val'"),
    ("mixed_sizes", "every image of a training set must have one size"),
    ("foreign_words", "every word of every caption is outside the model's vocabulary"),
])
def test_bad_datasets_get_one_line(case, message, small_checkpoint, tmp_path, capsys):
    annotations, images = write_training_set(str(tmp_path), odd_size=96 if case == "mixed_sizes" else None)
    data = json.load(open(annotations))
    if case == "no_val":
        data["images"] = [r for r in data["images"] if r["split"] != "val"]
    if case == "foreign_words":
        for r in data["images"]:
            for s in r["sentences"]:
                s["tokens"] = ["viele", "gebaeude"]
    json.dump(data, open(annotations, "w"))
    listing = sorted(os.listdir(tmp_path))
    code, err = _cli(capsys, "--annotations", annotations, "--images", images, "-o", str(tmp_path / "m"),
                     "--model", str(small_checkpoint), "--device", "cpu")
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert sorted(os.listdir(tmp_path)) == listing


def test_a_model_folder_that_is_not_one(dataset, tmp_path, capsys):
    annotations, images = dataset
    (tmp_path / "not-a-model").mkdir()
    code, err = _cli(capsys, "--annotations", annotations, "--images", images, "-o", str(tmp_path / "m"),
                     "--model", str(tmp_path / "not-a-model"), "--device", "cpu")
    assert code == 2 and len(err) == 1 and "not-a-model" in err[0], err
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


def test_an_existing_output_is_refused(dataset, small_checkpoint, tmp_path, capsys):
    annotations, images = dataset
    (tmp_path / "m").mkdir()
    code, err = _cli(capsys, "--annotations", annotations, "--images", images, "-o", str(tmp_path / "m"),
                     "--model", str(small_checkpoint), "--batch-size", "1")
    assert code == 2 and "--batch-size" in err[0]
    code, err = _cli(capsys, "--annotations", annotations, "--images", images, "-o", str(tmp_path / "m"),
                     "--model", str(small_checkpoint), "--device", "cpu")
    assert code == 2 and len(err) == 1 and "exists; give a new folder" in err[0]


def test_bf16_trains_where_the_cpu_has_it_and_fp16_is_refused(dataset, small_checkpoint, tmp_path):
    from rsicrc.model.device import cpu_has_bf16
    from rsicrc.pipeline.caption_params import ParamError

    with pytest.raises(ParamError, match="fp16 is not offered for training"):
        params(dataset, small_checkpoint, tmp_path / "fp16", precision="fp16")
    bf16 = params(dataset, small_checkpoint, tmp_path / "bf16", precision="bf16", epochs=1)
    if cpu_has_bf16():
        run_train(bf16, Reporter())
        assert json.loads((tmp_path / "bf16" / "training.json").read_text())["settings"]["precision"] == "bf16"
    else:
        with pytest.raises(BadInput, match="--precision bf16: bf16 on the CPU needs bf16 instructions"):
            run_train(bf16, Reporter())
        assert not os.path.exists(tmp_path / "bf16.partial") and not os.path.exists(tmp_path / "bf16")
