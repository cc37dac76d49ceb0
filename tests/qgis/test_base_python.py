"""Finding the base Python for "Set up environment" on simulated Windows, macOS and Linux trees.

Each interpreter in a tree is a small executable script that answers the probe as a Python of a
given version would, so the whole search (candidates, running them, judging the answer) runs
here for layouts of other systems.
"""
import json
import os
import sys
from pathlib import Path

import pytest

from rsicrc.pipeline.environment import base_python as bp
from rsicrc.pipeline.environment.base_python import Host, NoBasePython, candidates, find_base_python


def fake_python(path, version=(3, 12, 4), bits=64, **more):
    """more: machine="arm64", macos="13.6", as platform.machine()/mac_ver() would answer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    answer = json.dumps({"version": list(version), "executable": str(path), "bits": bits, **more})
    path.write_text(f"#!/bin/sh\necho '{answer}'\n")
    path.chmod(0o755)
    return path


def fake_binary(path, text="QGIS 3.40 started"):
    """Not a Python: what running qgis-bin.exe "as Python" would look like (no JSON answer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{text}'\n")
    path.chmod(0o755)
    return path


def host(platform, executable, prefix, version=(3, 12), **environ):
    environ.setdefault("PATH", "")
    return Host(platform, str(executable), str(prefix), str(prefix), version, environ)


def test_windows_standalone_installer_uses_the_python_in_sys_prefix(tmp_path):
    root = tmp_path / "Program Files" / "QGIS 3.40.4"
    exe = fake_binary(root / "bin" / "qgis-bin.exe")
    prefix = root / "apps" / "Python312"
    fake_python(prefix / "python.exe")
    fake_python(root / "bin" / "python3.exe")
    h = host("win32", exe, prefix)
    assert candidates(h) == [str(prefix / "python.exe"), str(root / "bin" / "python3.exe")]
    assert find_base_python(h).path == str(prefix / "python.exe")


def test_windows_osgeo4w_old_bundled_python_falls_back_to_python_org(tmp_path):
    """QGIS 3.22's OSGeo4W Python 3.9 is refused; python.org's 3.12 (per-user install) is taken."""
    root = tmp_path / "OSGeo4W"
    exe = fake_binary(root / "bin" / "qgis-bin.exe")
    old = fake_python(root / "apps" / "Python39" / "python.exe", (3, 9, 18))
    fake_python(root / "bin" / "python3.exe", (3, 9, 18))
    store_stub = fake_binary(tmp_path / "WindowsApps" / "python.exe", "Python was not found")
    local = tmp_path / "AppData" / "Local"
    new = fake_python(local / "Programs" / "Python" / "Python312" / "python.exe", (3, 12, 8))
    h = host("win32", exe, root / "apps" / "Python39", (3, 9), LOCALAPPDATA=str(local),
             OSGEO4W_ROOT=str(root), PATH=f"{root / 'bin'};{store_stub.parent}")
    order = candidates(h)
    assert order == [str(old), str(root / "bin" / "python3.exe"), str(new)]  # no Store alias
    seen = []
    found = find_base_python(h, on_probe=seen.append)
    assert found.path == str(new) and found.version == (3, 12, 8)
    assert [p.problem.split(":")[0] for p in seen[:2]] == ["Python 3.9.18 is too old"] * 2


def test_windows_qgis_binary_itself_is_never_taken(tmp_path):
    root = tmp_path / "QGIS"
    exe = fake_binary(root / "bin" / "qgis-bin.exe")
    fake_binary(root / "bin" / "python3.exe")  # something named like Python that is not one
    with pytest.raises(NoBasePython) as err:
        find_base_python(host("win32", exe, root / "apps" / "Python312", PATH=str(root / "bin")))
    text = str(err.value)
    assert "python3.exe: is not a working Python" in text and "qgis-bin.exe" not in text
    assert "https://www.python.org/downloads/windows/" in text and "64-bit Python 3.13" in text


def test_macos_bundle_python_next_to_the_app_binary(tmp_path):
    contents = tmp_path / "Applications" / "QGIS.app" / "Contents"
    exe = fake_binary(contents / "MacOS" / "QGIS")
    bundled = fake_python(contents / "MacOS" / "bin" / "python3.12")
    fake_python(contents / "MacOS" / "bin" / "python3")
    h = host("darwin", exe, contents / "Frameworks")  # QGIS 4 puts sys.prefix in Frameworks
    assert candidates(h)[:2] == [str(bundled), str(contents / "MacOS" / "bin" / "python3")]
    assert find_base_python(h).path == str(bundled)


def test_macos_prefix_and_vcpkg_layouts(tmp_path):
    contents = tmp_path / "QGIS-final-4_2_1.app" / "Contents"
    exe = fake_binary(contents / "MacOS" / "QGIS-final-4_2_1")
    prefix = contents / "Frameworks"
    vcpkg = fake_python(prefix / "tools" / "python3" / "python3.12")
    assert find_base_python(host("darwin", exe, prefix)).path == str(vcpkg)
    in_prefix = fake_python(prefix / "bin" / "python3")
    assert candidates(host("darwin", exe, prefix)) == [str(in_prefix), str(vcpkg)]


def test_macos_old_bundle_is_refused_with_what_to_install(tmp_path):
    contents = tmp_path / "QGIS-LTR.app" / "Contents"
    exe = fake_binary(contents / "MacOS" / "QGIS")
    fake_python(contents / "MacOS" / "bin" / "python3.9", (3, 9, 5))
    with pytest.raises(NoBasePython) as err:
        find_base_python(host("darwin", exe, contents / "MacOS", (3, 9)))
    text = str(err.value)
    assert "Python 3.9.5 is too old" in text and "python.org/downloads/macos" in text
    assert "brew install python@3.13" in text and "Apple silicon" in text


def test_linux_system_python_qgis_links(tmp_path):
    usr = tmp_path / "usr"
    qgis = fake_binary(usr / "bin" / "qgis")
    linked = fake_python(usr / "bin" / "python3.11", (3, 11, 2))
    fake_python(usr / "bin" / "python3", (3, 11, 2))
    h = host("linux", qgis, usr, (3, 11), PATH=str(usr / "bin"))
    assert candidates(h) == [str(linked), str(usr / "bin" / "python3")]
    assert find_base_python(h).path == str(linked)
    # When sys.executable is a Python (Debian's QGIS), it comes first.
    h = host("linux", usr / "bin" / "python3", usr, (3, 11), PATH=str(usr / "bin"))
    assert candidates(h)[0] == str(usr / "bin" / "python3")


def test_linux_distribution_python_out_of_range_finds_another(tmp_path):
    """Ubuntu 22.04 links 3.10 (too old for shapely 2.2), a future distribution 3.15 (past torch
    2.14's wheels); a python3.13 on PATH (Debian 13, Fedora 41) is taken."""
    usr, extra = tmp_path / "usr", tmp_path / "opt" / "bin"
    qgis = fake_binary(usr / "bin" / "qgis")
    fake_python(usr / "bin" / "python3.10", (3, 10, 12))
    fake_python(usr / "bin" / "python3", (3, 15, 0))
    good = fake_python(extra / "python3.13", (3, 13, 5))
    h = host("linux", qgis, usr, (3, 10), PATH=f"{usr / 'bin'}:{extra}")
    seen = []
    assert find_base_python(h, on_probe=seen.append).path == str(good)
    assert [p.ok for p in seen] == [False, False, True]
    assert "too new" in seen[1].problem and "3.14" in seen[1].problem


@pytest.mark.parametrize("version", [(3, 11, 2), (3, 12, 8), (3, 13, 5), (3, 14, 0)])
def test_python_3_11_to_3_14_is_taken(tmp_path, version):
    assert bp.probe(str(fake_python(tmp_path / "python3", version))).ok


def test_a_python_without_venv_or_pip_is_taken(tmp_path):
    """uv makes the venv and downloads: Debian's python3 without python3-venv, or macOS's bundle
    without pip, is a base as good as any."""
    usr = tmp_path / "usr"
    linked = fake_python(usr / "bin" / "python3.11", (3, 11, 2), missing=["venv", "ensurepip", "ssl"])
    assert find_base_python(host("linux", usr / "bin" / "qgis", usr, (3, 11))).path == str(linked)


def test_32_bit_python_is_refused(tmp_path):
    exe = fake_python(tmp_path / "python3", (3, 12, 1), bits=32)
    assert "32-bit" in bp.probe(str(exe)).problem


def test_machines_without_torch_wheels_are_refused(tmp_path):
    intel_mac = fake_python(tmp_path / "a" / "python3", machine="x86_64", macos="14.5")
    assert "no wheels for x86_64" in bp.probe(str(intel_mac), "darwin").problem
    old_mac = fake_python(tmp_path / "b" / "python3", machine="arm64", macos="13.6.1")
    assert "macOS 13.6.1 is too old" in bp.probe(str(old_mac), "darwin").problem
    assert bp.probe(str(fake_python(tmp_path / "c" / "python3", machine="arm64", macos="15.1")), "darwin").ok
    windows_arm = fake_python(tmp_path / "d" / "python.exe", machine="ARM64")
    assert "no wheels for arm64" in bp.probe(str(windows_arm), "win32").problem
    assert bp.probe(str(fake_python(tmp_path / "e" / "python.exe", machine="AMD64")), "win32").ok
    assert bp.probe(str(fake_python(tmp_path / "f" / "python3", machine="aarch64")), "linux").ok


def test_explicit_choice_wins(tmp_path):
    usr = tmp_path / "usr"
    fake_python(usr / "bin" / "python3.11", (3, 11, 2))
    chosen = fake_python(tmp_path / "mine" / "python", (3, 12, 0))
    h = host("linux", usr / "bin" / "qgis", usr, (3, 11), **{bp.ENV_VAR: str(chosen)})
    assert find_base_python(h).path == str(chosen)


def test_nothing_found_at_all(tmp_path):
    with pytest.raises(NoBasePython, match="No Python was found"):
        find_base_python(host("linux", tmp_path / "qgis", tmp_path))


def test_real_probe_of_this_machines_python():
    """The probe script itself, run by a real interpreter."""
    result = bp.probe(sys.executable)
    assert result.version[:2] == tuple(sys.version_info[:2])
    assert result.ok == (bp.SUPPORTED[0] <= tuple(sys.version_info[:2]) <= bp.SUPPORTED[1])


def test_supported_range_is_pyprojects_requires_python():
    """SUPPORTED is pyproject's requires-python (QGIS's own Python may lack tomllib, so it is not
    read there): a changed range must change both."""
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    (a, b), (c, d) = bp.SUPPORTED
    assert project["requires-python"] == f">={a}.{b},<{c}.{d + 1}"


def test_setup_task_refuses_an_old_python(qgis_app, tmp_path, wait_signal):
    from qgis.core import QgsApplication

    from rsicrc.rsicrc_qgis.setup.environment_setup import SetupEnvironmentTask

    old = fake_python(tmp_path / "py39" / "python", (3, 9, 2))
    task = SetupEnvironmentTask(tmp_path / "venv", python=str(old))
    QgsApplication.taskManager().addTask(task)
    wait_signal(task.taskTerminated, 60)
    assert "Python 3.9.2 is too old" in task.error and "Python 3.11 to 3.14" in task.error
    assert not (tmp_path / "venv").exists()


@pytest.mark.skipif(os.name == "nt", reason="the fake interpreters are shell scripts")
def test_a_candidate_found_twice_is_listed_once(tmp_path):
    root = tmp_path / "QGIS"
    exe = fake_binary(root / "bin" / "qgis-bin.exe")
    fake_python(root / "apps" / "Python312" / "python.exe")
    h = host("win32", exe, root / "apps" / "Python312", PATH=str(root / "apps" / "Python312"))
    assert candidates(h) == [str(root / "apps" / "Python312" / "python.exe")]  # once, not twice
    assert Path(candidates(h)[0]).is_file()


def test_setup_dialog_states_the_cost_for_this_platform(qgis_app, tmp_path):
    from rsicrc.rsicrc_qgis.setup.dialog import SetupDialog
    from rsicrc.rsicrc_qgis.setup.environment_setup import ENV_COST

    dialog = SetupDialog(venv_dir=tmp_path / "venv")
    assert ENV_COST[sys.platform if sys.platform in ENV_COST else "linux"] in dialog.label.text()
    dialog.deleteLater()


def test_setup_task_finds_the_base_python_itself(qgis_app, tmp_path, monkeypatch, wait_signal):
    """No interpreter given: the search runs inside the task and the log names what it took; the
    set-up then runs against a package index on 127.0.0.1 (tests/pipeline/local_index.py)."""
    from qgis.core import QgsApplication, QgsSettings

    from local_index import index_server, package_index, real_uv_wheel
    from rsicrc.rsicrc_qgis.setup.environment_setup import SetupEnvironmentTask

    monkeypatch.setenv(bp.ENV_VAR, sys.executable)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    root, pyproject = package_index(tmp_path, real_uv_wheel(tmp_path / "uv-wheel"))
    with index_server(root) as server:
        task = SetupEnvironmentTask(tmp_path / "venv", torch="cpu", index_url=f"{server.url}/simple",
                                    torch_index=f"{server.url}/torch", pyproject=pyproject, uv_folder=tmp_path / "uv")
        lines = []
        task.logLine.connect(lines.append)
        QgsApplication.taskManager().addTask(task)
        wait_signal(task.taskCompleted, 300)
    version = ".".join(map(str, sys.version_info[:3]))
    assert f"{sys.executable}: Python {version}, using it" in lines
    assert (tmp_path / "venv" / "bin" / "python").is_file()
    assert QgsSettings().value("rsicrc/python") == str(tmp_path / "venv" / "bin" / "python")
    assert lines[-1].startswith(f"Done: rsicrc will run with {tmp_path / 'venv' / 'bin' / 'python'} (PyTorch cpu build")
    QgsSettings().remove("rsicrc/python")
