"""Hostile inputs, round two (issue #23), run on the CLI as a black box: a subprocess bounded by a
timeout (a hang fails the case) and an address-space limit. Every case exits 2 with one line
naming the file (or 0/1 where said), never a traceback; no file that existed before is changed,
and a refused run leaves no OUT.partial or OUT.lock behind.

FIFOs, special files and VRTs on them; outputs that are files the run reads (the model's weights,
the pairs CSV); a file that appears at OUT while the run goes; JSON nested a million levels deep,
or a sparse file of spaces; names with a newline or too long; a server that accepts and never
answers.
"""
import json
import os
import resource
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pipeline_test_rasters import uint8_scene, write_raster

from rsicrc.pipeline.cli import main

TILE = 64
TIMEOUT_S = 120
ADDRESS_SPACE = 48 * 2**30  # torch maps much virtual memory; a runaway read still meets this


@dataclass
class Expect:
    code: int = 2
    names: object = None  # in the error line
    words: tuple = ()
    untouched: list = field(default_factory=list)  # files that must still hold their bytes
    no_output: object = None  # an OUT whose partial and lock must not be left


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_cli(argv, env=None, stdin=None):
    return subprocess.run([sys.executable, "-m", "rsicrc", *map(str, argv)], capture_output=True, text=True,
                          timeout=TIMEOUT_S, preexec_fn=_limit, env={**os.environ, **(env or {})}, input=stdin)


def check(proc, expect, before):
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == expect.code, proc.stderr[-3000:]
    if expect.code:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("rsicrc: error:")]
        assert len(errors) == 1, proc.stderr
        for words in (str(expect.names), *expect.words) if expect.names is not None else expect.words:
            assert words in errors[0], errors[0]
    for path, content in before.items():
        assert Path(path).read_bytes() == content, f"{path} was changed"
    if expect.no_output is not None:
        out = Path(expect.no_output)
        assert not Path(f"{out}.partial").exists() and not Path(f"{out}.lock").exists()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    return (write_raster(d / "b.tif", uint8_scene((128, 128), 21)), write_raster(d / "a.tif", uint8_scene((128, 128), 22)))


def caption(pair, out, model, *extra, before=None):
    return [str(a) for a in ("caption", before or pair[0], pair[1], "-o", out, "--model", model, "--tile-size", TILE,
                              "--device", "cpu", *extra)]


def vrt_on(path, target):
    path.write_text(f'<VRTDataset rasterXSize="128" rasterYSize="128"><VRTRasterBand dataType="Byte" band="1">'
                    f'<SimpleSource><SourceFilename relativeToVRT="0">{target}</SourceFilename></SimpleSource>'
                    f"</VRTRasterBand></VRTDataset>")
    return path


def case_before_is_a_fifo(t):
    fifo = t.fifo("before.tif")
    return caption(t.pair, t.out, t.model, before=fifo), Expect(names=fifo, words=("FIFO",), no_output=t.out)


def case_a_vrt_whose_source_is_a_fifo(t):
    vrt = vrt_on(t.dir / "on-fifo.vrt", t.fifo("source.tif"))
    return caption(t.pair, t.out, t.model, before=vrt), Expect(names=vrt, words=("FIFO",), no_output=t.out)


def case_a_vrt_naming_a_vrt_on_a_fifo(t):
    inner = vrt_on(t.dir / "inner.vrt", t.fifo("deep.tif"))
    outer = vrt_on(t.dir / "outer.vrt", inner)
    return caption(t.pair, t.out, t.model, before=outer), Expect(names=inner, words=("FIFO",), no_output=t.out)


def case_batch_row_that_is_a_fifo(t):
    csv = t.dir / "pairs.csv"
    csv.write_text(f"before,after,name\n{t.pair[0]},{t.pair[1]},good\n{t.fifo('row.tif')},{t.pair[1]},fifo\n")
    out = t.dir / "batch.gpkg"
    argv = ["caption-batch", csv, "-o", out, "--model", t.model, "--tile-size", TILE, "--device", "cpu"]
    return argv, Expect(code=0)


def case_batch_csv_that_is_a_fifo(t):
    fifo = t.fifo("pairs.csv")
    return ["caption-batch", fifo, "-o", t.out, "--model", t.model], Expect(names=fifo, words=("FIFO",))


def case_evaluate_image_that_is_a_fifo(t):
    from levir_cc_dataset import write_dataset

    annotations, images = write_dataset(t.dir / "levir")
    image = Path(images) / "test" / "B" / "test_000003.png"
    image.unlink()
    os.mkfifo(image)
    return ["evaluate", "--annotations", annotations, "--images", images, "-o", t.dir / "eval", "--model", t.model,
            "--device", "cpu"], Expect(names=image, words=("FIFO",))


