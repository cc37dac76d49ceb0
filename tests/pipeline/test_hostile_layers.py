"""Hostile layers and requests: `search`, `info` and `serve` on files that cannot be written, on
layers edited by hand (SQL, GDAL) into shapes rsicrc never writes, and on requests built to hurt.

Each case ends in exit code 2 with one line naming the file (and the tile) and the problem, or in
a correct result where leaving the damaged tile out is the right answer; never a traceback, never
exit code 1, and JSON output that a strict parser reads (no NaN, no Infinity).
"""
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest
import torch
from osgeo import ogr
from pipeline_test_rasters import uint8_scene, write_raster

from rsicrc.pipeline import serve as serve_mod
from rsicrc.pipeline.caption.run import CaptionParams, run_caption
from rsicrc.pipeline.cli import main
from rsicrc.pipeline.layer.gpkg import LayerError, read_columns
from rsicrc.pipeline.layer.sqlite_edits import write_scores
from rsicrc.pipeline.progress import Reporter

TILE = 64
NOBODY = 65534


def strict_json(text):
    """json.loads that refuses NaN, Infinity and -Infinity (Python's own parser accepts them)."""
    def refuse(name):
        raise AssertionError(f"{name} in the JSON output")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    return (write_raster(d / "b.tif", uint8_scene((128, 192), 41)),   # 2 x 3 tiles of 64 px
            write_raster(d / "a.tif", uint8_scene((128, 192), 42)))


@pytest.fixture(scope="module")
def finished(pair, captioner, tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile-layer") / "changes.gpkg"
    run_caption(CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE, batch_size=6),
                Reporter(), captioner=captioner)
    return out


@pytest.fixture
def layer(finished, tmp_path):
    copy = tmp_path / "layer.gpkg"
    shutil.copyfile(finished, copy)
    return copy


# --- hand edits --------------------------------------------------------------------------------

def sql(path, statement, *args):
    """A statement on the file as any SQLite tool would run it (GDAL's R-tree triggers satisfied)."""
    con = sqlite3.connect(str(path))
    for name in ("ST_IsEmpty", "ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY"):
        con.create_function(name, 1, lambda g: 0)
    with con:
        con.execute(statement, args)
    con.close()


def set_metadata(path, key, value=None, raw=None, drop=False):
    """Replace one run metadata item through GDAL: `value` JSON-encoded, or `raw` text as is."""
    ds = ogr.Open(str(path), 1)
    lyr = ds.GetLayerByName("changes")
    items = dict(lyr.GetMetadata() or {})
    if drop:
        items.pop(key, None)
    else:
        items[key] = raw if raw is not None else json.dumps(value)
    assert lyr.SetMetadata(items) == 0
    ds = None


def tile_of(path, fid):
    con = sqlite3.connect(str(path))
    try:
        return con.execute("SELECT tile_id FROM changes WHERE fid = ?", (fid,)).fetchone()[0]
    finally:
        con.close()


def columns(path):
    con = sqlite3.connect(str(path))
    try:
        return [r[1] for r in con.execute('PRAGMA table_info("changes")')]
    finally:
        con.close()


def search(path, captioner, *extra):
    return ["search", str(path), "a road", "--model", captioner.source, "--device", "cpu", *extra]


def one_error_line(capsys, rc, *words):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


# --- 1. files that cannot be written -----------------------------------------------------------

def _as_nobody():
    """subprocess options that run a command as an unprivileged user (tests run as root, and root
    writes a 0444 file or into a 0555 folder regardless of the permission bits)."""
    if os.name != "posix":
        pytest.skip("permission bits are POSIX")
    if os.geteuid() != 0:
        return {}
    try:
        subprocess.run(["true"], user=NOBODY, group=NOBODY, extra_groups=[], check=True)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        pytest.skip(f"cannot run a command as an unprivileged user to test permissions ({exc})")
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []}


def _open_folder():
    """A folder an unprivileged user can reach (pytest's tmp_path is root's, mode 0700)."""
    folder = tempfile.mkdtemp(prefix="rsicrc-ro-")
    os.chmod(folder, 0o755)
    return folder


