"""A corpus of hostile and unusual inputs, one table: every case ends in exit code 2 with one line
naming the file and the problem, or in a correct result; never a traceback (exit 1), never a
half-written OUT.gpkg, never an unfinished OUT.gpkg.partial left behind by a refused run, and
never code run from a checkpoint.

Each case builds its inputs in its own folder and returns the command line and what must come
of it. The cases that need a small disk or a read-only folder mount a tmpfs (root, as in CI);
where mounting is not allowed they are skipped, saying so.
"""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pipeline_test_rasters import ORIGIN, uint8_scene, write_raster

from rsicrc.pipeline.cli import main
from rsicrc.pipeline.layer.gpkg import (LayerWriter, read_columns, read_info, read_metadata, read_metadata_items,
                                        write_metadata)
from rsicrc.pipeline.layer.schema import partial_path, slug_field

TILE = 64


@dataclass
class Bad:
    """Exit 2, one error line naming `names` (a path) and holding each of `words`."""

    names: object
    words: tuple = ()
    untouched: dict = field(default_factory=dict)  # path -> bytes it must still hold


@dataclass
class Good:
    """Exit 0; check(stdout) holds what a correct result is."""

    check: object = None


class Ctx:
    def __init__(self, folder, pair, checkpoint, layer):
        self.dir, self.pair, self.checkpoint, self.layer = folder, pair, checkpoint, layer
        self.out = folder / "out.gpkg"

    def caption(self, before=None, after=None, *extra, out=None, model=None):
        return ["caption", str(before or self.pair[0]), str(after or self.pair[1]), "-o", str(out or self.out),
                "--model", str(model or self.checkpoint), "--tile-size", str(TILE), "--device", "cpu", *extra]

    def raster(self, name, data, **kw):
        return write_raster(self.dir / name, data, **kw)

    def layer_copy(self, name="layer.gpkg"):
        return Path(shutil.copy(self.layer, self.dir / name))

    def mount_tmpfs(self, name, size_kb, read_only=False):
        point = self.dir / name
        point.mkdir()
        options = f"size={size_kb}k" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
        self.mounts.append(point)
        return point


def _fields(path):
    return set(read_info(path)["fields"])


def _features(path):
    return int(read_info(path)["features"])


# --- the cases ---------------------------------------------------------------------------------------

def corrupt_bytes(c):
    path = c.dir / "noise.tif"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return c.caption(path), Bad(path, ("cannot be opened as a raster",))


def truncated_geotiff(c):
    """Opens (the header is intact) but a block cannot be read."""
    good = Path(c.raster("whole.tif", uint8_scene((128, 128), 3)))
    path = c.dir / "truncated.tif"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return c.caption(path), Bad(path, ("cannot be read", "truncated or corrupt", "column"))


def empty_file(c):
    path = c.dir / "empty.tif"
    path.write_bytes(b"")
    return c.caption(None, path), Bad(path, ("cannot be opened as a raster",))


def text_file(c):
    path = c.dir / "notes.tif"
    path.write_text("not an image\n")
    return c.caption(path), Bad(path, ("cannot be opened as a raster",))


def folder_as_input(c):
    path = c.dir / "folder.tif"
    path.mkdir()
    return c.caption(path), Bad(path, ("cannot be opened",))


def one_pixel(c):
    path = c.raster("one.tif", uint8_scene((16, 16), 1)[:, :1, :1])
    return c.caption(path, path), Bad(path, ("1 x 1 px", "smaller than one 64 px tile"))


def one_by_100000(c):
    path = c.raster("strip.tif", np.full((3, 1, 100_000), 9, np.uint8))
    return c.caption(path, path), Bad(path, ("100000 x 1 px",))


def nan_and_inf_floats(c):
    """NaN and Inf pixels are nodata: a 40 x 40 NaN corner is 39 % of its tile, which is kept."""
    data = np.random.default_rng(1).uniform(0, 1000, (3, 128, 128)).astype(np.float32)
    data[:, :40, :40] = np.nan
    data[:, 100:, 100:] = np.inf
    path = c.raster("nan.tif", data)

    def check(_):
        columns = read_columns(c.out, ["tile_id", "nodata_fraction"])
        got = dict(zip(columns["tile_id"].tolist(), columns["nodata_fraction"].tolist()))
        assert got[0] == pytest.approx(1600 / 4096) and got[3] == pytest.approx(784 / 4096)
        assert got[1] == got[2] == 0.0
    return c.caption(path), Good(check)


def all_nan(c):
    path = c.raster("allnan.tif", np.full((3, 128, 128), np.nan, np.float32))
    return c.caption(path), Bad(path, ("no valid pixels",))