def case_evaluate_annotations_that_are_a_fifo(t):
    fifo = t.fifo("captions.json")
    return ["evaluate", "--annotations", fifo, "--images", t.dir, "-o", t.dir / "eval", "--model", t.model], \
        Expect(names=fifo, words=("not a regular file",))


def case_evaluate_annotations_a_huge_sparse_file_of_spaces(t):
    sparse = t.dir / "captions.json"
    with open(sparse, "wb") as f:
        f.truncate(8 * 2**30)  # 8 GiB of nothing on disk: read as spaces, a MemoryError before
    return ["evaluate", "--annotations", sparse, "--images", t.dir, "-o", t.dir / "eval", "--model", t.model], \
        Expect(names=sparse, words=("bytes, more than",))


def case_evaluate_annotations_nested_a_million_deep(t):
    deep = t.dir / "captions.json"
    deep.write_text("[" * 1_000_000 + "]" * 1_000_000)
    return ["evaluate", "--annotations", deep, "--images", t.dir, "-o", t.dir / "eval", "--model", t.model], \
        Expect(names=deep, words=("levels deep",))


def case_vocabulary_nested_a_million_deep(t):
    folder = t.model_copy()
    (folder / "levir_vocab.json").write_text('{"a": ' + "[" * 1_000_000 + "]" * 1_000_000 + "}")
    return caption(t.pair, t.out, folder), Expect(names=folder / "levir_vocab.json", words=("levels deep",),
                                                  no_output=t.out)


def case_weights_that_are_a_fifo(t):
    folder = t.model_copy()
    (folder / "pytorch_model.bin").unlink()
    os.mkfifo(folder / "pytorch_model.bin")
    return caption(t.pair, t.out, folder), Expect(words=("pytorch_model.bin is not a regular file",), no_output=t.out)


def case_layer_metadata_nested_a_million_deep(t):
    """A run metadata item edited into JSON a million levels deep (GDAL keeps the items in the
    GeoPackage metadata extension's XML; SQL edits it)."""
    import sqlite3

    from rsicrc.pipeline.layer.gpkg import write_metadata

    layer = t.layer_copy()
    write_metadata(layer, {"skipped_tiles": "PLACEHOLDER"})
    deep = "[" * 1_000_000 + "]" * 1_000_000
    con = sqlite3.connect(layer)
    with con:
        for row_id, text in con.execute("SELECT id, metadata FROM gpkg_metadata").fetchall():
            edited = text.replace("&quot;PLACEHOLDER&quot;", deep).replace('"PLACEHOLDER"', deep)
            con.execute("UPDATE gpkg_metadata SET metadata = ? WHERE id = ?", (edited, row_id))
    con.close()
    return ["info", layer], Expect(names=layer, words=("skipped_tiles", "levels deep"))


def case_output_is_the_models_weights(t):
    folder = t.model_copy()
    weights = folder / "pytorch_model.bin"
    return caption(t.pair, weights, folder, "--overwrite"), Expect(names=weights, words=("a file of the model",),
                                                                   untouched=[weights])


def case_batch_output_is_the_pairs_csv(t):
    csv = t.dir / "pairs.csv"
    csv.write_text(f"before,after\n{t.pair[0]},{t.pair[1]}\n")
    return ["caption-batch", csv, "-o", csv, "--model", t.model, "--overwrite"], \
        Expect(names=csv, words=("the pairs CSV",), untouched=[csv])


def case_batch_pairs_folder_taken_by_a_file(t):
    csv = t.dir / "pairs.csv"
    csv.write_text(f"before,after\n{t.pair[0]},{t.pair[1]}\n")
    taken = t.dir / "all.gpkg.pairs"
    taken.write_text("the user's notes\n")
    return ["caption-batch", csv, "-o", t.dir / "all.gpkg", "--model", t.model], \
        Expect(names=taken, words=("not a folder",), untouched=[taken])


def case_output_name_with_a_newline(t):
    out = t.dir / "two\nlines.gpkg"
    return caption(t.pair, out, t.model), Expect(words=("two\\nlines.gpkg", "control character"), no_output=out)


def case_output_name_too_long(t):
    out = t.dir / ("x" * 250 + ".gpkg")
    return caption(t.pair, out, t.model), Expect(words=("file system allows",))


def case_input_name_with_a_newline(t):
    odd = t.dir / "two\nlines.tif"
    odd.write_bytes(Path(t.pair[0]).read_bytes())
    return caption(t.pair, t.out, t.model, before=t.dir / "missing\nfile.tif"), \
        Expect(words=("missing\\nfile.tif", "no such file"), no_output=t.out)


def case_argument_error_names_the_program_once(t):
    return ["caption", t.pair[0], t.pair[1], "-o", t.out, "--no-such-option"], \
        Expect(words=("unrecognized arguments: --no-such-option",))