def _readable_checkpoint(checkpoint, folder):
    """The checkpoint where the unprivileged user can read it (hard links: no 93 MB copy), so a
    search that went on to load the model would get as far as writing."""
    out = os.path.join(folder, "ckpt")
    os.mkdir(out)
    for name in os.listdir(checkpoint):
        try:
            os.link(os.path.join(checkpoint, name), os.path.join(out, name))
        except OSError:
            shutil.copyfile(os.path.join(checkpoint, name), os.path.join(out, name))
        os.chmod(os.path.join(out, name), 0o644)
    return out


def _search_cli(layer_path, checkpoint, cwd, **user):
    env = {**os.environ, "HOME": cwd, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "rsicrc", "search", str(layer_path), "a road", "--model",
                           str(checkpoint), "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env, **user)


def _assert_refused_unwritten(proc, path, before):
    err = proc.stderr.strip()
    assert proc.returncode == 2, err[-2000:]
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(path) in err and "cannot be written" in err and "score field cannot be added" in err, err
    with open(path, "rb") as f:
        assert f.read() == before  # nothing written
    folder = os.path.dirname(path)
    assert not [n for n in os.listdir(folder) if n.startswith(".rsicrc-write-test-") or n.endswith(".lock")]


def test_search_refuses_a_write_protected_file(finished, small_checkpoint):
    user = _as_nobody()
    folder = _open_folder()
    try:
        if user:
            os.chown(folder, NOBODY, NOBODY)  # the user's own folder; only the file is protected
        path = os.path.join(folder, "changes.gpkg")
        shutil.copyfile(finished, path)
        os.chmod(path, 0o444)
        with open(path, "rb") as f:
            before = f.read()
        checkpoint = _readable_checkpoint(small_checkpoint, folder)
        _assert_refused_unwritten(_search_cli(path, checkpoint, folder, **user), path, before)
    finally:
        shutil.rmtree(folder)


def test_search_refuses_a_file_in_a_read_only_folder(finished, small_checkpoint):
    user = _as_nobody()
    folder = _open_folder()
    try:
        path = os.path.join(folder, "changes.gpkg")
        shutil.copyfile(finished, path)
        os.chmod(path, 0o666)  # the file could be written, but SQLite's journal goes in the folder
        checkpoint = _readable_checkpoint(small_checkpoint, folder)
        os.chmod(folder, 0o555)
        with open(path, "rb") as f:
            before = f.read()
        proc = _search_cli(path, checkpoint, folder, **user)
        _assert_refused_unwritten(proc, path, before)
        assert "folder" in proc.stderr and "not writable" in proc.stderr
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder)


