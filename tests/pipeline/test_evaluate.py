"""`rsicrc evaluate` against references of the official RSICRC evaluation (src/eval.py).

The official code path is carried here as independent references: captions from the official
one-pair-at-a-time greedy loop (whole prefix recomputed each step), the captioning scores from
pycocoevalcap's scorers called as eval.py calls its copies of them (`get_eval_score`), and
retrieval from a transcription of its `search()`. The generated model's captions are near
random, so the metric code is also held to hand-made cases whose answers are known.
"""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from levir_cc_dataset import PAIRS, write_dataset
from rsicrc.pipeline.cli import main
from rsicrc.pipeline.errors import BadInput
from rsicrc.pipeline.evaluate import caption_metrics as cm, retrieval_metrics as rm
from rsicrc.pipeline.evaluate.run import OUTPUT_FILES, run_evaluate
from rsicrc.pipeline.progress import Reporter

AT_K = sorted([1, 3, 5, 10], reverse=True)  # as eval.py
TEST_PAIRS = [p for p in PAIRS if p[1] == "test"]
CHANGED = [i for i, p in enumerate(TEST_PAIRS) if p[2]]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("levir-cc"))


@pytest.fixture(scope="module")
def evaluated(dataset, captioner, tmp_path_factory):
    annotations, images = dataset
    out = tmp_path_factory.mktemp("evaluated") / "out"
    # batch 4 over 6 pairs: a full batch and a short one, the second read while the first runs
    return run_evaluate(annotations, images, str(out), Reporter(), captioner=captioner, batch_size=4)


@pytest.fixture(scope="module")
def test_records(dataset):
    annotations, images = dataset
    records = [r for r in json.load(open(annotations))["images"] if r["split"] == "test"]
    return records, images


# --- references of the official code ----------------------------------------------------------

def _official_image(path, cap):
    rgb = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
    return cap.preprocess(np.ascontiguousarray(rgb)[None])


def official_inference(cap, records, images):
    """eval.py inference(): per pair, greedy over the whole prefix, ' '.join(words[1:-1]).strip()."""
    inverse_vocab = {v: k for k, v in cap.vocab.word_to_id.items()}
    start, end = cap.vocab.start, cap.vocab.end
    sentences, pooled = [], []
    with torch.no_grad():
        for r in records:
            img1 = _official_image(os.path.join(images, r["filepath"], "A", r["filename"]), cap)
            img2 = _official_image(os.path.join(images, r["filepath"], "B", r["filename"]), cap)
            vis_toks, vis_emb = cap.net.encoder(img1, img2)
            input_ids = torch.tensor([[start]], dtype=torch.long)
            for _ in range(cap.cfg.max_len):
                lm_logits = cap.net.decoder.logits(input_ids, vis_toks)
                next_item = lm_logits[0][-1].topk(1)[1]
                input_ids = torch.cat([input_ids, next_item.reshape(1, -1)], dim=1)
                if next_item.item() == end:
                    break
            words = [inverse_vocab[x] for x in input_ids[0].tolist()]
            sentences.append(" ".join(words[1:-1]).strip())
            pooled.append(vis_emb[0])
    return sentences, torch.nn.functional.normalize(torch.stack(pooled), p=2, dim=1).numpy()


def official_eval_score(references, hypotheses):
    """utils.get_eval_score with pycocoevalcap's scorers (its copies take the same data as lists)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: refs for i, refs in enumerate(references)}
    res = {i: [h] for i, h in enumerate(hypotheses)}
    score, method = [], []
    for scorer, method_i in [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), (Rouge(), "ROUGE_L"),
                             (Cider(), "CIDEr")]:
        score_i, _ = scorer.compute_score(gts, res)
        score.extend(score_i) if isinstance(score_i, list) else score.append(score_i)
        method.extend(method_i) if isinstance(method_i, list) else method.append(method_i)
    return dict(zip(method, score))


def official_text_embedding(cap, tokens):
    """Datasets.tokenize + the decoder's text side: padded to max_len, state at the last non-pad."""
    vocab = cap.vocab.word_to_id
    ids = [vocab[x] if x in vocab.keys() else vocab["UNK"] for x in tokens]
    ids = [vocab["START"]] + ids + [vocab["END"]]
    end = len(ids)
    ids += [vocab["PAD"]] * (cap.cfg.max_len - len(ids))
    with torch.no_grad():
        out = cap.net.decoder.text_states(torch.tensor([ids]))
    return torch.nn.functional.normalize(out[0, end - 1], p=2, dim=0).numpy()