CASES = [case_before_is_a_fifo, case_a_vrt_whose_source_is_a_fifo, case_a_vrt_naming_a_vrt_on_a_fifo,
         case_batch_row_that_is_a_fifo, case_batch_csv_that_is_a_fifo, case_evaluate_image_that_is_a_fifo,
         case_evaluate_annotations_that_are_a_fifo, case_evaluate_annotations_a_huge_sparse_file_of_spaces,
         case_evaluate_annotations_nested_a_million_deep, case_vocabulary_nested_a_million_deep,
         case_weights_that_are_a_fifo, case_layer_metadata_nested_a_million_deep, case_output_is_the_models_weights,
         case_batch_output_is_the_pairs_csv, case_batch_pairs_folder_taken_by_a_file, case_output_name_with_a_newline,
         case_output_name_too_long, case_input_name_with_a_newline, case_argument_error_names_the_program_once]


class Case:
    def __init__(self, folder, pair, model, layer):
        self.dir, self.pair, self.model, self.layer = folder, pair, model, layer
        self.out = folder / "out.gpkg"

    def fifo(self, name):
        path = self.dir / name
        os.mkfifo(path)
        return path

    def model_copy(self):
        import shutil

        return Path(shutil.copytree(self.model, self.dir / "model"))

    def layer_copy(self):
        import shutil

        return Path(shutil.copy(self.layer, self.dir / "layer.gpkg"))


@pytest.fixture(scope="module")
def layer(pair, small_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("layer") / "layer.gpkg"
    assert main(caption(pair, out, small_checkpoint)) == 0
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_hostile_round_two(case, pair, small_checkpoint, layer, tmp_path):
    argv, expect = case(Case(tmp_path, pair, small_checkpoint, layer))
    before = {str(p): Path(p).read_bytes() for p in expect.untouched}
    proc = run_cli(argv)
    check(proc, expect, before)
    if case is case_batch_row_that_is_a_fifo:
        assert "pair fifo (row 2) skipped" in proc.stderr and "FIFO" in proc.stderr


def test_serve_answers_a_caption_at_a_fifo_at_once_and_goes_on(pair, small_checkpoint, tmp_path):
    fifo = tmp_path / "fifo.tif"
    os.mkfifo(fifo)
    requests = "\n".join(json.dumps(r) for r in [
        {"id": 1, "op": "caption_at", "before": str(fifo), "after": str(pair[1]), "x": 600016.0, "y": 5099984.0},
        {"id": 2, "op": "ping"}]) + "\n"
    proc = run_cli(["serve", "--model", small_checkpoint, "--device", "cpu"], stdin=requests)
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert answers[0]["id"] == 1 and answers[0]["ok"] is False and "FIFO" in answers[0]["error"]
    assert answers[1] == {"id": 2, "ok": True, "version": answers[1]["version"]}


def test_a_file_that_appears_at_out_during_the_run_is_never_replaced(pair, small_checkpoint, tmp_path, monkeypatch,
                                                                     capsys):
    from rsicrc.pipeline.caption import job

    out = tmp_path / "out.gpkg"
    real = job.CaptionJob.complete

    def complete_then_someone_writes_out(self):
        features = real(self)
        out.write_text("another program's file\n")
        return features

    monkeypatch.setattr(job.CaptionJob, "complete", complete_then_someone_writes_out)
    assert main(caption(pair, out, small_checkpoint)) == 1
    err = capsys.readouterr().err
    assert "appeared while the run was going" in err and "--resume" in err and len(err.strip().splitlines()) == 1
    assert out.read_text() == "another program's file\n"
    monkeypatch.setattr(job.CaptionJob, "complete", real)
    out.unlink()
    assert main(caption(pair, out, small_checkpoint, "--resume")) == 0  # the finished partial, moved into place
    assert not Path(f"{out}.partial").exists()


class _Silent(threading.Thread):
    """A server on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port, self.held = self.sock.getsockname()[1], []

    def run(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return


def test_a_server_that_never_answers_ends_in_one_line_naming_the_host(pair, small_checkpoint, tmp_path):
    server = _Silent()
    server.start()
    url = f"/vsicurl/http://127.0.0.1:{server.port}/before.tif?token=secret"
    proc = run_cli(caption(pair, tmp_path / "out.gpkg", small_checkpoint, before=url),
                   env={"GDAL_HTTP_TIMEOUT": "2", "GDAL_HTTP_CONNECTTIMEOUT": "2", "GDAL_HTTP_MAX_RETRY": "1",
                        "GDAL_HTTP_RETRY_DELAY": "1"})
    server.sock.close()
    check(proc, Expect(words=(f"127.0.0.1:{server.port}",)), {})
    assert "secret" not in proc.stderr  # a URL's query values are never printed