def test_search_refuses_a_file_on_a_read_only_mount(finished, small_checkpoint, tmp_path):
    """Root included: a read-only mount refuses every writer. The mount lives in a private mount
    namespace (unshare), so nothing is left mounted on the machine whatever happens."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        pytest.skip("needs Linux and unshare(1) for a private read-only mount")
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    mnt = tmp_path / "ro"
    mnt.mkdir()
    probe = subprocess.run([*unshare, "sh", "-c", f"mount -t tmpfs -o size=16m tmpfs {mnt} && "
                            f"mount -o remount,ro {mnt}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here ({probe.stderr.strip() or probe.returncode})")
    path = mnt / "changes.gpkg"
    script = (f"mount -t tmpfs -o size=16m tmpfs {mnt} && cp {finished} {path} && mount -o remount,ro {mnt} && "
              f"{sys.executable} -m rsicrc search {path} 'a road' --model {small_checkpoint} --device cpu; "
              f"echo rc=$?; if [ -e {path}.lock ]; then echo LOCK_LEFT; fi; "
              f"cmp -s {finished} {path} && echo UNCHANGED")
    proc = subprocess.run([*unshare, "sh", "-c", script], capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip()
    assert "rc=2" in proc.stdout and "UNCHANGED" in proc.stdout and "LOCK_LEFT" not in proc.stdout, \
        (proc.stdout, err[-2000:])
    lines = [x for x in err.splitlines() if "Warning" not in x and "return ogr_read" not in x]
    assert len(lines) == 1 and str(path) in lines[0] and "cannot be written" in lines[0], err
    assert "Read-only file system" in lines[0] and "score field cannot be added" in lines[0], err


# --- 2. tampered layers ------------------------------------------------------------------------

@pytest.mark.parametrize("value,words", [
    (b"\x01\x02\x03", "has 3 bytes, expected 256"),
    (np.zeros(32, "<f4").tobytes(), "has 128 bytes, expected 256"),  # another model's width
    ("not a blob", "has 10 bytes"),  # SQLite keeps a TEXT in a BLOB column
    (42, "bytes, expected 256"),
])
def test_search_refuses_an_embedding_of_the_wrong_length(layer, captioner, capsys, value, words):
    # Refused, not skipped: a NULL embedding is the documented "no embedding" (a tile cleared in
    # QGIS) and is left out with a NULL score, but a BLOB of the wrong length is damage or another
    # model's vector; searching on would rank the layer with tiles silently missing.
    sql(layer, "UPDATE changes SET embedding = ? WHERE fid = 2", value)
    rc = main(search(layer, captioner))
    one_error_line(capsys, rc, str(layer), f"tile {tile_of(layer, 2)} (fid 2)", words)
    assert not [c for c in columns(layer) if c.startswith("q_")]  # nothing written


def test_search_refuses_embeddings_of_another_width_everywhere(layer, captioner, capsys):
    set_metadata(layer, "embedding_dim", 32)  # metadata of one model, BLOBs of another
    rc = main(search(layer, captioner))
    one_error_line(capsys, rc, str(layer), "has 256 bytes, expected 128", "do not fit its metadata")


@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_a_non_finite_embedding_gets_no_score_and_json_stays_strict(layer, captioner, capsys, fill):
    # Left out like a NULL embedding (score NULL, never a hit): its score is not a number, and
    # the other tiles' scores are sound.
    sql(layer, "UPDATE changes SET embedding = ? WHERE fid = 3", np.full(64, fill, "<f4").tobytes())
    rc = main(search(layer, captioner, "--json"))
    out = capsys.readouterr().out
    assert rc == 0
    result = strict_json(out)
    assert result["features"] == 6 and result["scored"] == 5
    assert tile_of(layer, 3) not in [h["tile_id"] for h in result["hits"]]
    scores = read_columns(layer, [result["field"]])
    assert np.isnan(scores[result["field"]][list(scores["fid"]).index(3)])  # NULL in the file


@pytest.mark.parametrize("geometry", [b"\xde\xad\xbe\xef", b"GP\x00\x01garbage", None])
def test_a_broken_geometry_keeps_the_hit_without_a_centroid(layer, captioner, capsys, geometry):
    # The tile's embedding and score are sound, so it stays a hit; only where it lies is unknown:
    # its centroid is null in JSON and "-" in the table (NaN would not be JSON).
    sql(layer, "UPDATE changes SET geom = ? WHERE fid = 2", geometry)
    tile = tile_of(layer, 2)
    rc = main(search(layer, captioner, "--json", "--top", "6"))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    hits = {h["tile_id"]: h for h in strict_json(captured.out)["hits"]}
    assert len(hits) == 6 and hits[tile]["centroid"] is None
    assert all(len(h["centroid"]) == 2 for t, h in hits.items() if t != tile)
    assert main(search(layer, captioner, "--top", "6")) == 0
    row = [x for x in capsys.readouterr().out.splitlines()[2:] if x.split()[0] == str(tile)]
    assert row and row[0].split()[2:4] == ["-", "-"]
    assert main(["info", str(layer), "--json"]) == 0
    assert strict_json(capsys.readouterr().out)["features"] == 6


def test_a_hit_whose_tile_id_and_caption_were_emptied(layer, captioner, capsys):
    sql(layer, "UPDATE changes SET tile_id = NULL, caption = NULL WHERE fid = 4")
    rc = main(search(layer, captioner, "--json", "--top", "6"))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    hits = strict_json(captured.out)["hits"]
    assert len(hits) == 6 and sum(h["tile_id"] is None and h["caption"] is None for h in hits) == 1
    assert main(search(layer, captioner, "--top", "6")) == 0
    assert main(["info", str(layer)]) == 0
    assert "None" not in capsys.readouterr().out


@pytest.mark.parametrize("key,kwargs,words", [
    ("embedding_dim", {"value": "abc"}, "embedding_dim is '\"abc\"', expected a whole number"),
    ("embedding_dim", {"raw": "{not json"}, "embedding_dim is not valid JSON"),
    ("embedding_dim", {"raw": "NaN"}, "embedding_dim is not valid JSON"),
    ("embedding_dim", {"value": -5}, "embedding_dim is '-5'"),
    ("embedding_dim", {"value": 10 ** 12}, "embedding_dim is '1000000000000'"),
    ("embedding_dim", {"value": True}, "embedding_dim is 'true'"),
    ("queries", {"value": ["a road"]}, "queries is '[\"a road\"]', expected an object"),
    ("queries", {"value": {"q_x": 5}}, "item queries"),
    ("params", {"value": "hello"}, "params is '\"hello\"', expected an object"),
    ("model_sha256", {"drop": True}, "has no model_sha256"),
    ("model_sha256", {"value": 12}, "item model_sha256"),
    ("skipped_tiles", {"value": "many"}, "skipped_tiles is '\"many\"', expected a list"),
    ("skipped_tiles", {"value": 7}, "skipped_tiles is '7'"),
    ("skipped_tiles", {"value": [1, 2]}, "skipped_tiles is '[1, 2]'"),
    ("skipped_count", {"value": -1}, "skipped_count is '-1'"),
    ("complete", {"value": "yes"}, "complete is '\"yes\"', expected true or false"),
    ("clip_embedding_dim", {"value": "x"}, "clip_embedding_dim"),
    ("clip_queries", {"value": [1]}, "clip_queries"),
    ("created", {"value": {"a": 1}}, "created is"),
])
@pytest.mark.parametrize("command", ["search", "info"])
def test_damaged_run_metadata_is_named(layer, captioner, capsys, key, kwargs, words, command):
    # One check of the metadata for both commands (info accepts exactly the layers search does):
    # a value rsicrc never writes means the layer was edited, and what else changed is unknown.
    set_metadata(layer, key, **kwargs)
    argv = search(layer, captioner) if command == "search" else ["info", str(layer), "--json"]
    one_error_line(capsys, main(argv), str(layer), words)


def test_a_layer_without_its_embedding_field(layer, captioner, capsys):
    sql(layer, "ALTER TABLE changes DROP COLUMN embedding")
    one_error_line(capsys, main(search(layer, captioner)), str(layer), "has no field embedding")
    one_error_line(capsys, main(["info", str(layer)]), str(layer), "has no field embedding")


@pytest.mark.parametrize("value", [b"\xff\xfe caption", "caf\udce9"])
@pytest.mark.parametrize("command", ["search", "info"])
def test_a_caption_that_is_not_utf8_names_its_tile(layer, captioner, capsys, value, command):
    # Stored as a BLOB in the TEXT column, or as TEXT of invalid bytes (CAST).
    if isinstance(value, bytes):
        sql(layer, "UPDATE changes SET caption = ?, changed = 1 WHERE fid = 5", value)
    else:
        sql(layer, "UPDATE changes SET caption = CAST(? AS TEXT), changed = 1 WHERE fid = 5",
            value.encode("utf-8", "surrogateescape"))
    argv = search(layer, captioner, "--top", "6") if command == "search" else ["info", str(layer)]
    one_error_line(capsys, main(argv), str(layer), f"caption of tile {tile_of(layer, 5)} (fid 5)", "UTF-8")


def test_info_counts_every_skipped_tile(layer, capsys):
    # skipped_tiles lists at most the first 1000 skipped tiles; skipped_count counts them all.
    set_metadata(layer, "skipped_count", 5000)
    set_metadata(layer, "skipped_tiles", [{"tile_id": 9, "row": 0, "col": 0, "nodata_fraction": 1.0}])
    assert main(["info", str(layer), "--json"]) == 0
    assert strict_json(capsys.readouterr().out)["skipped"] == 5000


def test_a_layer_path_that_is_a_fifo(tmp_path, capsys):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "pipe.gpkg"
    os.mkfifo(fifo)  # GDAL would block opening it, waiting for a writer
    one_error_line(capsys, main(["info", str(fifo)]), str(fifo), "not a regular file")


def test_search_clip_refuses_a_clip_embedding_of_the_wrong_length(pair, small_checkpoint, tiny_clip_folder,
                                                                    tmp_path, capsys):
    out = tmp_path / "clip.gpkg"
    assert main(["caption", *pair, "-o", str(out), "--model", str(small_checkpoint), "--tile-size", str(TILE),
                 "--device", "cpu", "--clip", "--clip-model", str(tiny_clip_folder)]) == 0
    capsys.readouterr()
    sql(out, "UPDATE changes SET clip_after = x'00ff' WHERE fid = 3")
    rc = main(["search", str(out), "a road", "--clip", "--clip-model", str(tiny_clip_folder), "--device", "cpu"])
    one_error_line(capsys, rc, str(out), f"clip_after of tile {tile_of(out, 3)} (fid 3)", "has 2 bytes")


# --- 5. options --------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--when", "before"], ["--when", "after"], ["--change"]])
def test_when_and_change_need_clip(layer, captioner, capsys, args):
    one_error_line(capsys, main(search(layer, captioner, *args)), "need --clip")


@pytest.mark.parametrize("top,words", [("0", "--top must be at least 1"), ("-3", "--top must be at least 1"),
                                       ("abc", "invalid int value"), ("1e3", "invalid int value")])
def test_bad_top_is_refused(layer, captioner, capsys, top, words):
    one_error_line(capsys, main(search(layer, captioner, "--top", top)), words)


def test_a_huge_top_returns_every_scored_tile(layer, captioner, capsys):
    assert main(search(layer, captioner, "--top", str(10 ** 30), "--json")) == 0
    result = strict_json(capsys.readouterr().out)
    assert result["scored"] == 6 and len(result["hits"]) == 6


def test_a_10000_character_query_is_refused_before_any_work(layer, captioner, capsys, monkeypatch):
    monkeypatch.setattr("rsicrc.pipeline.search.load_captioner", lambda *a: pytest.fail("a model was loaded"))
    rc = main(["search", str(layer), "road " * 2000, "--device", "cpu"])
    one_error_line(capsys, rc, "10,000 characters", "at most 1,000")
    assert not [c for c in columns(layer) if c.startswith("q_")]


@pytest.mark.parametrize("name", ['x"; DROP TABLE changes; --', "x'; DROP TABLE changes; --", "a b", "1abc",
                                  "q_é", "x" * 64, "", 'q"', "fid", "GEOM"])
def test_sql_looking_field_names_are_refused(layer, captioner, capsys, name):
    before = columns(layer)
    rc = main(search(layer, captioner, "--field", name))
    one_error_line(capsys, rc, "--field")
    assert columns(layer) == before and len(read_columns(layer, ["tile_id"])["tile_id"]) == 6


def test_writer_refuses_a_name_that_would_end_its_quotes(layer):
    # The QGIS side hands the user's setting to write_scores: only what breaks the quoting is refused.
    with pytest.raises(LayerError, match="cannot be a score field name"):
        write_scores(layer, 'x"; DROP TABLE changes; --', [1], [0.5])
    write_scores(layer, "my score", [1], [0.5])  # a plain name with a space is fine in quotes
    assert len(read_columns(layer, ["tile_id"])["tile_id"]) == 6 and "my score" in columns(layer)


@pytest.mark.parametrize("declared", ["TEXT", "BLOB", "BOOLEAN", "DATE"])
def test_search_never_overwrites_a_field_of_the_users(layer, captioner, capsys, declared):
    sql(layer, f"ALTER TABLE changes ADD COLUMN notes {declared}")
    sql(layer, "UPDATE changes SET notes = 'keep me'")
    rc = main(search(layer, captioner, "--field", "notes"))
    one_error_line(capsys, rc, str(layer), "field notes exists", "choose another --field")
    con = sqlite3.connect(str(layer))
    assert {r[0] for r in con.execute("SELECT notes FROM changes")} == {"keep me"}
    con.close()
    with pytest.raises(LayerError, match="exists and holds"):
        write_scores(layer, "notes", [1], [0.5])


# --- 3 and 4. the search worker ----------------------------------------------------------------

class _FakeModel:
    source, sha256 = "fake", "0" * 64

    def __init__(self, fill=None):
        self.fill = fill
        self.embedded = 0

    def embed_text(self, texts):
        self.embedded += len(texts)
        out = torch.ones(len(texts), 4) / 2
        if self.fill is not None:
            out[-1, 0] = self.fill
        return out

    def unknown_words(self, text):
        return []


class _Worker(serve_mod.ServeHandler):
    def __init__(self, model):
        super().__init__("fake", "fake-clip", "cpu")
        self.model = model
        self.loads = 0

    def _model(self, source, clip):
        self.loads += 1
        return self.model


def _serve(worker, data):
    out = io.StringIO()
    assert serve_mod.serve(worker, io.BytesIO(data), out) == 0
    return [strict_json(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("fill", [float("nan"), float("inf")])
def test_serve_never_answers_nan(fill):
    answers = _serve(_Worker(_FakeModel(fill)), b'{"id": 1, "op": "embed_text", "texts": ["a", "b"]}\n'
                                                 b'{"id": 2, "op": "ping"}\n')
    assert answers[0]["id"] == 1 and answers[0]["ok"] is False and "text 1 is not finite" in answers[0]["error"]
    assert answers[1] == {"id": 2, "ok": True, "version": answers[1]["version"]}


def test_serve_refuses_200000_texts_before_any_embedding():
    model = _FakeModel()
    worker = _Worker(model)
    big = json.dumps({"id": 1, "op": "embed_text", "texts": ["a"] * 200_000}).encode()
    assert len(big) < serve_mod.MAX_LINE_BYTES  # the count is what refuses it, not the line length
    answers = _serve(worker, big + b'\n{"id": 2, "op": "embed_text", "texts": ["a road"]}\n')
    assert answers[0]["ok"] is False and "200,000 texts" in answers[0]["error"] and "256" in answers[0]["error"]
    assert answers[1]["ok"] is True and len(answers[1]["embeddings"]) == 1
    assert model.embedded == 1 and worker.loads == 1  # the refused request loaded and embedded nothing
    at_limit = json.dumps({"id": 3, "op": "embed_text", "texts": ["a"] * serve_mod.MAX_TEXTS}).encode()
    assert _serve(worker, at_limit + b"\n")[0]["ok"] is True


class _CountingStream(io.BytesIO):
    """Records the most a single read asked for and got, to prove no line is read whole."""

    def __init__(self, data):
        super().__init__(data)
        self.largest = 0

    def readline(self, size=-1):
        assert size is not None and size > 0, "a line read without a limit"
        line = super().readline(size)
        self.largest = max(self.largest, len(line))
        return line

    def __iter__(self):
        raise AssertionError("iterating reads lines without a limit")


def test_serve_skips_an_overlong_line_without_buffering_it():
    limit = serve_mod.MAX_LINE_BYTES
    stream = _CountingStream(b'{"id": 1, "op": "ping", "pad": "' + b"x" * (5 * limit) + b'"}\n'
                             + b'{"id": 2, "op": "ping"}\n' + b"y" * (limit + 10))  # the last one unended
    out = io.StringIO()
    assert serve_mod.serve(_Worker(_FakeModel()), stream, out) == 0
    answers = [strict_json(x) for x in out.getvalue().splitlines()]
    assert [a["ok"] for a in answers] == [False, True, False]
    assert "longer than 1,048,576 bytes" in answers[0]["error"] and answers[1]["id"] == 2
    assert stream.largest <= limit + 1


@pytest.mark.parametrize("line,words", [
    (b"this is not json", "not valid JSON"),
    (b'{"id": 1, "op": "ping"', "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"ping"', "must be a JSON object"),
    (b"42", "must be a JSON object"),
    (b'{"op": "ping"}', "needs an 'id'"),
    (b'{"id": {"a": 1}, "op": "ping"}', "'id' must be a number or a string"),
    (b'{"id": NaN, "op": "ping"}', "not valid JSON"),
    (b'{"id": 1e400, "op": "ping"}', "too large"),
    (b'{"id": 1, "op": "dance"}', "unknown op 'dance'"),
    (b'{"id": 1}', "needs an 'op'"),
    (b'{"id": 1, "op": "embed_text"}', "'texts' must be a non-empty list of strings"),
    (b'{"id": 1, "op": "embed_text", "texts": "a road"}', "'texts' must be a non-empty list of strings"),
    (b'{"id": 1, "op": "embed_text", "texts": []}', "'texts' must be a non-empty list of strings"),
    (b'{"id": 1, "op": "embed_text", "texts": ["a", 2]}', "text 1 is a int"),
    (b'{"id": 1, "op": "embed_text", "texts": ["a"], "clip": "yes"}', "'clip' must be true or false"),
    (b'{"id": 1, "op": "embed_text", "texts": ["a"], "model": 5}', "'model' must be a string"),
    (b'{"id": 1, "op": "embed_text", "texts": ["' + b"a" * 1001 + b'"]}', "at most 1,000"),
    (b'\xff\xfe{"id": 1, "op": "ping"}', "not UTF-8"),
    (b"[" * 200_000, "not valid JSON"),
])
def test_serve_answers_a_malformed_request_and_keeps_serving(line, words):
    worker = _Worker(_FakeModel())
    answers = _serve(worker, line + b'\n{"id": "next", "op": "embed_text", "texts": ["a road"]}\n')
    assert len(answers) == 2 and answers[0]["ok"] is False and words in answers[0]["error"], answers[0]
    assert len(answers[0]["error"].splitlines()) == 1
    assert answers[1]["id"] == "next" and answers[1]["ok"] is True
    assert worker.model.embedded == 1


def test_serve_bounds_through_the_command_line(small_checkpoint, captioner):
    """The real worker: the refused requests are answered in order and the good one after them."""
    lines = [json.dumps({"id": 1, "op": "embed_text", "texts": ["a"] * 200_000}).encode(),
             b'{"id": 2, "op": "ping", "pad": "' + b"x" * (2 * serve_mod.MAX_LINE_BYTES) + b'"}',
             b"\xff\xfe not utf-8",
             b'{"op": "ping"}',
             json.dumps({"id": 5, "op": "embed_text", "texts": ["a road"]}).encode()]
    proc = subprocess.run([sys.executable, "-m", "rsicrc", "serve", "--model", str(small_checkpoint),
                           "--device", "cpu"], input=b"\n".join(lines) + b"\n", capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = [strict_json(x) for x in proc.stdout.decode().splitlines()]
    assert [(a["id"], a["ok"]) for a in answers] == [(1, False), (None, False), (None, False), (None, False),
                                                     (5, True)]
    assert "at most 256" in answers[0]["error"] and "1,048,576 bytes" in answers[1]["error"]
    np.testing.assert_allclose(answers[4]["embeddings"], captioner.embed_text(["a road"]).numpy(), atol=1e-6)


class _Stalling(_Worker):
    """A worker whose "stall" request blocks (a network read that never answers) until released."""

    def __init__(self):
        super().__init__(_FakeModel())
        self.started, self.release = threading.Event(), threading.Event()

    def handle(self, request):
        if request.get("op") == "stall":
            self.started.set()
            self.release.wait(60)
            return {"ok": True, "late": True}
        return super().handle(request)


def test_serve_answers_a_ping_and_the_next_requests_while_one_stalls():
    worker = _Stalling()
    read_fd, write_fd = os.pipe()
    requests, out = os.fdopen(write_fd, "wb", buffering=0), io.StringIO()
    done = threading.Thread(target=lambda: serve_mod.serve(worker, os.fdopen(read_fd, "rb"), out, limit_s=0.3,
                                                           ping_patience_s=0))
    done.start()
    requests.write(b'{"id": 1, "op": "stall"}\n')
    assert worker.started.wait(30)
    requests.write(b'{"id": 2, "op": "ping"}\n{"id": 3, "op": "embed_text", "texts": ["a road"]}\n')
    requests.close()
    done.join(60)
    worker.release.set()
    answers = [strict_json(line) for line in out.getvalue().splitlines()]
    assert answers[0]["id"] == 2 and answers[0]["ok"] is True  # at once, while request 1 stalls
    assert answers[1]["id"] == 1 and answers[1]["ok"] is False and "did not finish within 0.3 s" in answers[1]["error"]
    assert answers[2]["id"] == 3 and answers[2]["ok"] is True and len(answers) == 3