def official_search(visual, textual, flags, first_raws, sub=False, threshold=1.0):
    """eval.py search(): faiss IndexFlatIP over the pairs, one query per pair; sims from identical
    stripped first sentences (what the sentence model would embed identically)."""
    keep = [i for i in range(len(flags)) if not (sub and flags[i] == -1) and textual[i] is not None]
    rows = [i for i in range(len(flags)) if not (sub and flags[i] == -1)]
    visual = visual[rows]
    flags = [flags[i] for i in rows]
    raws = [first_raws[i].strip() for i in rows]
    n = len(rows)
    sims = [[1.0 if raws[a] == raws[b] else 0.0 for b in range(n)] for a in range(n)]
    scores_p, scores_r, scores_rr = ({k: [] for k in AT_K} for _ in range(3))
    for i, row in enumerate(rows):
        if row not in keep:
            continue
        query = textual[row]
        relevants = set([x for x in range(n) if flags[x] == flags[i] or sims[i][x] >= threshold])
        ip = visual @ query
        ranked = sorted(range(n), key=lambda x: -ip[x])
        ranked = (ranked + [-1] * 10)[:10]  # faiss pads a small index with -1
        indices = None
        for k in AT_K:
            p = r = rr = 0
            indices = ranked[:k] if indices is None else indices[:k]
            for rank, idx in enumerate(indices):
                if idx in relevants:
                    if p == 0:
                        rr = 1 / (rank + 1)
                    p += 1
                    r += 1
            scores_p[k].append(p / len(indices))
            scores_r[k].append(r / len(relevants))
            scores_rr[k].append(rr)
    out = {}
    for k in AT_K:
        out[f"P@{k}"] = sum(scores_p[k]) / len(scores_p[k])
        out[f"R@{k}"] = sum(scores_r[k]) / len(scores_r[k])
        out[f"MRR@{k}"] = sum(scores_rr[k]) / len(scores_rr[k])
    return out


@pytest.fixture(scope="module")
def official(captioner, test_records):
    records, images = test_records
    sentences, visual = official_inference(captioner, records, images)
    limit = captioner.cfg.max_len - 2
    textual = [official_text_embedding(captioner, r["sentences"][0]["tokens"])
               if len(r["sentences"][0]["tokens"]) <= limit else None for r in records]
    flags = [-1 if r["changeflag"] == 0 else r["imgid"] for r in records]
    first_raws = [r["sentences"][0]["raw"] for r in records]
    references = [[s["raw"] for s in r["sentences"]] for r in records]
    return dict(records=records, sentences=sentences, visual=visual, textual=textual, flags=flags,
                first_raws=first_raws, references=references)


# --- the run against the references -----------------------------------------------------------

def test_captions_are_the_official_greedy_sentences(evaluated, official):
    names = [r["filename"] for r in official["records"]]
    assert list(evaluated.captions) == names
    assert [evaluated.captions[n] for n in names] == official["sentences"]


def test_captioning_metrics_equal_the_official_code_path(evaluated, official):
    refs, hyps = official["references"], official["sentences"]
    expected = official_eval_score(refs, hyps)
    got = {k: v for k, v in evaluated.metrics["captioning"].items() if k != "METEOR"}
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert set(got) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    sub = official_eval_score([refs[i] for i in CHANGED], [hyps[i] for i in CHANGED])
    got_sub = {k: v for k, v in evaluated.metrics["captioning_sub"].items() if k != "METEOR"}
    assert got_sub == pytest.approx(sub, rel=1e-12, abs=1e-15)
    assert got_sub != got  # the no-change pairs were left out


