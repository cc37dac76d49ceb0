"""A web imagery server on 127.0.0.1 for the tests: XYZ tiles that gdal2tiles makes of a raster,
and files with HTTP range requests (a COG read by /vsicurl/). It counts what it is asked, and can
be told to fail: answer 500 after some requests."""
import base64
import http.server
import os
import re
import subprocess
from pathlib import Path

from local_index import Server

from rsicrc.pipeline.raster.web_services import xyz_description


def make_xyz(raster, folder, zoom):
    """gdal2tiles --xyz of `raster` at `zoom` into `folder` (PNG tiles with alpha)."""
    Path(folder).mkdir(parents=True, exist_ok=True)  # GDAL 3.11's gdal2tiles makes only the last level
    subprocess.run(["gdal2tiles.py", "--xyz", "-z", str(zoom), "-w", "none", "-r", "near", "--processes", "1",
                    "-q", str(raster), str(folder)], check=True, timeout=300,
                   env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return folder


def tms_description(url, zoom, cache=None):
    """The pipeline's XYZ description of `url`/{z}/{x}/{y}.png at `zoom`, its tile cache in the
    folder `cache` (None: no cache, so that every read reaches the server)."""
    text = xyz_description(f"{url}/{{z}}/{{x}}/{{y}}.png", zoom)
    return text.replace("<Cache/>", f"<Cache><Path>{cache}</Path></Cache>" if cache else "")


def wmts_capabilities(url, layers, zoom):
    """A WMTS 1.0.0 capabilities document: each of `layers` the XYZ tree at `url`/NAME, one tile
    matrix (GoogleMapsCompatible level `zoom`)."""
    side = 2 ** zoom
    layer_xml = "".join(
        f"<Layer><ows:Title>{name}</ows:Title><ows:Identifier>{name}</ows:Identifier>"
        "<Style isDefault=\"true\"><ows:Identifier>default</ows:Identifier></Style><Format>image/png</Format>"
        "<TileMatrixSetLink><TileMatrixSet>g</TileMatrixSet></TileMatrixSetLink>"
        f"<ResourceURL format=\"image/png\" resourceType=\"tile\" "
        f"template=\"{url}/{name}/{{TileMatrix}}/{{TileCol}}/{{TileRow}}.png\"/></Layer>" for name in layers)
    return ("<?xml version=\"1.0\"?><Capabilities xmlns=\"http://www.opengis.net/wmts/1.0\" "
            "xmlns:ows=\"http://www.opengis.net/ows/1.1\" version=\"1.0.0\"><Contents>" + layer_xml +
            "<TileMatrixSet><ows:Identifier>g</ows:Identifier><ows:SupportedCRS>urn:ogc:def:crs:EPSG::3857"
            f"</ows:SupportedCRS><TileMatrix><ows:Identifier>{zoom}</ows:Identifier>"
            f"<ScaleDenominator>{559082264.0287178 / side!r}</ScaleDenominator>"
            "<TopLeftCorner>-20037508.3427892 20037508.3427892</TopLeftCorner><TileWidth>256</TileWidth>"
            f"<TileHeight>256</TileHeight><MatrixWidth>{side}</MatrixWidth><MatrixHeight>{side}</MatrixHeight>"
            "</TileMatrix></TileMatrixSet></Contents></Capabilities>")


class TileServer(Server):
    """Serves `root` on 127.0.0.1 in a thread; `requests` lists what was answered (method, path,
    status), `served` the bytes sent of each path, `fail_after` makes every request after that
    many answer 500, `login` asks for a Basic login."""

    def __init__(self, root):
        self.root, self.fail_after, self.served = Path(root), None, {}
        self.login = None  # "user:password": every request without that Basic login gets 401
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(head=True)

            def do_GET(self):
                self.answer(head=False)

            def answer(self, head):
                expected = server.login and "Basic " + base64.b64encode(server.login.encode()).decode()
                if expected and self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="tiles"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.fail_after is not None and len(server.requests) >= server.fail_after:
                    self.send_error(500)
                    return
                path = (server.root / self.path.split("?", 1)[0].lstrip("/")).resolve()
                if server.root.resolve() not in path.parents or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start, stop, status = 0, len(data), 200
                ranged = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
                if ranged:
                    start = int(ranged.group(1))
                    stop = min(len(data), int(ranged.group(2)) + 1 if ranged.group(2) else len(data))
                    status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(stop - start))
                self.send_header("Accept-Ranges", "bytes")
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
                self.end_headers()
                if not head:
                    self.wfile.write(data[start:stop])
                    server.served[self.path] = server.served.get(self.path, 0) + stop - start

        super().__init__(Handler)
