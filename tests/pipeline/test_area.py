"""--extent and --area: only the tiles touching the area are planned, read and captioned, each
feature keeps its whole square and says how much of it is inside; the area is in the metadata and
the fingerprint; caption-batch takes an area per pair. Areas given in another CRS (EPSG:4326) are
reprojected here independently of the code (pyproj) to find the tiles that must be there."""
import json
import os
import subprocess
import sys

import numpy as np
import pyogrio.raw
import pytest
import shapely
from pipeline_test_rasters import ORIGIN, uint8_scene, write_raster
from pyproj import Transformer

from rsicrc.pipeline.caption.batch import run_caption_batch
from rsicrc.pipeline.caption.resume import run_fingerprint
from rsicrc.pipeline.caption.run import CaptionParams, run_caption
from rsicrc.pipeline.caption.steps import open_pair, plan_tiles
from rsicrc.pipeline.errors import BadInput
from rsicrc.pipeline.layer.gpkg import read_metadata
from rsicrc.pipeline.progress import Reporter

TILE = 64
SIZE = 384  # 6 x 6 tiles of 64 px at 0.5 m: 192 m a side
TO_UTM = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
TO_WGS = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)


class Collect(Reporter):
    def __init__(self):
        self.starts = []

    def start(self, total, output):
        self.starts.append(total)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("area-pair")
    return (write_raster(d / "before.tif", uint8_scene((SIZE, SIZE), 11)),
            write_raster(d / "after.tif", uint8_scene((SIZE, SIZE), 12)))


def tile_boxes():
    """{(row, col) pixel offsets: shapely box in EPSG:32632} of the whole 6 x 6 grid."""
    n = SIZE // TILE
    out = {}
    for i in range(n):
        for j in range(n):
            left, top = ORIGIN[0] + j * TILE * 0.5, ORIGIN[1] - i * TILE * 0.5
            out[(i * TILE, j * TILE)] = shapely.box(left, top - TILE * 0.5, left + TILE * 0.5, top)
    return out


def wgs84(geometry):
    """A UTM geometry in EPSG:4326, densified so that its edges stay where they were."""
    return shapely.transform(shapely.segmentize(geometry, 1.0), lambda xy: np.column_stack(TO_WGS.transform(*xy.T)))


def utm(geometry):
    return shapely.transform(geometry, lambda xy: np.column_stack(TO_UTM.transform(*xy.T)))


def read_layer(path):
    meta, _, geoms, fields = pyogrio.raw.read(str(path), layer="changes")
    return dict(zip(meta["fields"], fields)), shapely.from_wkb(geoms)


def caption(pair, out, captioner, **options):
    p = CaptionParams(*pair, str(out), model=captioner.source, tile_size=TILE, batch_size=8, **options)
    reporter = Collect()
    summary = run_caption(p, reporter, captioner=captioner)
    return summary, reporter


def check_cover(out, area_utm, summary):
    """The layer holds exactly the tiles whose squares reach inside the area, whole, with the
    fraction of each that is inside; together they cover the area. Tile ids count the tiles of the
    area's part of the overlap; row and col are pixel offsets on BEFORE's grid."""
    table, geoms = read_layer(out)
    boxes = tile_boxes()
    expected = {t for t, box in boxes.items() if box.intersection(area_utm).area > 1e-6}
    held = list(zip(table["row"].tolist(), table["col"].tolist()))
    assert set(held) == expected and len(held) == len(expected)
    assert summary.total == len(expected)
    for key, geom, fraction in zip(held, geoms, table["area_fraction"]):
        box = boxes[key]
        assert shapely.equals_exact(geom.normalize(), box.normalize(), tolerance=1e-6)
        assert fraction == pytest.approx(box.intersection(area_utm).area / box.area, abs=2e-3)
    assert shapely.union_all(geoms).buffer(1e-6).covers(area_utm.buffer(-0.05))
    return table


def test_extent_in_another_crs_captions_only_its_tiles(pair, captioner, tmp_path):
    # 50 m x 40 m in UTM, 30 m in from the corner: tiles of rows 0-2, columns 0-2 (32 m a tile)
    rect = shapely.box(ORIGIN[0] + 30, ORIGIN[1] - 70, ORIGIN[0] + 80, ORIGIN[1] - 30)
    lon0, lat0, lon1, lat1 = wgs84(rect).bounds
    extent = f"{lon0!r},{lat0!r},{lon1!r},{lat1!r},EPSG:4326"
    summary, reporter = caption(pair, tmp_path / "extent.gpkg", captioner, extent=extent)
    area = utm(shapely.box(lon0, lat0, lon1, lat1))
    table = check_cover(tmp_path / "extent.gpkg", shapely.segmentize(area, 1.0), summary)
    assert 4 <= len(table["tile_id"]) < 36 and reporter.starts == [len(table["tile_id"])]
    meta = read_metadata(tmp_path / "extent.gpkg")
    assert meta["area"]["source"] == extent and meta["area"]["tiles"] == len(table["tile_id"])
    assert shapely.from_wkt(meta["area"]["wkt"]).equals(shapely.box(lon0, lat0, lon1, lat1))
    assert "4326" in meta["area"]["crs"]


