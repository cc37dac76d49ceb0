"""The house rules of ARCHITECTURE.md, read off the code's AST: the arrows between the layers point
one way, no import circle, no folder of more than 15 modules, no module takes another's private
name, and no two public names alike in different modules."""
import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("model", "pipeline", "rsicrc_qgis")
# What a layer may import of the others (the arrows of ARCHITECTURE.md).
ALLOWED = {"model": set(), "pipeline": {"model"}, "rsicrc_qgis": {"pipeline"}}
MAX_MODULES = 15
MAX_FUNCTION_LINES = 60  # a function's body, its docstring left out
# Public names that several modules define on purpose: entry points by convention.
SHARED_NAMES = {"main"}


def _modules():
    """{dotted module under rsicrc: (path, AST)} of the three layers."""
    out = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            out[".".join(parts)] = (path, ast.parse(path.read_text(encoding="utf-8")), is_package)
    return out


MODULES = _modules()


def _imports(name):
    """(module imported, names taken from it, line) for every import of rsicrc code in `name`,
    lazy ones inside functions included."""
    path, tree, is_package = MODULES[name]
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("rsicrc."):
                target = node.module[len("rsicrc."):]
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                if sub in MODULES:  # `from package import module`
                    yield sub, [], node.lineno
                else:
                    yield target, [alias.name], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("rsicrc."):
                    yield alias.name[len("rsicrc."):], [], node.lineno


def _graph():
    graph = collections.defaultdict(set)
    for name in MODULES:
        for target, _, _ in _imports(name):
            if target in MODULES and (not MODULES[target][2] or _holds_code(MODULES[target][1])):
                graph[name].add(target)
    return graph


def _holds_code(tree):
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in tree.body)


def test_the_rooms_init_files_hold_no_code():
    for name, (path, tree, is_package) in MODULES.items():
        if is_package and name not in LAYERS:  # model/__init__ is the model's API
            body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
            assert not body, f"{path}: a room's __init__ holds only its docstring"


def test_layers_import_one_way():
    wrong = [f"{MODULES[name][0].relative_to(ROOT)}:{line} imports {target}"
             for name in MODULES for target, _, line in _imports(name)
             if target.split(".")[0] in LAYERS and target.split(".")[0] != name.split(".")[0]
             and target.split(".")[0] not in ALLOWED[name.split(".")[0]]]
    assert not wrong, wrong


def test_no_import_circle():
    graph, state, circles = _graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])
    assert not circles, [" -> ".join(c) for c in circles]


def test_no_folder_holds_more_than_15_modules():
    folders = collections.Counter(MODULES[name][0].parent for name in MODULES)
    big = {str(f.relative_to(ROOT)): n for f, n in folders.items() if n > MAX_MODULES}
    assert not big, big


def test_no_module_takes_another_modules_private_name():
    taken = []
    for name, (path, tree, _) in MODULES.items():
        imported = set()
        for target, names, line in _imports(name):
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    taken.append(f"{path.relative_to(ROOT)}:{line} imports {target}.{n}")
            imported.update(names)
        for node in ast.walk(tree):
            if isinstance(node, ast.alias) and node.asname:
                imported.add(node.asname)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in imported
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                taken.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not taken, taken


def test_no_two_public_names_alike_in_different_modules():
    defined = collections.defaultdict(list)
    for name, (path, tree, _) in MODULES.items():
        for node in tree.body:
            names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
                [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            for n in names:
                if not n.startswith("_") and n not in SHARED_NAMES:
                    defined[n].append(name)
    alike = {n: where for n, where in defined.items() if len(where) > 1}
    assert not alike, alike


def test_no_function_on_the_run_path_is_longer_than_about_60_lines():
    run_path = [n for n in MODULES if n.startswith(("pipeline.caption.", "pipeline.raster.", "pipeline.layer.")) or
                n in ("pipeline.cli", "pipeline.output_file", "pipeline.caption_params")]
    long = []
    for name in run_path:
        path, tree, _ = MODULES[name]
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                lines = body[-1].end_lineno - body[0].lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