def all_nodata(c):
    """Every tile is nodata: a layer of no features that records every tile as skipped."""
    path = c.raster("nodata.tif", np.zeros((3, 128, 128), np.uint8), nodata=0)

    def check(_):
        assert _features(c.out) == 0 and read_metadata(c.out)["skipped_count"] == 4
    return c.caption(path), Good(check)


def two_bands(c):
    path = c.raster("two.tif", uint8_scene((128, 128), 4)[:2])
    return c.caption(path), Bad(path, ("non-alpha band", "--bands"))


def bands_zero(c):
    return c.caption(None, None, "--bands", "0,1,2"), Bad("--bands", ("three band numbers",))


def bands_beyond(c):
    return c.caption(None, None, "--bands", "1,2,99"), Bad(c.pair[0], ("asks for band 99",))


def bands_words(c):
    return c.caption(None, None, "--bands", "red,green,blue"), Bad("--bands", ("three band numbers",))


def rotated_geotransform(c):
    path = c.dir / "rotated.tif"
    with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=3, dtype="uint8", crs="EPSG:32632",
                       transform=Affine(0.5, 0.1, ORIGIN[0], 0.1, -0.5, ORIGIN[1])) as dst:
        dst.write(uint8_scene((128, 128), 5))
    return c.caption(path), Bad(path, ("rotated",))


def geographic_crs(c):
    kw = dict(crs="EPSG:4326", origin=(10.0, 45.0), res=5e-6)
    before = c.raster("g1.tif", uint8_scene((128, 128), 6), **kw)
    after = c.raster("g2.tif", uint8_scene((128, 128), 7), **kw)
    return c.caption(before, after), Good(lambda _: _features(c.out) == 4 or pytest.fail("4 tiles expected"))


def identical_inputs(c):
    """The same file twice is a valid pair (nothing changed): every tile is captioned."""
    def check(_):
        assert _features(c.out) == 4
    return c.caption(c.pair[0], c.pair[0]), Good(check)


def output_is_an_input(c):
    before = Path(c.pair[0])
    return c.caption(out=before), Bad(before, ("is an input raster",), {before: before.read_bytes()})


def input_named_like_the_partial_file(c):
    """`caption victim.tif.partial B.tif -o victim.tif` used to destroy the input."""
    victim = Path(c.raster("victim.tif", uint8_scene((128, 128), 8)))
    partial = Path(shutil.copy(victim, c.dir / "victim.tif.partial"))
    return (c.caption(partial, out=victim),
            Bad(partial, ("input raster",), {victim: victim.read_bytes(), partial: partial.read_bytes()}))


def foreign_output_file(c):
    out = c.dir / "notes.gpkg"
    out.write_text("my notes\n")
    return c.caption(out=out), Bad(out, ("not a layer written by rsicrc", "--overwrite"), {out: b"my notes\n"})


def foreign_partial_file(c):
    partial = c.dir / "out.gpkg.partial"
    partial.write_text("someone else's\n")
    return c.caption(), Bad(partial, ("was not written by rsicrc",), {partial: b"someone else's\n"})


def output_is_a_folder(c):
    out = c.dir / "out.gpkg"
    out.mkdir()
    return c.caption(out=out), Bad(out, ("is a folder",))


def output_is_a_fifo(c):
    out = c.dir / "pipe.gpkg"
    os.mkfifo(out)
    return c.caption(out=out), Bad(out, ("not a regular file",))


def output_is_a_device(c):
    return c.caption(out="/dev/null"), Bad("/dev/null", ("not a regular file",))


def output_folder_missing(c):
    out = c.dir / "missing" / "out.gpkg"
    return c.caption(out=out), Bad(out.parent, ("does not exist",))


def output_folder_read_only(c):
    folder = c.mount_tmpfs("ro", 1024, read_only=True)
    return c.caption(out=folder / "out.gpkg", model="/nonexistent/model"), Bad(folder, ("not writable",))


def disk_full_at_creation(c):
    """A 64 KB disk: the GeoPackage cannot even be created. Nothing half-written stays."""
    folder = c.mount_tmpfs("tiny", 64)
    return c.caption(out=folder / "out.gpkg"), Bad(folder / "out.gpkg", ("cannot be written", "disk full"))