def test_retrieval_equals_the_official_search(evaluated, official):
    args = (official["visual"], official["textual"], official["flags"], official["first_raws"])
    assert evaluated.metrics["retrieval"] == pytest.approx(official_search(*args), abs=1e-12)
    assert evaluated.metrics["retrieval_sub"] == pytest.approx(official_search(*args, sub=True), abs=1e-12)
    r = evaluated.metrics["settings"]["retrieval"]
    assert r["relevance"] in ("identical_text", "sentence_embeddings") and r["rule"]
    # the long first sentence of test_000006 asks no query; it stays in the gallery
    assert r["skipped_queries"] == ["test_000006.png"]
    assert (r["gallery"], r["queries"], r["gallery_sub"], r["queries_sub"]) == (6, 5, 4, 3)


def test_output_files_hold_the_result(evaluated):
    out = Path(evaluated.output)
    assert sorted(os.listdir(out)) == sorted(OUTPUT_FILES)  # no temporary file left behind
    assert json.loads((out / "metrics.json").read_text()) == evaluated.metrics
    assert json.loads((out / "captions.json").read_text()) == evaluated.captions
    report = (out / "report.md").read_text()
    assert report == evaluated.report
    m = evaluated.metrics
    assert f"| all | {m['captioning']['Bleu_1']:.4f} |" in report
    assert f"| changed only | {m['retrieval_sub']['P@1']:.4f} |" in report
    assert m["settings"]["pairs"] == 6 and m["settings"]["pairs_sub"] == 4
    assert set(m["retrieval"]) == set(rm.metric_names()) == {f"{a}@{k}" for a in ("P", "R", "MRR")
                                                             for k in (1, 3, 5, 10)}


def test_meteor_is_present_with_java_or_said_absent(evaluated):
    meteor = evaluated.metrics["settings"]["captioning"]["meteor"]
    if shutil.which("java"):
        assert 0.0 <= evaluated.metrics["captioning"]["METEOR"] <= 1.0
        assert 0.0 <= evaluated.metrics["captioning_sub"]["METEOR"] <= 1.0
        assert meteor.startswith("computed")
    else:
        assert "METEOR" not in evaluated.metrics["captioning"]
        assert meteor.startswith("absent: no Java")