def test_area_polygons_skip_the_tiles_between_them(pair, captioner, tmp_path):
    # Two parcels at opposite corners: the tiles between them are never captioned.
    parcels = [shapely.box(ORIGIN[0] + 5, ORIGIN[1] - 20, ORIGIN[0] + 40, ORIGIN[1] - 5),
               shapely.Polygon([(ORIGIN[0] + 150, ORIGIN[1] - 185), (ORIGIN[0] + 185, ORIGIN[1] - 185),
                                (ORIGIN[0] + 185, ORIGIN[1] - 150)])]
    path = tmp_path / "parcels.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": name}, "geometry": shapely.geometry.mapping(wgs84(g))}
        for name, g in zip(("north", "south"), parcels)]}))
    summary, _ = caption(pair, tmp_path / "area.gpkg", captioner, area=str(path))
    area = shapely.union_all([utm(wgs84(g)) for g in parcels])
    table = check_cover(tmp_path / "area.gpkg", area, summary)
    assert len(table["tile_id"]) <= 8  # of 36

    summary, _ = caption(pair, tmp_path / "south.gpkg", captioner, area=str(path), area_where="name = 'south'")
    check_cover(tmp_path / "south.gpkg", utm(wgs84(parcels[1])), summary)


def test_the_area_is_part_of_the_job(pair, captioner):
    base = dict(model=captioner.source, tile_size=TILE)
    one = CaptionParams(*pair, "x.gpkg", extent=f"{ORIGIN[0]},{ORIGIN[1] - 50},{ORIGIN[0] + 50},{ORIGIN[1]}", **base)
    other = CaptionParams(*pair, "x.gpkg", extent=f"{ORIGIN[0]},{ORIGIN[1] - 90},{ORIGIN[0] + 50},{ORIGIN[1]}",
                          **base)
    whole = CaptionParams(*pair, "x.gpkg", **base)
    prints = [run_fingerprint(p, open_pair(p.check())) for p in (one, other, whole)]
    assert prints[0] != prints[1] and "area" not in prints[2]["grid"] and "area" in prints[0]["grid"]
    plan = open_pair(one)
    tiles = plan_tiles(one, plan)
    assert len(tiles) == 4 and [t.tile_id for t in tiles] == list(range(4))  # 2 x 2 tiles of 32 m


@pytest.mark.parametrize("options, says", [
    (["--extent", "700000,5200000,700100,5200100"], "lies outside the rasters' overlap"),
    (["--extent", "1,2,3"], "XMIN,YMIN,XMAX,YMAX"),
    (["--extent", "5,2,3,4"], "XMIN < XMAX"),
    (["--extent", "1,2,3,4,EPSG:999999"], "not a CRS"),
    (["--extent", "1,2,3,4", "--area", "x.geojson"], "give one of them"),
    (["--area-where", "a = 1"], "--area-where needs --area"),
])
def test_bad_areas_are_one_line(pair, small_checkpoint, tmp_path, options, says):
    run = subprocess.run([sys.executable, "-m", "rsicrc", "caption", *pair, "-o", str(tmp_path / "o.gpkg"),
                          "--model", str(small_checkpoint), "--tile-size", str(TILE), *options],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], run.stderr
    if "outside" in says:  # both bounds named
        assert "700000" in lines[0] and "600000" in lines[0]
    assert not os.path.exists(tmp_path / "o.gpkg") and not os.path.exists(tmp_path / "o.gpkg.partial")


def test_area_files_that_cannot_serve(pair, tmp_path, captioner):
    lines = tmp_path / "road.geojson"
    lines.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                                "geometry": {"type": "LineString", "coordinates": [[7.0, 45.0], [7.1, 45.1]]}}]}))
    for path, says in ((lines, "holds LineString; --area needs polygons"),
                       (tmp_path / "missing.gpkg", "cannot be read as a vector layer")):
        with pytest.raises(BadInput) as info:
            caption(pair, tmp_path / "o.gpkg", captioner, area=str(path))
        assert says in str(info.value) and str(path) in str(info.value)
    fifo = tmp_path / "fifo.geojson"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="FIFO"):
        caption(pair, tmp_path / "o.gpkg", captioner, area=str(fifo))


def test_caption_batch_takes_an_area_per_pair(pair, captioner, tmp_path):
    rect = shapely.box(ORIGIN[0] + 5, ORIGIN[1] - 30, ORIGIN[0] + 30, ORIGIN[1] - 5)  # inside one 32 m tile
    csv = tmp_path / "pairs.csv"
    csv.write_text("name,before,after,extent\n"
                   f'small,{pair[0]},{pair[1]},"{",".join(map(repr, rect.bounds))}"\n'
                   f"whole,{pair[0]},{pair[1]},\n")
    p = CaptionParams("", "", str(tmp_path / "batch.gpkg"), model=captioner.source, tile_size=TILE, batch_size=8)
    from rsicrc.pipeline.caption.steps import Models
    import rsicrc.pipeline.caption.batch as batch

    original = batch.load_models
    batch.load_models = lambda *a, **k: Models(captioner)
    try:
        summary = run_caption_batch(str(csv), p, Reporter())
    finally:
        batch.load_models = original
    table, _ = read_layer(tmp_path / "batch.gpkg")
    small = table["pair"] == "small"
    assert small.sum() == 1 and (~small).sum() == 36 and summary.total == 37
    assert table["area_fraction"][small][0] == pytest.approx(rect.area / (32 * 32))
    assert all(v is None or np.isnan(v) for v in table["area_fraction"][~small])
    meta = read_metadata(tmp_path / "batch.gpkg")
    assert [("area" in entry) for entry in meta["pairs"]] == [True, False]