def disk_full_while_writing(c, monkeypatch):
    """The disk fills up (a filler file takes what is left) just before the second batch is
    written: exit 2, and the partial file keeps the first batch for --resume."""
    folder = c.mount_tmpfs("small", 4096)
    real_append, calls = LayerWriter.append, []

    def append_on_a_full_disk(self, columns, bounds):
        calls.append(len(bounds))
        if len(calls) == 2:
            # unbuffered: with Python 3.14's 128 KiB buffer the last write fails only at close()
            with open(folder / "filler", "wb", buffering=0) as filler:
                try:
                    while True:
                        filler.write(b"\0" * 65536)
                except OSError:
                    pass
        return real_append(self, columns, bounds)

    monkeypatch.setattr(LayerWriter, "append", append_on_a_full_disk)
    out = folder / "out.gpkg"
    bad = Bad(out, ("writing stopped", "disk full", "--resume"))

    def partial_keeps_the_first_batch():
        assert _features(partial_path(out)) == 2
    bad.after = partial_keeps_the_first_batch
    bad.keeps_partial = True
    return c.caption(None, None, "--batch-size", "2", out=out), bad


def tile_size(value):
    def case(c):
        return c.caption(None, None, "--tile-size", value), Bad("--tile-size")
    case.__name__ = f"tile_size_{value}"
    return case


def overlap_negative(c):
    return c.caption(None, None, "--overlap", "-1"), Bad("--overlap")


def overlap_equal_to_the_tile(c):
    return c.caption(None, None, "--overlap", str(TILE)), Bad("--overlap", ("smaller than the tile size",))


def batch_size_zero(c):
    return c.caption(None, None, "--batch-size", "0"), Bad("--batch-size")


def batch_size_huge(c):
    return c.caption(None, None, "--batch-size", "1000000"), Bad("--batch-size", ("at most",))


def batch_too_big_for_the_tiles(c):
    return c.caption(None, None, "--batch-size", "4096", "--tile-size", "4096"), Bad("--batch-size", ("GB of pixels",))


def max_nodata_nan(c):
    return c.caption(None, None, "--max-nodata", "nan"), Bad("--max-nodata", ("finite",))


def target_resolution_tiny(c):
    return (c.caption(None, None, "--target-resolution", "1e-6"),
            Bad(c.pair[0], ("1,000,000,000,000 tiles", "--yes-large")))


def resume_twice(c):
    return c.caption(None, None, "--resume", "--resume-if-possible"), Bad("--resume-if-possible", ("not allowed",))


def long_query(c):
    """A 10,000-character query is a paste gone wrong (the models read its first words): refused,
    as by `rsicrc search` and `serve`, under the one bound."""
    return c.caption(None, None, "--query", "new buildings " * 715), Bad("--query", ("at most 1,000 characters",))


def longest_query(c):
    """A query at the bound is a query: its field name is cut to a valid length."""
    text = ("new buildings " * 72)[:1000]

    def check(_):
        name = next(f for f in _fields(c.out) if f.startswith("q_"))
        assert len(name) <= 40 and read_metadata(c.out)["queries"][name] == text
    return c.caption(None, None, "--query", text), Good(check)


def sql_looking_query(c):
    text = "road'); DROP TABLE changes; --"

    def check(_):
        assert _features(c.out) == 4 and "q_road_drop_table_changes" in _fields(c.out)
    return c.caption(None, None, "--query", text), Good(check)


def non_ascii_queries(c):
    """Queries with no ASCII letter get stable, distinct field names (never a bare "q")."""
    def check(_):
        queries = read_metadata(c.out)["queries"]
        assert sorted(queries.values()) == sorted(["新建筑", "здания"])
        for name, text in queries.items():  # q_ and 8 hex digits of the text's SHA-1: stable
            assert name == "q_" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
        assert slug_field("新建筑", []) == slug_field(" 新建筑 ", []) != slug_field("здания", [])
    return c.caption(None, None, "--query", "新建筑", "--query", "здания"), Good(check)


def checkpoint_that_runs_code(c):
    """A pickle whose unpickling would create a file: refused, and the file never appears."""
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {c.dir / 'pwned'}",))

    model = Path(shutil.copytree(c.checkpoint, c.dir / "model"))
    torch.save({"x": Payload()}, model / "pytorch_model.bin")

    def never_ran():
        assert not (c.dir / "pwned").exists()
    bad = Bad(model / "pytorch_model.bin", ("weights-only",))
    bad.after = never_ran
    return c.caption(model=model), bad


def _model_copy(c):
    return Path(shutil.copytree(c.checkpoint, c.dir / "model"))


def config_null(c):
    model = _model_copy(c)
    (model / "config.json").write_text("null")
    return c.caption(model=model), Bad(model / "config.json", ("JSON object",))