def test_a_val_split_is_evaluated_on_its_own(dataset, captioner, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java: METEOR said absent, the run goes on
    annotations, images = dataset
    result = run_evaluate(annotations, images, str(tmp_path / "val"), Reporter(), split="val",
                          captioner=captioner)
    assert list(result.captions) == ["val_000001.png", "val_000002.png"]
    assert result.metrics["settings"]["pairs"] == 2 and result.metrics["settings"]["pairs_sub"] == 1
    assert "METEOR" not in result.metrics["captioning"]
    assert "no Java" in result.metrics["settings"]["captioning"]["meteor"]
    # one changed pair: the sub run has one query among one pair, which is relevant to itself
    assert result.metrics["retrieval_sub"]["P@1"] == 1.0 and result.metrics["retrieval_sub"]["R@1"] == 1.0


# --- the metric code on hand-made cases --------------------------------------------------------

def test_a_hypothesis_equal_to_a_reference_scores_one():
    refs = [["the road has been built", "many buildings appear"], ["a parking lot is constructed here"]]
    hyps = ["the road has been built", "a parking lot is constructed here"]
    scores = cm.official_scores(refs, hyps)
    for k in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L"):
        assert scores[k] == pytest.approx(1.0, abs=1e-6), k
    # each hypothesis matches its reference exactly and the two share no n-gram: cosine 1 at every n
    # for the matching reference, 0 for "many buildings appear" -> 10 * (1 + 0) / 2 and 10 * 1 / 1
    assert scores["CIDEr"] == pytest.approx((5.0 + 10.0) / 2)


def test_unrelated_captions_score_zero():
    scores = cm.official_scores([["the road has been built"], ["many trees"]], ["zz yy xx ww", "qq"])
    assert scores["Bleu_1"] < 1e-6 and scores["ROUGE_L"] == 0.0 and scores["CIDEr"] == 0.0


def test_references_are_used_as_written():
    """LEVIR-CC raws keep a leading space: ROUGE-L (split on " ") then sees an empty first token."""
    scores = cm.official_scores([[" the road is built ."]], ["the road is built ."])
    assert scores["Bleu_4"] == pytest.approx(1.0, abs=1e-6)  # BLEU splits on any whitespace
    p, r, beta = 1.0, 5 / 6, 1.2
    assert scores["ROUGE_L"] == pytest.approx((1 + beta ** 2) * p * r / (r + beta ** 2 * p))


def test_a_single_pair_keeps_the_official_cider_reference_length():
    # log(1 pair) = 0 would zero every weight; the official copy uses 1 there
    scores = cm.official_scores([["the road has been built"]], ["the road has been built"])
    assert scores["CIDEr"] == pytest.approx(10.0)


def test_caption_metrics_refuse_inconsistent_input():
    with pytest.raises(ValueError, match="hypotheses"):
        cm.official_scores([["a b"]], [])
    with pytest.raises(ValueError, match="at least one reference"):
        cm.official_scores([[]], ["a"])


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs a Java runtime")
def test_meteor_on_known_captions():
    scores, why = cm.meteor_scores([([["the road has been built"]], ["the road has been built"]),
                                    ([["many buildings"]], ["zz yy"])])
    assert why is None
    assert scores[0] > 0.9 and scores[1] == 0.0


def test_meteor_without_java_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    scores, why = cm.meteor_scores([([["a b"]], ["a b"])])
    assert scores is None and "Java" in why


def test_search_scores_on_a_known_ranking():
    gallery = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0, 0.5, 0], [1, 0, 0.2, 0]], dtype=np.float32)
    flags = [-1, -1, 7, 8]
    related = np.zeros((4, 4), dtype=bool)
    related[2, 3] = related[3, 2] = True
    got = rm.search_scores(gallery, queries, [0, 2], flags, related)
    # query of pair 0 ranks 0, 2, 1, 3 with relevant {0, 1}; pair 2's ranks 0, 2, 1, 3 with {2, 3}
    expected = {"P@1": 0.5, "R@1": 0.25, "MRR@1": 0.5, "P@3": 0.5, "R@3": 0.75, "MRR@3": 0.75,
                "P@5": 0.4, "R@5": 1.0, "MRR@5": 0.75, "P@10": 0.2, "R@10": 1.0, "MRR@10": 0.75}
    assert got == pytest.approx(expected)
    assert rm.search_scores(gallery, queries[:0], [], flags, related) is None


def test_relatedness_rules():
    text = rm.related_by_text([" a road .", "a road .", " a road . ", "trees ."])
    assert text.tolist() == [[True, True, True, False], [True, True, True, False],
                             [True, True, True, False], [False, False, False, True]]
    emb = np.array([[1, 0], [1, 0], [0.6, 0.8]], dtype=np.float32)
    sim = rm.related_by_similarity(emb, 1.0)
    assert sim.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    assert rm.related_by_similarity(emb, 0.5).all()


def test_without_the_sentence_model_identical_text_stands_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    related, rule = rm.relatedness([[" a road .", "x"], ["a road ."], [" trees ."]], {"s-threshold": 0.9})
    assert related.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    assert rule["relevance"] == "identical_text" and "not installed" in rule["why"]
    assert rule["s_threshold"] == 0.9 and rule["s_transformers"] == rm.RELEASED_S_TRANSFORMERS


def test_embed_token_ids_is_the_text_side_of_embed_text(captioner):
    ids = captioner.tokenize("many buildings have been built").ids
    assert torch.allclose(captioner.embed_token_ids([ids]), captioner.embed_text(["many buildings have been built"]))
    both = captioner.embed_token_ids([ids, ids[:2] + ids[-1:]])
    assert torch.allclose(both[0], captioner.embed_token_ids([ids])[0], atol=1e-6)  # padding changes nothing
    with pytest.raises(ValueError, match="1 to 41 ids"):
        captioner.embed_token_ids([[1] * 42])
    with pytest.raises(ValueError, match="below"):
        captioner.embed_token_ids([[1, 9999, 3]])


# --- bad input ---------------------------------------------------------------------------------

