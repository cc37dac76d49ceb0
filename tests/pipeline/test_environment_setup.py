"""The worker's environment set-up (pipeline/environment/): the PyTorch build chosen for the
machine, uv fetched once from the index, the venv made from a base Python without pip, the pins
installed, the build verified on its device and replaced by the CPU build when it does not run,
the proxy on every download, and `python -m rsicrc setup` with the standard library only. All
against a package index on 127.0.0.1 (tests/pipeline/local_index.py), never the internet."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from local_index import index_server, proxy_server, real_uv_wheel, simple_index
from local_index import package_index as make_package_index
from rsicrc.pipeline.environment import setup_run
from rsicrc.pipeline.environment.torch_build import TORCH_INDEX, NoTorchBuild, choose_torch_build
from rsicrc.pipeline.environment.uv_tool import UV_VERSION, UvUnavailable, find_uv, uv_path

REPO = Path(__file__).resolve().parents[2]
NO_GPU = {"smi": None, "proc": False, "gpus": [], "driver": None, "compute_caps": []}
TURING = {"smi": "nvidia-smi", "proc": True, "gpus": ["NVIDIA T4"], "driver": "580.65.06", "compute_caps": [[7, 5]]}
PASCAL = {**TURING, "gpus": ["NVIDIA GTX 1080"], "compute_caps": [[6, 1]]}
OLD_DRIVER = {**TURING, "driver": "535.104.05"}
ANCIENT_DRIVER = {**TURING, "driver": "470.82.01"}


@pytest.mark.parametrize("want, platform, machine, nvidia, build, index", [
    ("auto", "linux", "x86_64", NO_GPU, "cpu", TORCH_INDEX + "cpu"),  # no 3.3 GB of CUDA it cannot use
    ("auto", "linux", "x86_64", TURING, "cu130", None),  # PyPI's Linux wheel is the cu130 build
    ("auto", "win32", "AMD64", TURING, "cu130", TORCH_INDEX + "cu130"),  # PyPI's Windows wheel is CPU-only
    ("auto", "win32", "AMD64", PASCAL, "cu126", TORCH_INDEX + "cu126"),  # pre-Turing: cu126 still serves it
    ("auto", "linux", "x86_64", OLD_DRIVER, "cu126", TORCH_INDEX + "cu126"),  # driver 535: CUDA 12.6 runs
    ("auto", "linux", "x86_64", ANCIENT_DRIVER, "cpu", TORCH_INDEX + "cpu"),
    ("auto", "win32", "AMD64", NO_GPU, "cpu", TORCH_INDEX + "cpu"),
    ("cpu", "linux", "x86_64", TURING, "cpu", TORCH_INDEX + "cpu"),
    ("auto", "darwin", "arm64", NO_GPU, "pypi", None),
    ("pypi", "linux", "x86_64", NO_GPU, "pypi", None),  # where pytorch.org's index is out of reach
])
def test_the_torch_build_fits_the_machine(want, platform, machine, nvidia, build, index):
    chosen = choose_torch_build(want, platform, machine, nvidia)
    assert (chosen.name, chosen.index_url) == (build, index), chosen.why
    assert chosen.device == {"cpu": "cpu", "pypi": "mps" if platform == "darwin" else "cpu"}.get(build, "cuda")


@pytest.mark.parametrize("platform, nvidia, words", [
    ("linux", NO_GPU, "no NVIDIA GPU"), ("linux", ANCIENT_DRIVER, r"older than CUDA 12.6 needs \(525\)"),
    ("darwin", NO_GPU, "no CUDA on macOS")])
def test_cuda_that_cannot_be_had_says_why(platform, nvidia, words):
    with pytest.raises(NoTorchBuild, match=words):
        choose_torch_build("cuda", platform, "x86_64", nvidia)


@pytest.fixture
def uv_wheel(tmp_path_factory):
    return real_uv_wheel(tmp_path_factory.mktemp("uv-wheel"))


def test_uv_is_fetched_once_checked_and_kept(uv_wheel, tmp_path):
    root = simple_index(tmp_path / "simple", {"uv": [uv_wheel]})
    with index_server(tmp_path) as server:
        lines = []
        binary = find_uv(tmp_path / "data", f"{server.url}/simple", on_line=lines.append, machine="x86_64")
        assert binary == uv_path(tmp_path / "data") and f"downloading uv {UV_VERSION} from 127.0.0.1" in lines
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
        assert version.split()[1] == UV_VERSION
        asked = len(server.requests)
        assert find_uv(tmp_path / "data", f"{server.url}/simple") == binary and len(server.requests) == asked
        page = root / "uv" / "index.html"
        page.write_text(page.read_text().replace("#sha256=", "#sha256=0"))  # the index's hash no longer fits
        with pytest.raises(UvUnavailable, match="does not match the index's sha256"):
            find_uv(tmp_path / "other", f"{server.url}/simple", on_line=lines.append, machine="x86_64")
        assert not uv_path(tmp_path / "other").exists()
    with pytest.raises(UvUnavailable, match="the package index 127.0.0.1 cannot be reached"):
        find_uv(tmp_path / "third", server.url + "/simple", machine="x86_64")


@pytest.fixture
def package_index(uv_wheel, tmp_path):
    root, pyproject = make_package_index(tmp_path, uv_wheel)
    with index_server(root) as server:
        yield server, pyproject


@pytest.fixture
def base_without_pip(tmp_path):
    """A base Python with neither pip nor ensurepip (as macOS's QGIS.app bundle has)."""
    base = tmp_path / "base"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base)], check=True)
    return str(base / "bin" / "python")