def config_backbone_list(c):
    model = _model_copy(c)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "backbone": ["RN50"]}))
    return c.caption(model=model), Bad(model / "config.json", ("backbone",))


def config_giant_d_model(c):
    model = _model_copy(c)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "d_model": 2 ** 40}))
    return c.caption(model=model), Bad(model / "config.json", ("d_model",))


def nan_weights(c):
    """All-NaN weights used to caption every tile "PAD PAD ..." with exit 0."""
    import torch

    model = _model_copy(c)
    weights = torch.load(model / "pytorch_model.bin", weights_only=True)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()},
               model / "pytorch_model.bin")
    return c.caption(model=model), Bad(model / "pytorch_model.bin", ("non-finite",))


def search_sql_field(c):
    layer = c.layer_copy()
    return (["search", str(layer), "road", "--field", 'x"; DROP TABLE changes; --', "--model", str(c.checkpoint)],
            Bad("--field", ("not a valid field name",), {layer: layer.read_bytes()}))


def search_when_without_clip(c):
    return ["search", str(c.layer_copy()), "road", "--when", "before"], Bad("--when", ("need --clip",))


def search_a_raster(c):
    return ["search", c.pair[0], "road"], Bad(c.pair[0], ("not a GeoPackage",))


def info_a_text_file(c):
    path = c.dir / "x.gpkg"
    path.write_text("hello\n")
    return ["info", str(path)], Bad(path, ("not a GeoPackage",))


def resume_if_possible_on_a_foreign_partial(c):
    partial = c.dir / "out.gpkg.partial"
    partial.write_bytes(b"SQLite format 3\0 not ours")
    return (c.caption(None, None, "--resume-if-possible"),
            Bad(partial, ("was not written by rsicrc",), {partial: b"SQLite format 3\0 not ours"}))


