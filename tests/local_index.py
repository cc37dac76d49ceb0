"""A package index on 127.0.0.1 made in the test, and wheels to fill it: the set-up's network parts
(tests/pipeline/test_environment_setup.py, the QGIS set-up task) are tested against it, never the internet."""
import base64
import hashlib
import http.server
import shutil
import socketserver
import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path


def write_wheel(folder, dist, version, files, tag="py3-none-any", data_scripts=None):
    """A wheel of `files` ({path in the wheel: text or bytes}); data_scripts: {name: bytes} under
    <dist>-<version>.data/scripts/ (how uv's binary is shipped)."""
    name = dist.replace("-", "_")
    info = f"{name}-{version}.dist-info"
    members = {path: (body.encode() if isinstance(body, str) else body) for path, body in files.items()}
    for script, body in (data_scripts or {}).items():
        members[f"{name}-{version}.data/scripts/{script}"] = body
    members[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode()
    members[f"{info}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: rsicrc-tests\nRoot-Is-Purelib: true\n"
                                f"Tag: {tag}\n").encode()
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b'=').decode()},"
              f"{len(body)}" for path, body in members.items()]
    members[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    path = Path(folder) / f"{name}-{version}-{tag}.whl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        for member, body in members.items():
            info_ = zipfile.ZipInfo(member)
            info_.external_attr = (0o755 if "/scripts/" in member else 0o644) << 16
            wheel.writestr(info_, body)
    return path


def simple_index(root, wheels):
    """A PEP 503 index in `root`: {project: [wheel paths]} copied into root/<project>/ with an
    index.html whose links carry each file's sha256."""
    for project, paths in wheels.items():
        folder = Path(root) / project
        folder.mkdir(parents=True, exist_ok=True)
        links = []
        for wheel in paths:
            shutil.copy(wheel, folder / Path(wheel).name)
            digest = hashlib.sha256(Path(wheel).read_bytes()).hexdigest()
            links.append(f'<a href="{Path(wheel).name}#sha256={digest}">{Path(wheel).name}</a><br/>')
        (folder / "index.html").write_text("<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>")
    return Path(root)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Server:
    """An HTTP server on 127.0.0.1 (a free port) in a thread; `url` is its root. Counts requests."""

    def __init__(self, handler):
        self.requests = []
        server = self

        class Counting(handler):
            def send_response(self, code, message=None):
                server.requests.append((self.command, self.path, code))
                super().send_response(code, message)

        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Counting)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def index_server(root):
    class Handler(_Quiet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)
    return Server(Handler)


def proxy_server():
    """A forwarding HTTP proxy (plain http:// URLs), which counts what passes through it."""
    class Proxy(_Quiet):
        def do_GET(self):
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(self.path, timeout=30) as up:
                    body, code, headers = up.read(), up.status, up.headers
            except urllib.error.HTTPError as exc:
                body, code, headers = exc.read(), exc.code, exc.headers
            self.send_response(code)
            for key in ("Content-Type",):
                if headers.get(key):
                    self.send_header(key, headers[key])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    return Server(Proxy)


def fake_torch(version, works_on=("cpu",)):
    """`torch` as the set-up's verification uses it (ones, +, sum, item), computing only on the
    devices in `works_on` (a CUDA build on a machine whose driver it cannot use fails there)."""
    return {"torch/__init__.py": f'''__version__ = {version!r}


class _Tensor:
    def __init__(self, values):
        self.values = values

    def __add__(self, other):
        return _Tensor([a + b for a, b in zip(self.values, other.values)])

    def sum(self):
        return _Tensor([sum(self.values)])

    def item(self):
        return self.values[0]


def ones(n, device="cpu"):
    if device not in {tuple(works_on)!r}:
        raise RuntimeError("Found no NVIDIA driver on your system")
    return _Tensor([1.0] * n)
'''}


def uv_wheel_of(binary, folder, version):
    """A uv wheel holding this machine's real uv binary, named as PyPI names the Linux one."""
    return write_wheel(folder, "uv", version, {"uv/__init__.py": ""}, tag="py3-none-manylinux_2_17_x86_64",
                       data_scripts={"uv": Path(binary).read_bytes()})


def read(url):
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - a loopback test server
        return answer.read()


PINS = ["torch==2.14.1", "torchvision==0.29.1", "rsicrc-fake-dep==1.0"]


def package_index(folder, uv_wheel):
    """A PyPI stand-in (uv, a CUDA torch that cannot reach a GPU here, torchvision, one pinned
    dependency) and a pytorch.org stand-in (the cpu builds) in `folder`/simple and `folder`/torch,
    and a pyproject.toml pinning them (what the set-up reads); returns (root, pyproject)."""
    folder = Path(folder)
    wheels = folder / "wheels"
    pypi = {"uv": [uv_wheel],
            "torch": [write_wheel(wheels / "cuda", "torch", "2.14.1", fake_torch("2.14.1", works_on=("cpu",)))],
            "torchvision": [write_wheel(wheels / "cuda", "torchvision", "0.29.1", {"torchvision/__init__.py": ""})],
            "rsicrc-fake-dep": [write_wheel(wheels, "rsicrc-fake-dep", "1.0", {"rsicrc_fake_dep.py": "X = 1\n"})]}
    cpu = {"torch": [write_wheel(wheels / "cpu", "torch", "2.14.1+cpu", fake_torch("2.14.1+cpu"))],
           "torchvision": [write_wheel(wheels / "cpu", "torchvision", "0.29.1+cpu", {"torchvision/__init__.py": ""})]}
    root = folder / "index"
    simple_index(root / "simple", pypi)
    simple_index(root / "torch" / "cpu", cpu)
    pyproject = folder / "pyproject.toml"
    pyproject.write_text('[project]\nname = "rsicrc-worker-test"\nversion = "0"\nrequires-python = ">=3.11"\n'
                         f"dependencies = {PINS!r}\n".replace("'", '"'))
    return root, pyproject


def real_uv_wheel(folder):
    """The uv wheel of this venv's uv binary (the test extra), checked to be uv_tool's release."""
    import subprocess
    import sys

    from rsicrc.pipeline.environment.uv_tool import UV_VERSION

    binary = shutil.which("uv", path=str(Path(sys.executable).parent))
    assert binary, "uv is in the test extras (make setup installs it)"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.split()[1]
    assert version == UV_VERSION, "the test extra's uv and uv_tool.UV_VERSION must be the same release"
    return uv_wheel_of(binary, folder, UV_VERSION)
