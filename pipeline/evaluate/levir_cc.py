"""The LEVIR-CC dataset layout: the annotation JSON and the A/B image pairs it names.

`LevirCCcaptions.json` is {"images": [record, ...]}; a record holds filepath, filename, split,
changeflag, imgid and sentences [{"tokens": [...], "raw": "..."}, ...]. The BEFORE image is
IMAGES_DIR/<filepath>/A/<filename> and the AFTER image IMAGES_DIR/<filepath>/B/<filename>.
Everything a run needs is checked here, before any model work, so that a bad file is named at
once rather than after an hour of captioning.
"""
import os
from dataclasses import dataclass

import numpy as np

from ...model import bounded_json
from ..errors import BadInput
from ..raster.sources import check_regular

# LEVIR-CC's own annotation file is 14 MB; a bigger one is a mistake (or a sparse file of spaces).
MAX_ANNOTATION_BYTES = 256 * 2**20

# The official code marks every no-change pair with this one retrieval flag.
NO_CHANGE_FLAG = -1


@dataclass(frozen=True)
class LevirPair:
    record: int            # position of the record in the annotation file
    filepath: str
    filename: str
    imgid: int
    changeflag: int
    references: tuple      # every sentence's `raw`, as written (the captioning references)
    first_tokens: tuple    # the first sentence's `tokens` (the retrieval query)
    first_raw: str         # the first sentence's `raw`
    before: str            # IMAGES_DIR/<filepath>/A/<filename>
    after: str             # IMAGES_DIR/<filepath>/B/<filename>
    sentence_tokens: tuple = ()  # every sentence's `tokens` (the training captions)

    @property
    def flag(self):
        """Retrieval label, as the official code forms it: one shared flag for no change, else imgid."""
        return NO_CHANGE_FLAG if self.changeflag == 0 else self.imgid

    @property
    def changed(self):
        return self.changeflag != 0


def read_split(annotations, images_dir, split="test"):
    """The pairs of `split`, in file order; BadInput names the file and the record at fault."""
    records = _read_records(annotations)
    if not os.path.isdir(images_dir):
        raise BadInput("is not a folder (give the LEVIR-CC images folder holding <filepath>/A and /B)",
                       images_dir)
    chosen = [(i, r) for i, r in enumerate(records) if isinstance(r, dict) and r.get("split") == split]
    if not chosen:
        splits = sorted({str(r.get("split")) for r in records if isinstance(r, dict)})
        raise BadInput(f"holds no pairs of split {split!r} (splits present: {', '.join(splits) or 'none'})",
                       annotations)
    pairs, seen = [], {}
    for index, record in chosen:
        pair = _pair(annotations, images_dir, index, record)
        if pair.filename in seen:  # captions.json is keyed by filename
            raise BadInput(f"records {seen[pair.filename]} and {index} of split {split!r} both name "
                           f"{pair.filename!r}", annotations)
        seen[pair.filename] = index
        pairs.append(pair)
    return pairs


def _read_records(path):
    try:
        data = bounded_json.load_file(path, MAX_ANNOTATION_BYTES)
    except FileNotFoundError:
        raise BadInput("does not exist", path) from None
    except IsADirectoryError:
        raise BadInput("is a folder, not the annotation JSON file", path) from None
    except OSError as exc:
        raise BadInput(f"cannot be read ({exc.strerror or exc})", path) from None
    except bounded_json.JsonLimit as exc:
        raise BadInput(f"{exc}; expected the LEVIR-CC annotation JSON", path) from None
    except ValueError as exc:  # not UTF-8, or not JSON
        raise BadInput(f"is not valid JSON ({exc})", path) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BadInput('is not a LEVIR-CC annotation file (expected {"images": [records]})', path)
    return data["images"]


def _pair(path, images_dir, index, r):
    def bad(problem):
        name = r.get("filename") if isinstance(r.get("filename"), str) else None
        return BadInput(f"record {index}{f' ({name})' if name else ''}: {problem}", path)

    for key in ("filepath", "filename"):
        if not isinstance(r.get(key), str) or not r[key]:
            raise bad(f"{key!r} must be a non-empty string")
    for key in ("changeflag", "imgid"):
        value = r.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f"{key!r} must be a whole number from 0, got {value!r}")
    sentences = r.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        raise bad("'sentences' must be a non-empty list")
    for j, s in enumerate(sentences):
        if not isinstance(s, dict) or not isinstance(s.get("raw"), str):
            raise bad(f"sentence {j} has no 'raw' string")
        tokens = s.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise bad(f"sentence {j}: 'tokens' must be a list of strings")
    base = os.path.join(images_dir, r["filepath"])
    return LevirPair(index, r["filepath"], r["filename"], r["imgid"], r["changeflag"],
                     tuple(s["raw"] for s in sentences), tuple(sentences[0]["tokens"]), sentences[0]["raw"],
                     os.path.join(base, "A", r["filename"]), os.path.join(base, "B", r["filename"]),
                     tuple(tuple(s["tokens"]) for s in sentences))


def check_images(pairs):
    """Both images of every pair exist, are images, and have one size; returns the largest (h, w)."""
    from PIL import Image

    largest = (0, 0)
    for pair in pairs:
        sizes = []
        for path in (pair.before, pair.after):
            check_regular(path, "image")  # before PIL opens it: a FIFO would block the read
            try:
                with Image.open(path) as im:  # reads the header only
                    sizes.append(im.size)
            except FileNotFoundError:
                raise BadInput(f"does not exist (pair {pair.filename})", path) from None
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise BadInput(f"cannot be read as an image ({exc})", path) from None
        if sizes[0] != sizes[1]:
            (wa, ha), (wb, hb) = sizes
            raise BadInput(f"is {wb}x{hb} px but its BEFORE image {pair.before} is {wa}x{ha} px; "
                           f"the two dates must be the same size", pair.after)
        w, h = sizes[0]
        largest = max(largest, (h, w), key=lambda s: s[0] * s[1])
    return largest


def read_image(path):
    """uint8 RGB (3, H, W); converted to RGB as the official transform does (grey, palette, alpha)."""
    from PIL import Image

    check_regular(path, "image")
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInput(f"cannot be read as an image ({exc})", path) from None
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def read_pair(pair):
    return read_image(pair.before), read_image(pair.after)