def _copy_dataset(dataset, tmp_path):
    annotations, images = dataset
    shutil.copytree(images, tmp_path / "images")
    shutil.copy(annotations, tmp_path / "ann.json")
    return str(tmp_path / "ann.json"), str(tmp_path / "images")


def _edit_records(path, edit):
    data = json.load(open(path))
    edit(data["images"])
    Path(path).write_text(json.dumps(data))


def _bad(tmp_path, name, dataset):
    ann, images = _copy_dataset(dataset, tmp_path)
    out = tmp_path / "out"
    if name == "missing annotations":
        ann = str(tmp_path / "nope.json")
        return ann, images, out, ann
    if name == "bad JSON":
        Path(ann).write_text('{"images": [')
        return ann, images, out, ann
    if name == "not LEVIR-CC":
        Path(ann).write_text("[1, 2]")
        return ann, images, out, ann
    if name == "record without sentences":
        _edit_records(ann, lambda recs: recs[2].update(sentences=[]))
        return ann, images, out, ann
    if name == "empty split":
        return ann, images, out, ann  # split "train" below
    if name == "missing image":
        gone = Path(images) / "test" / "B" / "test_000003.png"
        gone.unlink()
        return ann, images, out, str(gone)
    if name == "wrong size":
        b = Path(images) / "test" / "B" / "test_000004.png"
        Image.new("RGB", (128, 256)).save(b)
        return ann, images, out, str(b)
    if name == "not an image":
        a = Path(images) / "test" / "A" / "test_000002.png"
        a.write_bytes(b"not a png at all")
        return ann, images, out, str(a)
    if name == "truncated image":  # the header reads; the pixels do not
        a = Path(images) / "test" / "A" / "test_000005.png"
        data = a.read_bytes()
        a.write_bytes(data[:len(data) // 2])
        return ann, images, out, str(a)
    if name == "output is a file":
        out.write_text("x")
        return ann, images, out, str(out)
    if name == "output under a file":
        (tmp_path / "plain").write_text("x")
        out = tmp_path / "plain" / "out"
        return ann, images, out, str(out)
    if name == "output file is a folder":
        (out / "metrics.json").mkdir(parents=True)
        return ann, images, out, str(out / "metrics.json")
    if name == "images folder missing":
        return ann, str(tmp_path / "no-images"), out, str(tmp_path / "no-images")
    raise AssertionError(name)


BAD = ["missing annotations", "bad JSON", "not LEVIR-CC", "record without sentences", "empty split",
       "missing image", "wrong size", "not an image", "truncated image", "output is a file",
       "output under a file", "output file is a folder", "images folder missing"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_named_and_leaves_nothing(name, tmp_path, captioner, dataset):
    ann, images, out, named = _bad(tmp_path, name, dataset)
    existed = out.exists()
    with pytest.raises(BadInput) as err:
        run_evaluate(ann, images, str(out), Reporter(), split="train" if name == "empty split" else "test",
                     captioner=captioner)
    assert named in str(err.value), str(err.value)
    assert "\n" not in str(err.value)
    if not existed:
        assert not out.exists()  # no folder left behind a refused run
    elif out.is_dir():
        assert not [f for f in os.listdir(out) if f not in ("metrics.json",)]


def test_a_failed_run_keeps_the_previous_results(dataset, captioner, tmp_path):
    ann, images = _copy_dataset(dataset, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    for name in OUTPUT_FILES:
        (out / name).write_text("previous")
    a = Path(images) / "test" / "A" / "test_000006.png"  # in the second batch: read after model work
    a.write_bytes(a.read_bytes()[:200])
    with pytest.raises(BadInput, match="test_000006.png"):
        run_evaluate(ann, images, str(out), Reporter(), captioner=captioner, batch_size=4)
    assert sorted(os.listdir(out)) == sorted(OUTPUT_FILES)
    assert all((out / name).read_text() == "previous" for name in OUTPUT_FILES)


def test_absurd_batch_size_is_refused(dataset, captioner, tmp_path):
    annotations, images = dataset
    with pytest.raises(BadInput, match="--batch-size"):
        run_evaluate(annotations, images, str(tmp_path / "o"), Reporter(), captioner=captioner, batch_size=0)
    with pytest.raises(BadInput, match="--batch-size 4096 with 256x256"):
        run_evaluate(annotations, images, str(tmp_path / "o"), Reporter(), captioner=captioner, batch_size=4096)
    assert not (tmp_path / "o").exists()


# --- the command line ---------------------------------------------------------------------------

def test_cli_evaluate_json_progress(dataset, small_checkpoint, evaluated, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here: METEOR is reported absent
    annotations, images = dataset
    out = tmp_path / "cli"
    rc = main(["evaluate", "--annotations", annotations, "--images", images, "-o", str(out),
               "--model", str(small_checkpoint), "--device", "cpu", "--batch-size", "3", "--progress", "json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0
    events = [e["event"] for e in lines]
    assert events[0] == "start" and lines[0]["total"] == 6 and events[-1] == "done"
    assert [e["done"] for e in lines if e["event"] == "progress"] == [3, 6]
    assert any(e["event"] == "warning" and "METEOR" in e["message"] for e in lines)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "METEOR" not in metrics["captioning"]
    assert metrics["settings"]["captioning"]["meteor"].startswith("absent: no Java")
    # another batch size, the same captions and figures
    assert json.loads((out / "captions.json").read_text()) == evaluated.captions
    for key in ("retrieval", "retrieval_sub"):
        assert metrics[key] == pytest.approx(evaluated.metrics[key], abs=1e-12)
    without_meteor = {k: v for k, v in evaluated.metrics["captioning"].items() if k != "METEOR"}
    assert metrics["captioning"] == pytest.approx(without_meteor)


def test_cli_bad_input_exits_2(dataset, tmp_path, capsys):
    annotations, images = dataset
    missing = str(tmp_path / "missing.json")
    rc = main(["evaluate", "--annotations", missing, "--images", images, "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and missing in err[0] and "does not exist" in err[0]
    rc = main(["evaluate", "--annotations", annotations, "--images", images, "-o", str(tmp_path / "o"),
               "--split", "train", "--progress", "json"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 2 and line["event"] == "error" and line["code"] == 2 and "split 'train'" in line["message"]
    rc = main(["evaluate", "--annotations", annotations, "--images", images, "-o", str(tmp_path / "o"),
               "--batch-size", "0"])
    assert rc == 2 and "--batch-size" in capsys.readouterr().err
    assert main(["evaluate", "--images", images, "-o", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_pairs_of_several_sizes_and_modes_share_a_batch(captioner, tmp_path, monkeypatch):
    """LEVIR-CC is 256 px RGB, another dataset in its layout need not be: each pair is resized to
    the model's input on its own, grey and palette images are read as RGB (as open_clip's
    transform converts them)."""
    from levir_cc_dataset import sentence

    from pipeline_test_rasters import uint8_scene

    monkeypatch.setenv("PATH", str(tmp_path))
    images = tmp_path / "images"
    specs = [("a.png", (200, 300), "RGB"), ("b.png", (256, 256), "L"), ("c.png", (240, 240), "P")]
    records = []
    for imgid, (name, (h, w), mode) in enumerate(specs):
        for side, seed in (("A", imgid), ("B", 50 + imgid)):
            (images / "test" / side).mkdir(parents=True, exist_ok=True)
            rgb = Image.fromarray(uint8_scene((h, w), seed).transpose(1, 2, 0))
            img = rgb.convert("L") if mode == "L" else rgb.quantize(64) if mode == "P" else rgb
            img.save(images / "test" / side / name)
        records.append({"filepath": "test", "filename": name, "imgid": imgid, "split": "test", "changeflag": 1,
                        "sentences": [sentence("a new road appears", imgid, imgid)]})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": records}))
    result = run_evaluate(str(ann), str(images), str(tmp_path / "out"), Reporter(), captioner=captioner)
    sentences, _ = official_inference(captioner, records, str(images))
    assert [result.captions[r["filename"]] for r in records] == sentences
    # three changed pairs with one first sentence: every pair is relevant to every query
    assert result.metrics["retrieval"]["P@3"] == pytest.approx(1.0)
    assert result.metrics["retrieval"]["R@1"] == pytest.approx(1 / 3)
