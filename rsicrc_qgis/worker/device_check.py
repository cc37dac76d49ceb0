"""Which device the worker will use, asked of the worker itself: `python -m rsicrc device --json`
in the configured environment (QGIS never imports torch). Blocking: run it from a QgsTask."""
from dataclasses import dataclass, field

from .. import settings
from ...pipeline.environment.child_json import ask_child
from .environment import EnvironmentProblem, child_command, resolve_python

DEVICE_TIMEOUT_S = 120


@dataclass
class DeviceStatus:
    ok: bool  # the worker has a device for the chosen setting
    text: str  # what the settings dialog shows
    warning: str = None  # a GPU is there but unused
    fix: str = None  # the command or step that fixes it
    report: dict = field(default_factory=dict)


def _gib(n):
    return f"{n / 2**30:.1f} GiB"


def describe(report):
    """The worker's report (pipeline/device_report.py) as the dialog's text."""
    device = report.get("device")
    if not device:
        text = f"No device: {report.get('error') or 'the worker gave no answer'}"
        if report.get("reason"):
            text += f" (no GPU: {report['reason']})"
        return DeviceStatus(False, text, report.get("warning"), report.get("fix"), report)
    kind = device.split(":", 1)[0]
    if kind == "cuda":
        text = f"CUDA GPU {device}: {report.get('name') or 'unnamed'}"
        if report.get("memory_bytes"):
            text += f", {_gib(report['memory_bytes'])}"
    elif kind == "mps":
        text = "Apple GPU (MPS)"
    else:
        text = f"CPU: {report.get('reason') or 'no GPU'}"
    if report.get("precision"):
        text += "\n" + report["precision"]["text"]
    return DeviceStatus(True, text, report.get("warning"), report.get("fix"), report)


def check_device(python=None, device=None, timeout=DEVICE_TIMEOUT_S):
    """Run the worker's device report for `device` (default: the setting) and describe it."""
    try:
        python = resolve_python(python)
    except EnvironmentProblem as exc:
        return DeviceStatus(False, f"Not checked: {exc}")
    args = ["device", "--json", "--device", device or settings.device()]
    child = ask_child(child_command(python, args), timeout, accept=lambda v: isinstance(v, dict) and "device" in v)
    if child.problem:
        return DeviceStatus(False, f"Not checked: {python} {child.problem}.")
    if child.answer is None:
        tail = child.tail(2)
        return DeviceStatus(False, f"Not checked: the worker in {python} gave no device report"
                            + (f" ({tail})" if tail else ""))
    return describe(child.answer)
