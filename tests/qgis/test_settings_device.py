"""The settings dialog's "Worker will use" line: from a fake worker answer, and from the real
worker in the project's venv (no GPU here: the CPU and why)."""
import pytest

from rsicrc.rsicrc_qgis.worker.device_check import DeviceStatus, check_device, describe

H200_REPORT = {"requested": "auto", "device": "cuda", "name": "NVIDIA H200", "memory_bytes": 150_000_000_000,
               "reason": None, "warning": None, "fix": None, "error": None}
UNUSED_GPU_REPORT = {"requested": "auto", "device": "cpu", "name": "CPU",
                     "reason": "this torch (2.14.1+cpu) is a CPU-only build",
                     "warning": "NVIDIA GeForce RTX 4070 (driver 581.15) is present, but this torch (2.14.1+cpu) "
                                "is a CPU-only build, so rsicrc runs on the CPU.",
                     "fix": '"C:\\venv\\Scripts\\python.exe" -m pip install torch==2.14.1+cu130 '
                            "--index-url https://download.pytorch.org/whl/cu130", "error": None}


def test_describe_reports():
    assert describe(H200_REPORT).text == "CUDA GPU cuda: NVIDIA H200, 139.7 GiB"
    assert describe({"device": "mps", "name": "Apple GPU (MPS)"}).text == "Apple GPU (MPS)"
    status = describe(UNUSED_GPU_REPORT)
    assert status.ok and status.text == "CPU: this torch (2.14.1+cpu) is a CPU-only build"
    assert status.fix.endswith("whl/cu130")
    failed = describe({"device": None, "error": "device 'cuda' asked for, but no CUDA GPU is available",
                       "reason": "no NVIDIA driver found"})
    assert not failed.ok and failed.text.startswith("No device: device 'cuda' asked for")
    advised = describe(dict(H200_REPORT, precision={"text": "bf16 would pay here (...)"}))
    assert advised.text == "CUDA GPU cuda: NVIDIA H200, 139.7 GiB\nbf16 would pay here (...)"


@pytest.fixture
def dialog_factory(qgis_app):
    made = []

    def make(checker):
        from rsicrc.rsicrc_qgis.setup.settings_dialog import SettingsDialog

        dialog = SettingsDialog(device_checker=checker)
        made.append(dialog)
        return dialog

    yield make
    for dialog in made:
        dialog.close()
        dialog.deleteLater()


def test_dialog_shows_the_gpu_the_worker_reports(dialog_factory, wait_signal):
    asked = []

    def checker(python, device):
        asked.append(device)
        return describe(H200_REPORT)

    dialog = dialog_factory(checker)
    (status,) = wait_signal(dialog.deviceChecked, 30)
    assert status.text == dialog.device_status.text() == "CUDA GPU cuda: NVIDIA H200, 139.7 GiB"
    assert not dialog.device_warning.isVisibleTo(dialog) and not dialog.device_fix.isVisibleTo(dialog)
    assert asked == [dialog.device_combo.currentText()]


def test_dialog_warns_about_an_unused_gpu_with_the_fix(dialog_factory, wait_signal):
    dialog = dialog_factory(lambda python, device: describe(UNUSED_GPU_REPORT))
    wait_signal(dialog.deviceChecked, 30)
    assert dialog.device_status.text() == "CPU: this torch (2.14.1+cpu) is a CPU-only build"
    assert dialog.device_warning.isVisibleTo(dialog) and dialog.device_fix.isVisibleTo(dialog)
    assert "RTX 4070 (driver 581.15) is present" in dialog.device_warning.text()
    assert dialog.device_fix.text() == UNUSED_GPU_REPORT["fix"] and dialog.device_fix.isReadOnly()
    assert dialog.height() >= dialog.heightForWidth(dialog.width())  # the wrapped warning fits


def test_changing_the_device_asks_again_and_only_the_last_answer_shows(dialog_factory, wait_signal):
    answers = {"auto": H200_REPORT, "cpu": dict(H200_REPORT, device="cpu", name="CPU",
                                               reason="the CPU was chosen in the settings")}
    dialog = dialog_factory(lambda python, device: describe(answers.get(device, H200_REPORT)))
    wait_signal(dialog.deviceChecked, 30)
    dialog.device_combo.setCurrentText("cpu")
    (status,) = wait_signal(dialog.deviceChecked, 30)
    assert status.text == dialog.device_status.text() == "CPU: the CPU was chosen in the settings"


def test_a_failing_checker_is_shown_not_raised(dialog_factory, wait_signal):
    def checker(python, device):
        raise OSError("worker vanished")

    dialog = dialog_factory(checker)
    assert wait_signal(dialog.deviceChecked, 30) == (None,)
    assert dialog.device_status.text() == "Device check failed: worker vanished"


def test_real_worker_in_the_project_venv(worker_env):
    status = check_device(python=worker_env["RSICRC_PYTHON"], device="auto")
    assert isinstance(status, DeviceStatus) and status.ok, status.text
    assert status.report["python"] == worker_env["RSICRC_PYTHON"]
    if status.report["device"] == "cpu":
        assert status.text.startswith("CPU: ") and status.report["reason"]
    bad = check_device(python=worker_env["RSICRC_PYTHON"], device="cuda:7")
    assert not bad.ok and bad.text.startswith("No device: ")


def test_missing_interpreter_is_not_checked(tmp_path):
    status = check_device(python=str(tmp_path / "nope" / "python"))
    assert not status.ok and "does not exist" in status.text
