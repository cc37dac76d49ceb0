"""The Python environment that runs `python -m rsicrc`: how to start it and whether it works.

The child runs the very plugin folder QGIS loaded, whatever the folder is called: a short
bootstrap imports the package `rsicrc` from that folder by its path, so the code in the worker
always matches the plugin, and neither the plugins folder (where another plugin's folder could
shadow a dependency) nor the working directory is put on the child's sys.path. The environment
only has to provide the dependencies (torch, rasterio, ...).
"""
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import settings
from ...pipeline.environment.child_json import ask_child

CHECK_TIMEOUT_S = 180
CHECK_MODULES = ("numpy", "torch", "torchvision", "open_clip", "rasterio", "pyogrio", "shapely")

# argv[1] is the plugin folder; the rest is the command's own argv.
_BOOTSTRAP = """
import importlib.util, os, sys
_folder = sys.argv.pop(1)
sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
_spec = importlib.util.spec_from_file_location(
    "rsicrc", os.path.join(_folder, "__init__.py"), submodule_search_locations=[_folder])
_module = importlib.util.module_from_spec(_spec)
sys.modules["rsicrc"] = _module
_spec.loader.exec_module(_module)
"""
_RUN_CLI = "import runpy\nrunpy.run_module('rsicrc', run_name='__main__', alter_sys=True)\n"

_CHECK_SCRIPT = """
import importlib, json, sys
missing = {}
for name in %r:
    try:
        importlib.import_module(name)
    except Exception as exc:
        missing[name] = f"{type(exc).__name__}: {exc}"
try:
    import rsicrc, rsicrc.pipeline.cli
    where = rsicrc.__file__
    version = getattr(rsicrc, "__version__", "?")
except Exception as exc:
    missing["rsicrc"] = f"{type(exc).__name__}: {exc}"
    where = version = None
print(json.dumps({"python": sys.executable, "version": sys.version.split()[0],
                  "missing": missing, "rsicrc": where, "rsicrc_version": version}))
""" % (CHECK_MODULES,)


class EnvironmentProblem(Exception):
    """The configured Python environment is missing or broken; "Set up environment" may fix it."""


@dataclass
class EnvStatus:
    ok: bool
    python: str
    message: str
    details: dict = field(default_factory=dict)


def child_command(python, args=(), script=_RUN_CLI):
    """The command line that runs `script` (default: `python -m rsicrc ARGS`) in `python` with the
    package imported from this plugin's folder."""
    return [python, "-c", _BOOTSTRAP + script, str(settings.PLUGIN_DIR), *[str(a) for a in args]]


def resolve_python(python=None):
    """The interpreter to use, or EnvironmentProblem saying why there is none."""
    choice = settings.Choice(python, "given") if python else settings.python_choice()
    if not choice.value:
        raise EnvironmentProblem(
            "No Python environment for rsicrc was found. Use \"Set up environment\" in the "
            "RSICRC menu, or set the interpreter in RSICRC settings (or RSICRC_PYTHON).")
    path = Path(choice.value)
    if not path.is_file():
        raise EnvironmentProblem(
            f"The Python interpreter {choice.value} ({choice.origin}) does not exist. Use "
            "\"Set up environment\" or choose another interpreter in RSICRC settings.")
    if not os.access(path, os.X_OK):
        raise EnvironmentProblem(f"The Python interpreter {choice.value} ({choice.origin}) "
                                 "is not executable.")
    return str(path)


def check_environment(python=None, timeout=CHECK_TIMEOUT_S):
    """Start the interpreter once and see that it imports rsicrc and its dependencies."""
    try:
        python = resolve_python(python)
    except EnvironmentProblem as exc:
        return EnvStatus(False, python or "", str(exc))
    child = ask_child(child_command(python, script=_CHECK_SCRIPT), timeout)
    if child.problem:
        return EnvStatus(False, python, f"{python} {child.problem}.")
    report = child.answer
    if child.returncode != 0 or report is None:
        return EnvStatus(False, python, f"{python} is not a working Python: " + child.tail(3))
    if report["missing"]:
        names = ", ".join(sorted(report["missing"]))
        first = next(iter(report["missing"].values()))
        return EnvStatus(False, python,
                         f"The Python environment {python} lacks {names} ({first}). Use "
                         "\"Set up environment\" to install them.", report)
    return EnvStatus(True, python, f"{python}: Python {report['version']}, rsicrc "
                     f"{report['rsicrc_version']} from {report['rsicrc']}", report)


def explain_failure(stderr_tail, python):
    """An EnvironmentProblem when a child's stderr shows a broken environment, else None."""
    text = "\n".join(stderr_tail)
    if "ModuleNotFoundError" in text or "No module named" in text:
        last = [ln for ln in stderr_tail if "No module named" in ln]
        what = last[-1].strip() if last else "a module is missing"
        return EnvironmentProblem(f"The Python environment {python} is incomplete ({what}). "
                                  "Use \"Set up environment\" to install what rsicrc needs.")
    return None
