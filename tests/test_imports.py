"""The import graph of edgetune's packages: no cycles at module level, and the layering
searcher -> objectives -> devices (a lower package never imports a higher one). Every import of
them names the installed namespace (``edgetune.devices``): a bare ``devices`` would load a second
copy of the module from the current folder.

Only imports that run when a module is imported count: one inside a function (a lazy import) or
under ``if TYPE_CHECKING:`` cannot take part in a cycle at import time.
"""
import ast
import pkgutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("searcher", "objectives", "devices")
NAMESPACE = "edgetune."
LOWER_MAY_NOT_IMPORT = {"devices": ("objectives", "searcher"), "objectives": ("searcher",)}


def _modules() -> dict[str, Path]:
    """Module name -> source file, packages (their ``__init__``) included."""
    modules = {}
    for package in PACKAGES:
        modules[package] = ROOT / package / "__init__.py"
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            path = ROOT / Path(*info.name.split("."))
            modules[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(body: list[ast.stmt]):
    """Every import that runs, at import time or in a function: a deferred import that closes a cycle
    still ties the two modules together (only ``if TYPE_CHECKING:`` blocks are left out)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _runtime_imports(node.orelse)
        else:  # if/try/with/class/function bodies
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from _runtime_imports(getattr(node, field, []))


def _imported(name: str, is_package: bool, node: ast.stmt, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``node`` (in module ``name``) imports, relative imports resolved."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name.split(".") if is_package else name.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        # ``from pkg import module`` imports the module; ``from pkg import name``, the package
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    found = set()
    for target in targets:
        parts = target.removeprefix(NAMESPACE).split(".")  # the graph names modules by their folder
        if parts[0] in PACKAGES:  # the deepest of our modules it names
            found.add(next(".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        graph[name] = {target for node in _runtime_imports(tree.body)
                       for target in _imported(name, is_package, node, modules)} - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (first module repeated at the end), or [] when there is none."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once explored
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = "done"
        path.pop()
        return []

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return []


def test_every_package_is_walked():
    graph = _graph()
    assert {"devices.base", "devices.protocol", "devices.onnx_export", "objectives.model_files", "searcher.locks"} <= set(graph)
    assert "devices.onnx_export" in graph["objectives.model_files"]  # an absolute import, resolved
    assert "devices.protocol" in graph["devices.base"]  # a relative one


def test_every_import_names_the_edgetune_namespace():
    bare = []
    for path in [*ROOT.glob("[!.]*/**/*.py")]:
        if path.parts[len(ROOT.parts)] in ("build", "edgetune.egg-info") or ".venv" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            bare += [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names
                     if name.split(".")[0] in (*PACKAGES, "studies")]
    assert not bare, bare


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_lower_packages_do_not_import_higher_ones():
    wrong = [f"{module} imports {target}" for module, targets in sorted(_graph().items()) for target in sorted(targets)
             if target.split(".")[0] in LOWER_MAY_NOT_IMPORT.get(module.split(".")[0], ())]
    assert not wrong, "; ".join(wrong)
