"""A library's warning or log record never turns rsicrc's one-line error into several lines: it
goes to the log file (and with --verbose to stderr too)."""
import logging
import warnings

import pytest

from rsicrc.pipeline.cli import main
from rsicrc.pipeline.errors import BadInput
from rsicrc.pipeline.log import log_path


@pytest.fixture
def noisy_caption(monkeypatch, request):
    """A caption run whose libraries speak before the input is refused (as pyproj's UserWarning on
    Debian 13 and GDAL's messages through rasterio's logger do). Python shows a warning once per
    text and place in a process: the text names the test."""
    def run_caption(p, reporter):
        warnings.warn(f"pyproj: cannot set the database path ({request.node.name})", UserWarning)
        logging.getLogger("rasterio._env").warning("GDAL: CPLE_AppDefined in some.tif: TIFFReadDirectory")
        raise BadInput("is not a raster", p.before)

    monkeypatch.setattr("rsicrc.pipeline.caption.run.run_caption", run_caption)


def test_library_messages_go_to_the_log_not_stderr(noisy_caption, tmp_path, monkeypatch, capsys):
    log = tmp_path / "rsicrc.log"
    monkeypatch.setenv("RSICRC_LOG", str(log))
    assert main(["caption", "a.tif", "b.tif", "-o", str(tmp_path / "o.gpkg")]) == 2
    assert capsys.readouterr().err.splitlines() == ["rsicrc: error: a.tif: is not a raster"]
    text = log.read_text()
    assert "pyproj: cannot set the database path" in text and "TIFFReadDirectory" in text


def test_verbose_prints_them_as_well(noisy_caption, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RSICRC_LOG", str(tmp_path / "rsicrc.log"))
    assert main(["caption", "a.tif", "b.tif", "-o", str(tmp_path / "o.gpkg"), "--verbose"]) == 2
    err = capsys.readouterr().err
    assert "pyproj: cannot set the database path" in err and "TIFFReadDirectory" in err
    assert err.splitlines()[-1] == "rsicrc: error: a.tif: is not a raster"


def test_the_log_is_in_the_user_cache_of_each_os(tmp_path):
    assert log_path({"XDG_CACHE_HOME": str(tmp_path)}, "linux") == tmp_path / "rsicrc" / "rsicrc.log"
    assert log_path({"LOCALAPPDATA": "C:/Users/a/AppData/Local"}, "win32").parts[-2:] == ("rsicrc", "rsicrc.log")
    assert log_path({"RSICRC_LOG": str(tmp_path / "x.log")}, "darwin") == tmp_path / "x.log"