def legacy_checkpoint(c):
    """A checkpoint in PyTorch's old (non-zip) format loads (without mmap) and captions."""
    import torch

    model = _model_copy(c)
    weights = torch.load(model / "pytorch_model.bin", weights_only=True)
    torch.save(weights, model / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    return c.caption(model=model), Good(lambda _: _features(c.out) == 4 or pytest.fail("4 tiles expected"))


def search_a_read_only_layer(c):
    folder = c.mount_tmpfs("layers", 4096)
    layer = Path(shutil.copy(c.layer, folder / "layer.gpkg"))
    content = layer.read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    return ["search", str(layer), "road", "--model", str(c.checkpoint)], Bad(layer, ("cannot be written",),
                                                                             {layer: content})


def search_a_tampered_embedding(c):
    from osgeo import ogr

    layer = c.layer_copy()
    ds = ogr.Open(str(layer), 1)
    lyr = ds.GetLayerByName("changes")
    feature = lyr.GetNextFeature()
    feature.SetFieldBinaryFromHexString("embedding", "010203")
    assert lyr.SetFeature(feature) == 0
    ds = None
    return ["search", str(layer), "road", "--model", str(c.checkpoint)], Bad(layer, ("has 3 bytes",))


def info_with_metadata_that_is_not_json(c):
    layer = c.layer_copy()
    write_metadata(layer, {})  # keeps every item; then one is replaced by raw text below
    items = dict(read_metadata_items(layer))
    items["embedding_dim"] = "{not json"
    import pyarrow as pa
    import pyogrio

    pyogrio.write_arrow(pa.schema([]).empty_table(), str(layer), layer="changes", driver="GPKG", append=True,
                        layer_metadata=items)
    return ["info", str(layer)], Bad(layer, ("embedding_dim",))


def search_json_with_a_missing_embedding(c):
    """A tile whose embedding was emptied: no score, and the JSON stays strict (null, not NaN)."""
    from layer_edits import set_null

    layer = c.layer_copy()
    set_null(layer, "embedding")

    def check(stdout):
        def no_constants(name):
            raise AssertionError(f"{name} in the JSON")
        result = json.loads(stdout, parse_constant=no_constants)
        assert result["features"] == 4 and result["scored"] == 3
    return ["search", str(layer), "road", "--json", "--top", "4", "--model", str(c.checkpoint)], Good(check)


def serve_200000_texts(c):
    """Refused by a bound, before any work (the line is over 1 MiB; 300 short texts are over 256)."""
    c.stdin = "".join(json.dumps(r) + "\n" for r in (
        {"id": 1, "op": "embed_text", "texts": ["a road"] * 200_000},
        {"id": 2, "op": "embed_text", "texts": ["a"] * 300}, {"id": 3, "op": "ping"}))

    def check(stdout):
        first, second, third = (json.loads(x) for x in stdout.splitlines())
        assert not first["ok"] and "1 MiB" in first["error"]
        assert not second["ok"] and "256" in second["error"] and third["ok"]
    return ["serve", "--model", str(c.checkpoint), "--device", "cpu"], Good(check)


def serve_malformed_then_good(c):
    """Bad requests get ok:false answers; the next good one is answered."""
    lines = ["not json", "[1, 2]", json.dumps({"id": 3, "op": "embed_text", "texts": "a road"}),
             json.dumps({"id": 4, "op": "embed_text", "texts": [1, 2]}), json.dumps({"id": 5, "op": "rm -rf"}),
             json.dumps({"id": 6, "op": "embed_text", "texts": ["a road"]})]
    c.stdin = "\n".join(lines) + "\n"

    def check(stdout):
        answers = [json.loads(x) for x in stdout.splitlines()]
        assert [a["ok"] for a in answers] == [False] * 5 + [True]
        assert answers[-1]["id"] == 6 and len(answers[-1]["embeddings"]) == 1
    return ["serve", "--model", str(c.checkpoint), "--device", "cpu"], Good(check)


CASES = [corrupt_bytes, truncated_geotiff, empty_file, text_file, folder_as_input, one_pixel, one_by_100000,
         nan_and_inf_floats, all_nan, all_nodata, two_bands, bands_zero, bands_beyond, bands_words,
         rotated_geotransform, geographic_crs, identical_inputs, output_is_an_input,
         input_named_like_the_partial_file, foreign_output_file, foreign_partial_file, output_is_a_folder,
         output_is_a_fifo, output_is_a_device, output_folder_missing, output_folder_read_only, disk_full_at_creation, disk_full_while_writing,
         batch_too_big_for_the_tiles,
         *[tile_size(v) for v in ("0", "16", "1000000000", "abc")],
         overlap_negative, overlap_equal_to_the_tile, batch_size_zero, batch_size_huge, max_nodata_nan,
         target_resolution_tiny, resume_twice, long_query, longest_query, sql_looking_query, non_ascii_queries,
         checkpoint_that_runs_code, config_null, config_backbone_list, config_giant_d_model, nan_weights,
         search_sql_field, search_when_without_clip, search_a_raster,
         info_a_text_file, serve_malformed_then_good, resume_if_possible_on_a_foreign_partial, legacy_checkpoint,
         search_a_read_only_layer, search_a_tampered_embedding, info_with_metadata_that_is_not_json,
         search_json_with_a_missing_embedding, serve_200000_texts]
IDS = [case.__name__ for case in CASES]


@pytest.fixture(scope="module")
def shared(tmp_path_factory, small_checkpoint):
    d = tmp_path_factory.mktemp("hostile-shared")
    pair = (write_raster(d / "b.tif", uint8_scene((128, 128), 11)), write_raster(d / "a.tif", uint8_scene((128, 128), 12)))
    layer = d / "layer.gpkg"
    assert main(["caption", *pair, "-o", str(layer), "--model", str(small_checkpoint), "--tile-size", str(TILE),
                 "--device", "cpu", "--progress", "json"]) == 0
    return pair, small_checkpoint, layer


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 30 and len(IDS) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_hostile_input(case, shared, tmp_path, capsys, monkeypatch):
    pair, checkpoint, layer = shared
    ctx = Ctx(tmp_path, pair, checkpoint, layer)
    ctx.mounts, ctx.stdin = [], None
    try:
        argv, expect = case(ctx, monkeypatch) if "monkeypatch" in case.__code__.co_varnames else case(ctx)
        if ctx.stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(ctx.stdin))
        code = main(argv)
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        if isinstance(expect, Bad):
            errors = [line for line in err.splitlines() if line.startswith("rsicrc: error:")]
            assert code == 2, err
            assert len(errors) == 1, err
            assert str(expect.names) in errors[0], errors[0]
            for words in expect.words:
                assert words in errors[0], errors[0]
            for path, content in expect.untouched.items():
                assert Path(path).read_bytes() == content, f"{path} was changed"
            if argv[0] == "caption" and not getattr(expect, "keeps_partial", False):
                output = Path(argv[argv.index("-o") + 1])
                made = [p for p in (output, Path(partial_path(output))) if p.exists() and p not in expect.untouched
                        and p.is_file() and not Path(p).samefile(argv[1])]
                assert not made, f"left behind: {made}"
            if hasattr(expect, "after"):
                expect.after()
        else:
            assert code == 0, err
            if expect.check is not None:
                expect.check(out)
    finally:
        for point in ctx.mounts:
            subprocess.run(["umount", str(point)], check=False)