@pytest.fixture(autouse=True)
def uv_offline_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))  # the fake wheels stay in this test
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS", "never")


def _options(server, pyproject, tmp_path, **more):
    return setup_run.SetupOptions(tmp_path / "venv", index_url=f"{server.url}/simple",
                                  torch_index=f"{server.url}/torch", pyproject=pyproject, uv_folder=tmp_path / "uv",
                                  **more)


def test_set_up_without_a_gpu_installs_the_cpu_build(package_index, base_without_pip, tmp_path, monkeypatch):
    server, pyproject = package_index
    monkeypatch.setattr(setup_run, "nvidia_facts", lambda: NO_GPU)
    lines = []
    result = setup_run.set_up(_options(server, pyproject, tmp_path, base_python=base_without_pip), lines.append)
    assert (result.build.name, result.fallback) == ("cpu", None)
    check = subprocess.run([result.python, "-c", "import torch, rsicrc_fake_dep; print(torch.__version__)"],
                           capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "2.14.1+cpu"
    assert any(line.startswith("PyTorch: no NVIDIA GPU found") for line in lines)
    assert any("/torch/cpu/" in path for _, path, _ in server.requests)


def test_a_gpu_build_that_does_not_run_gives_way_to_the_cpu_build(package_index, base_without_pip, tmp_path,
                                                                  monkeypatch):
    server, pyproject = package_index
    monkeypatch.setattr(setup_run, "nvidia_facts", lambda: TURING)
    monkeypatch.setattr(setup_run.sys, "platform", "linux")
    lines = []
    result = setup_run.set_up(_options(server, pyproject, tmp_path, base_python=base_without_pip), lines.append)
    assert result.build.name == "cpu" and "the cu130 build does not run on this cuda" in result.fallback
    assert "Found no NVIDIA driver" in result.fallback and result.fallback in lines
    version = subprocess.run([result.python, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert version == "2.14.1+cpu" and setup_run.verify(result.python, "cpu") is None


def test_every_download_goes_through_the_proxy(package_index, base_without_pip, tmp_path, monkeypatch):
    server, pyproject = package_index
    monkeypatch.setattr(setup_run, "nvidia_facts", lambda: NO_GPU)
    with proxy_server() as proxy:
        setup_run.set_up(_options(server, pyproject, tmp_path, base_python=base_without_pip, proxy=proxy.url),
                         lambda line: None)
    through = [path for _, path, _ in proxy.requests]
    assert any(p.endswith("/simple/uv/") for p in through)  # uv's own download, by the standard library
    assert any("/simple/rsicrc-fake-dep/" in p for p in through) and any("/torch/cpu/torch/" in p for p in through)


def test_a_failed_step_is_one_line(package_index, base_without_pip, tmp_path, monkeypatch):
    server, pyproject = package_index
    monkeypatch.setattr(setup_run, "nvidia_facts", lambda: NO_GPU)
    pyproject.write_text(pyproject.read_text().replace("rsicrc-fake-dep==1.0", "rsicrc-fake-dep==9.9"))
    with pytest.raises(setup_run.SetupFailed) as err:
        setup_run.set_up(_options(server, pyproject, tmp_path, base_python=base_without_pip), lambda line: None)
    message = str(err.value)
    assert message.startswith("installing the dependencies (PyTorch: cpu) failed:") and "\n" not in message
    with pytest.raises(setup_run.SetupFailed, match="--torch cuda: no NVIDIA GPU"):
        setup_run.set_up(_options(server, pyproject, tmp_path, torch="cuda"), lambda line: None)


def test_headless_setup_with_the_standard_library_only(package_index, base_without_pip, tmp_path):
    """`python -m rsicrc setup` in an interpreter without site-packages (-S): what QGIS's own Python
    or a bare python3 can run before any dependency exists."""
    server, _ = package_index
    parent = tmp_path / "plugins"
    parent.mkdir()
    (parent / "rsicrc").symlink_to(REPO, target_is_directory=True)
    script = (f"import runpy, sys; sys.path.insert(0, {str(parent)!r}); "
              "sys.argv[0] = 'rsicrc'; runpy.run_module('rsicrc', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-S", "-c", script, "setup", "--venv", str(tmp_path / "venv"), "--torch",
                           "cpu", "--python", base_without_pip, "--index-url", f"{server.url}/simple",
                           "--torch-index-url", f"{server.url}/torch"],
                          capture_output=True, text=True, timeout=600)
    # The plugin's own pyproject pins the real packages, which this index does not hold: the set-up
    # gets as far as installing them, having fetched uv and made the venv with the standard library.
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"downloading uv {UV_VERSION} from 127.0.0.1" in proc.stderr
    assert (tmp_path / "venv" / "bin" / "python").is_file()
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rsicrc: error:")]
    assert len(errors) == 1 and "installing the dependencies (PyTorch: cpu) failed" in errors[0]


def test_report_is_one_json_line():
    result = setup_run.SetupResult("/v/bin/python", choose_torch_build("cpu", "linux", "x86_64", NO_GPU))
    assert json.loads(setup_run.report(result)) == {"python": "/v/bin/python", "torch_build": "cpu", "device": "cpu",
                                                     "fallback": None}


def test_no_usable_python_asks_uv_for_one_then_says_what_to_install(package_index, tmp_path, monkeypatch):
    """No fitting Python here: uv's managed Python when it can download one (here it may not:
    UV_PYTHON_DOWNLOADS=never), else the search's one line naming what to install."""
    server, pyproject = package_index
    monkeypatch.setattr(setup_run, "nvidia_facts", lambda: NO_GPU)

    def none_found(on_probe=None):
        raise setup_run.NoBasePython("No Python was found to create the environment with (Python 3.11 to 3.14 "
                                     "needed). Install Python 3.13 from your distribution")

    monkeypatch.setattr(setup_run, "find_base_python", none_found)
    lines = []
    with pytest.raises(setup_run.SetupFailed, match="Install Python 3.13 from your distribution") as err:
        setup_run.set_up(_options(server, pyproject, tmp_path), lines.append)
    assert "\n" not in str(err.value)
    assert f"no usable Python here; asking uv for a managed Python {setup_run.MANAGED_PYTHON}" in lines
    assert any(line.startswith("$ ") and " python install " in line for line in lines)
