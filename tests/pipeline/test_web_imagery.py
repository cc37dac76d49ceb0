"""Web imagery without the internet: XYZ tiles of a generated pair (gdal2tiles) and COGs served on
127.0.0.1, captioned through `<GDAL_WMS>` TMS descriptions and /vsicurl/ with an area; a web
service without an area, a cache that spares a second run the downloads, a server that dies mid-run
and the resume after it, each through the CLI as a user runs it."""
import os
import subprocess
import sys

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from pipeline_test_rasters import ORIGIN, uint8_scene, write_raster
from pyproj import Transformer
from tile_server import TileServer, make_xyz, tms_description, wmts_capabilities

ZOOM = 18
TILE = 128
# 100 m x 80 m inside the 192 m pair, in the pair's own CRS
EXTENT = (ORIGIN[0] + 40, ORIGIN[1] - 120, ORIGIN[0] + 140, ORIGIN[1] - 40)
EXTENT_ARG = ",".join(map(repr, EXTENT)) + ",EPSG:32632"
TO_WEB = Transformer.from_crs("EPSG:32632", "EPSG:3857", always_xy=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder of before/ and after/ XYZ trees and before.tif/after.tif COGs."""
    root = tmp_path_factory.mktemp("web")
    for name, seed in (("before", 21), ("after", 22)):
        tif = write_raster(root / f"{name}-src.tif", uint8_scene((384, 384), seed))
        make_xyz(tif, root / name, ZOOM)
        with rasterio.open(tif) as src:
            profile = {**src.profile, "driver": "COG"}
            profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
            with rasterio.open(root / f"{name}.tif", "w", **profile, blocksize=128) as dst:
                dst.write(src.read())
    return root


def run_cli(args, timeout=240):
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", "GDAL_HTTP_MAX_RETRY": "1",
           "GDAL_HTTP_RETRY_DELAY": "0.1", "GDAL_HTTP_TIMEOUT": "10"}
    return subprocess.run([sys.executable, "-m", "rsicrc", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def descriptions(tmp_path, url, cache=None):
    paths = []
    for name in ("before", "after"):
        path = tmp_path / f"{name}.xml"
        path.write_text(tms_description(f"{url}/{name}", ZOOM, cache and str(cache)))
        paths.append(path)
    return paths


def caption_args(before, after, out, model, *more):
    return ["caption", before, after, "-o", out, "--model", model, "--tile-size", TILE, "--batch-size", 4, *more]


def layer(path):
    meta, _, geoms, fields = pyogrio.raw.read(str(path), layer="changes")
    return dict(zip(meta["fields"], fields)), shapely.from_wkb(geoms)


def web_extent():
    box = shapely.segmentize(shapely.box(*EXTENT), 1.0)
    return shapely.transform(box, lambda xy: np.column_stack(TO_WEB.transform(*xy.T)))


def test_tms_descriptions_with_an_extent_caption_its_tiles(served, small_checkpoint, tmp_path):
    with TileServer(served) as server:
        before, after = descriptions(tmp_path, server.url)
        run = run_cli(caption_args(before, after, tmp_path / "web.gpkg", small_checkpoint, "--extent", EXTENT_ARG,
                                   "--bands", "1,2,3"))
        assert run.returncode == 0, run.stderr
        asked = len(server.requests)
    table, geoms = layer(tmp_path / "web.gpkg")
    area = web_extent()
    assert 4 <= len(geoms) <= 20
    assert all(g.intersection(area).area > 0 for g in geoms)  # each tile touches the extent
    assert shapely.union_all(geoms).covers(area.buffer(-0.01))  # together they cover it
    assert np.allclose(table["area_fraction"], [g.intersection(area).area / g.area for g in geoms], atol=1e-3)
    assert all(c for c in table["caption"])
    assert 0 < asked < 40  # the extent's XYZ tiles, never the world's

    without = run_cli(caption_args(before, after, tmp_path / "all.gpkg", small_checkpoint, "--bands", "1,2,3"))
    lines = without.stderr.strip().splitlines()
    assert without.returncode == 2 and len(lines) == 1 and "is a web service" in lines[0] and "--extent" in lines[0]
    assert not os.path.exists(tmp_path / "all.gpkg") and not os.path.exists(tmp_path / "all.gpkg.partial")


def test_the_tile_cache_spares_a_second_run_the_downloads(served, small_checkpoint, tmp_path):
    with TileServer(served) as server:
        before, after = descriptions(tmp_path, server.url, cache=tmp_path / "cache")
        first = run_cli(caption_args(before, after, tmp_path / "one.gpkg", small_checkpoint, "--extent", EXTENT_ARG))
        assert first.returncode == 0, first.stderr
        fetched = len(server.requests)
        second = run_cli(caption_args(before, after, tmp_path / "two.gpkg", small_checkpoint, "--extent", EXTENT_ARG))
        assert second.returncode == 0, second.stderr
    assert fetched > 0 and len(server.requests) == fetched  # not one request more
    assert list(layer(tmp_path / "one.gpkg")[0]["caption"]) == list(layer(tmp_path / "two.gpkg")[0]["caption"])


def test_a_server_dying_mid_run_names_the_host_and_the_run_resumes(served, small_checkpoint, tmp_path):
    out = tmp_path / "dead.gpkg"
    with TileServer(served) as server:
        before, after = descriptions(tmp_path, server.url)
        server.fail_after = 3
        dead = run_cli(caption_args(before, after, out, small_checkpoint, "--extent", EXTENT_ARG, "--batch-size", 1))
        lines = dead.stderr.strip().splitlines()
        assert dead.returncode == 2 and len(lines) == 1, dead.stderr
        assert f"server {server.url.split('//')[1]} failed" in lines[0] and "--resume" in lines[0]
        assert os.path.exists(f"{out}.partial") and not os.path.exists(out)
        server.fail_after = None
        resumed = run_cli(caption_args(before, after, out, small_checkpoint, "--extent", EXTENT_ARG, "--batch-size", 1,
                                       "--resume"))
        assert resumed.returncode == 0, resumed.stderr
        fresh = run_cli(caption_args(before, after, tmp_path / "fresh.gpkg", small_checkpoint, "--extent", EXTENT_ARG))
        assert fresh.returncode == 0, fresh.stderr
    done, whole = layer(out)[0], layer(tmp_path / "fresh.gpkg")[0]
    assert sorted(done["tile_id"]) == sorted(whole["tile_id"])
    order, fresh_order = np.argsort(done["tile_id"]), np.argsort(whole["tile_id"])
    assert list(done["caption"][order]) == list(whole["caption"][fresh_order])


def test_cogs_through_vsicurl_are_read_by_ranges(served, small_checkpoint, tmp_path):
    with TileServer(served) as server:
        urls = [f"/vsicurl/{server.url}/{name}.tif" for name in ("before", "after")]
        run = run_cli(caption_args(*urls, tmp_path / "cog.gpkg", small_checkpoint, "--extent",
                                   ",".join(map(repr, EXTENT))))
        assert run.returncode == 0, run.stderr
    table, geoms = layer(tmp_path / "cog.gpkg")
    expected = shapely.box(*EXTENT)
    assert len(geoms) == 6 and shapely.union_all(geoms).covers(expected)  # 64 m tiles: 3 columns, 2 rows
    assert set(table["before_name"]) == {"before.tif"}
    # Read by ranges: less than the whole file came over the wire.
    assert 0 < server.served.get("/before.tif", 0) < os.path.getsize(served / "before.tif")


def test_a_click_on_web_layers_needs_no_area(served, captioner, tmp_path):
    """The map tool's point caption reads one window: a web service's plan is no problem there."""
    import io
    import json

    from rsicrc.pipeline.serve import ServeHandler, serve

    worker = ServeHandler(captioner.source, None, device="cpu")
    worker._models[("rsicrc", captioner.source)] = captioner
    x, y = (EXTENT[0] + EXTENT[2]) / 2, (EXTENT[1] + EXTENT[3]) / 2
    with TileServer(served) as server:
        before, after = descriptions(tmp_path, server.url)
        request = {"id": 1, "op": "caption_at", "before": str(before), "after": str(after), "x": x, "y": y,
                   "crs": "EPSG:32632", "tile_size": TILE}
        out = io.StringIO()
        try:
            assert serve(worker, stdin=io.StringIO(json.dumps(request) + "\n"), stdout=out) == 0
        finally:
            worker._points.close()
    (answer,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert answer["ok"], answer
    assert answer["caption"] and answer["window"]["size"] == TILE
    left, bottom, right, top = answer["bounds"]
    cx, cy = TO_WEB.transform(x, y)
    assert left <= cx <= right and bottom <= cy <= top  # the window holds the click


def test_missing_tiles_are_nodata_counted_and_reported(served, small_checkpoint, tmp_path):
    """West of the pair the server has no tiles (404): those map tiles are nodata, skipped and counted."""
    from rsicrc.pipeline.layer.gpkg import read_metadata

    half_outside = f"{ORIGIN[0] - 150!r},{ORIGIN[1] - 120!r},{ORIGIN[0] + 100!r},{ORIGIN[1] - 40!r},EPSG:32632"
    with TileServer(served) as server:
        before, after = descriptions(tmp_path, server.url)
        run = run_cli(caption_args(before, after, tmp_path / "edge.gpkg", small_checkpoint, "--extent", half_outside))
        assert run.returncode == 0, run.stderr
        missing = [code for _, _, code in server.requests if code == 404]
    meta = read_metadata(tmp_path / "edge.gpkg")
    assert missing and meta["skipped_count"] > 0 and meta["features"] > 0
    assert all(t["nodata_fraction"] > 0.5 for t in meta["skipped_tiles"])
    assert meta["area"]["tiles"] == meta["features"] + meta["skipped_count"]


def test_wmts_connection_strings_with_an_extent(served, small_checkpoint, tmp_path):
    from rsicrc.pipeline.raster.web_services import wmts_connection

    with TileServer(served) as server:
        (served / "wmts.xml").write_text(wmts_capabilities(server.url, ("before", "after"), ZOOM))
        dates = [wmts_connection(f"{server.url}/wmts.xml", name, "g") for name in ("before", "after")]
        run = run_cli(caption_args(*dates, tmp_path / "wmts.gpkg", small_checkpoint, "--extent", EXTENT_ARG))
        assert run.returncode == 0, run.stderr
        tiles = [path for _, path, code in server.requests if code == 200 and path.endswith(".png")]
    table, geoms = layer(tmp_path / "wmts.gpkg")
    assert 4 <= len(geoms) <= 20 and tiles
    assert shapely.union_all(geoms).covers(web_extent().buffer(-0.01))
    assert set(table["before_name"]) == {"wmts.xml,layer=before,tilematrixset=g"}
