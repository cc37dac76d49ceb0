"""The dialog's QgsTask: cancel stops the child and leaves no corrupt file; a broken
interpreter gives a message-bar message with "Set up environment", not a crash."""
import os
import sqlite3

import pytest
from qgis.PyQt.QtWidgets import QPushButton


def _make_task(plugin, raster_pair, output, **kw):
    from rsicrc.rsicrc_qgis.caption import job as caption_job

    before, after = raster_pair
    return caption_job.caption_args({"before": str(before), "after": str(after), "output": str(output),
                                     "tile_size": 256, "device": "cpu", **kw})


def test_cancel_stops_child_and_leaves_resumable_output(plugin, worker_env, raster_pair, tmp_path,
                                                        wait_signal):
    from rsicrc.rsicrc_qgis.caption import job as caption_job

    output = tmp_path / "cancelled.gpkg"
    task = plugin.start_caption(_make_task(plugin, raster_pair, output), str(output), "c")
    seen = []

    def on_event(event):
        seen.append(event["event"])
        if event["event"] == "start":  # the model is loaded and tiles are being read
            task.cancel()

    task.childEvent.connect(on_event)
    layer, message, level, is_env = wait_signal(task.finishedWithResult, 300)
    assert "start" in seen and "done" not in seen
    assert layer is None and not is_env and "cancelled" in message.lower()
    with pytest.raises(ProcessLookupError):
        os.kill(task.child_pid, 0)  # the child is gone (and reaped)
    assert not output.exists()  # the final file appears only when every tile is written
    partial = caption_job.partial_path(str(output))
    if os.path.exists(partial):
        con = sqlite3.connect(partial)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
        args = caption_job.caption_args({"before": "b.tif", "after": "a.tif", "output": str(output)})
        assert "--resume-if-possible" in args


def test_broken_interpreter_gives_message_not_crash(plugin, qgis_iface, raster_pair, tmp_path,
                                                    monkeypatch, wait_signal):
    bogus = tmp_path / "no-such-env" / "bin" / "python"
    monkeypatch.setenv("RSICRC_PYTHON", str(bogus))
    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    output = tmp_path / "never.gpkg"
    task = plugin.start_caption(_make_task(plugin, raster_pair, output), str(output), "n")
    layer, message, level, is_env = wait_signal(task.finishedWithResult, 60)
    assert layer is None and is_env and str(bogus) in message and "does not exist" in message
    item = bar.currentItem()
    assert item is not None and str(bogus) in item.text()
    buttons = [b.text() for b in item.findChildren(QPushButton)]
    assert "Set up environment" in buttons
    assert not output.exists()


def test_interpreter_without_dependencies_is_reported(plugin, monkeypatch, tmp_path):
    """A real Python that lacks torch & co (the system one without the venv) is 'broken'."""
    from rsicrc.rsicrc_qgis.worker.environment import check_environment

    venv = tmp_path / "bare"
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    status = check_environment(str(venv / "bin" / "python"))
    assert not status.ok
    assert "torch" in status.message and "Set up environment" in status.message


def test_working_environment_is_recognised(worker_env):
    from rsicrc.rsicrc_qgis.worker.environment import check_environment

    status = check_environment()
    assert status.ok, status.message
    assert status.python == worker_env["RSICRC_PYTHON"]
