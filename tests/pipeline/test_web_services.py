"""The GDAL descriptions of web layers (pipeline/raster/web_services.py) as GDAL opens them: the
zoom level for the model's pixel, a WMS layer's grid, the WMTS connection string, the cached file."""
import os

import pytest
import rasterio

from rsicrc.pipeline.raster import web_services as ws


@pytest.mark.parametrize("target, zmax, level", [(None, 19, 18), (0.5, 19, 18), (0.25, 19, 19), (0.25, 18, 18), (0.3, 19, 18),
                                                 (2.0, 19, 16), (1e6, 19, 0)])
def test_the_zoom_is_the_finest_not_finer_than_the_pixel(target, zmax, level):
    assert ws.xyz_zoom(target, 0, zmax) == level
    pixel = 2 * ws.WORLD / 256 / 2 ** level
    assert pixel >= (target or 0.5) or level == zmax or level == 0


def test_xyz_and_wms_descriptions_open_as_gdal_describes_them(tmp_path):
    xyz = ws.description_file(ws.xyz_description("https://tiles.example.org/a/{z}/{x}/{-y}.png?key={usr}", 18),
                              tmp_path)
    with rasterio.open(xyz) as src:
        assert src.driver == "WMS" and src.count == 4 and src.width == 256 * 2 ** 18 and src.crs.to_epsg() == 3857
    text = open(xyz).read()
    assert "${y}" in text and "<YOrigin>bottom</YOrigin>" in text and "{usr}" not in text and "<Cache/>" in text
    wms = ws.description_file(ws.wms_description("https://wms.example.org/ows?map=x&amp", "ortho,roads", "",
                                                 "EPSG:32632", "image/jpeg", (500000, 4999000, 501000, 5000000),
                                                 0.5), tmp_path)
    with rasterio.open(wms) as src:
        assert (src.width, src.height) == (2000, 2000) and src.crs.to_epsg() == 32632 and src.res == (0.5, 0.5)
    assert ws.description_file(open(wms).read(), tmp_path) == wms  # the same text: the same file, untouched
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(xyz), os.path.basename(wms)])


def test_what_gdal_cannot_carry_is_refused_in_words():
    with pytest.raises(ws.WebSourceError, match="quadkey"):
        ws.xyz_description("https://t.example.org/{q}.png", 18)
    with pytest.raises(ws.WebSourceError, match=r"\{z\}, \{x\} and \{y\}"):
        ws.xyz_description("https://t.example.org/tile.png", 18)
    with pytest.raises(ws.WebSourceError, match="comma"):
        ws.wmts_connection("https://w.example.org/caps.xml", "a,b", "GoogleMapsCompatible")
    assert ws.wmts_connection("https://w.example.org/caps.xml", "ortho", "GoogleMapsCompatible", "default") == \
        "WMTS:https://w.example.org/caps.xml,layer=ortho,tilematrixset=GoogleMapsCompatible,style=default"
