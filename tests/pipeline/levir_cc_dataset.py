"""A small dataset in the LEVIR-CC layout, generated: IMAGES/<split>/A|B/<name>.png + the annotation JSON.

Eight 256 x 256 pairs: six in test (two without change) and two in val. Sentences are written
as LEVIR-CC writes them: `raw` with a leading space and a trailing " .", `tokens` without the
full stop. Two changed test pairs share their first sentence (related by text), one first sentence
has words outside the small model's vocabulary (UNK) and one is longer than max_len - 2 tokens
(it asks no retrieval query).
"""
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline_test_rasters import uint8_scene

LONG = " ".join(["many buildings have been built on the left side"] * 5)  # 45 tokens

PAIRS = [
    # filename, split, changeflag, sentences
    ("test_000001.png", "test", 1, ["many buildings have been built", "some houses appear on the left",
                                    "new buildings are built", "buildings appear in the area",
                                    "a road has been built"]),
    ("test_000002.png", "test", 0, ["there is no change", "the scene is the same as before",
                                    "no change has been made"]),
    ("test_000003.png", "test", 1, ["many buildings have been built", "a parking lot is constructed",
                                    "several houses appear", "new roads have been built"]),
    ("test_000004.png", "test", 1, ["a stadium replaces the bareland on the right", "trees are replaced by a road",
                                    "a new road appears", "the vegetation is replaced by houses",
                                    "two buildings appear"]),
    ("test_000005.png", "test", 0, ["the scene is the same as before", "there is no change",
                                    "no changes in the area", "nothing has changed"]),
    ("test_000006.png", "test", 1, [LONG, "a road appears at the bottom", "some trees are replaced",
                                    "many houses have been built", "new buildings appear on the top"]),
    ("val_000001.png", "val", 1, ["a road has been built", "new houses appear", "buildings are built"]),
    ("val_000002.png", "val", 0, ["there is no change", "the scene is the same"]),
]


def sentence(text, imgid, sentid):
    tokens = text.split()
    return {"tokens": tokens, "raw": " " + " ".join(tokens) + " .", "imgid": imgid, "sentid": sentid}


def records():
    out, sentid = [], 0
    for imgid, (filename, split, flag, texts) in enumerate(PAIRS):
        sents = []
        for t in texts:
            sents.append(sentence(t, imgid, sentid))
            sentid += 1
        out.append({"filepath": split, "filename": filename, "imgid": imgid, "split": split,
                    "changeflag": flag, "sentences": sents, "sentids": [s["sentid"] for s in sents]})
    return out


def write_dataset(root):
    """Write IMAGES and LevirCCcaptions.json under root; returns (annotation path, images folder)."""
    root = Path(root)
    images = root / "images"
    for imgid, (filename, split, flag, _) in enumerate(PAIRS):
        before = uint8_scene((256, 256), seed=10 + imgid)
        if flag:
            after = uint8_scene((256, 256), seed=100 + imgid)
            after[:, :128] = before[:, :128]  # half the scene unchanged
        else:
            noise = np.random.default_rng(imgid).integers(-3, 4, before.shape)
            after = np.clip(before.astype(int) + noise, 0, 255).astype(np.uint8)
        for side, img in (("A", before), ("B", after)):
            folder = images / split / side
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.transpose(1, 2, 0)).save(folder / filename)
    annotations = root / "LevirCCcaptions.json"
    annotations.write_text(json.dumps({"images": records()}))
    return str(annotations), str(images)


# --- a dataset with a train split (`rsicrc train`) ---------------------------------------------

TRAIN_CAPTIONS = {
    1: ["many buildings have been built", "new houses appear on the left", "some buildings are built",
        "many houses have been built", "new buildings appear"],
    0: ["there is no change", "the scene is the same as before", "no change has been made",
        "there is no change", "nothing has changed"],
}


def write_training_set(root, train=6, val=2, size=64, odd_size=None):
    """A LEVIR-CC-format dataset: `train` and `val` pairs, every other one changed."""
    images, records, sentid = os.path.join(root, "images"), [], 0
    for imgid in range(train + val):
        split = "train" if imgid < train else "val"
        flag = imgid % 2
        before = uint8_scene((size, size), seed=200 + imgid)
        after = uint8_scene((size, size), seed=300 + imgid) if flag else before.copy()
        if odd_size and imgid == train - 1:
            before = uint8_scene((odd_size, odd_size), seed=1)
            after = before.copy()
        name = f"{split}_{imgid:04d}.png"
        for side, img in (("A", before), ("B", after)):
            os.makedirs(os.path.join(images, split, side), exist_ok=True)
            Image.fromarray(img.transpose(1, 2, 0)).save(os.path.join(images, split, side, name))
        sents = []
        for text in TRAIN_CAPTIONS[flag]:
            sents.append(sentence(text, imgid, sentid))
            sentid += 1
        records.append({"filepath": split, "filename": name, "imgid": imgid, "split": split, "changeflag": flag,
                        "sentences": sents})
    annotations = os.path.join(root, "LevirCCcaptions.json")
    with open(annotations, "w") as f:
        json.dump({"images": records}, f)
    return annotations, images
