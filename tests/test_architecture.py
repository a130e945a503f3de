"""The shape of the code (issues 16, 28): no import cycles, no module over 400 lines, no function over 60 lines,
rooms import from the module that defines a name (never from the top package), and rooms stack in layers
(docs/architecture.md).

A module may import its own room and any lower layer, counting imports inside functions (a lazy import still
couples) and under `if TYPE_CHECKING:` (a type named from above is a tie to above). Lowest first:

    0 foundation: m2iv.errors, constants, files, identity, progress, registry, dist, plugins
    1 models   2 data   3 hub   4 vectors   5 adapters   6 train   7 sandbox   8 library   9 methods   10 evaluate
    11 export, integrations, app, api (side by side: they never import each other)   12 cli
    13 the top package m2iv/__init__.py (the user-facing names: may import anything)

The order follows the code: `hub` (the Hub transport and the model card: files, not vectors) sits below `vectors`,
whose save_pretrained / from_pretrained / push_to_hub use it. Models and task suites another room provides (the
sandbox's) are found by entry points (m2iv/plugins.py), never by importing upward.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "m2iv"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, name: str, known: set[str], type_only_too: bool = False) -> set[str]:
    """Every m2iv module `path` imports, at the top or inside a function (a lazy import still couples); with
    `type_only_too`, also those under `if TYPE_CHECKING:` (the cycle test leaves them out: no import at run time)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = set() if type_only_too else {
        id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
        for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:  # annotations only: no import at run time
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t.count(".") > 1 and t not in known:  # `from m2iv.room import mod` names a module
                t = t.rpartition(".")[0]
            if t not in known and t.rpartition(".")[0] == "m2iv":  # `from m2iv import name`, or a namespace room
                t = "m2iv" if isinstance(node, ast.ImportFrom) and node.module == "m2iv" else ""
            if t in known and t != name:
                out.add(t)
    return out


def _graph(type_only_too: bool = False) -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {n: _imports(p, n, known, type_only_too) for n, p in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        colour[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if colour.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in colour and (found := visit(m)):
                return found
        stack.pop()
        colour[n] = 2
        return None

    for n in sorted(graph):
        if n not in colour and (found := visit(n)):
            return found
    return None


def test_no_import_cycle_between_modules():
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in _graph().items()}
    # A package's __init__ may re-export its own modules; modules never import their package or the top package.
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_modules_import_defining_modules_not_the_top_package():
    offenders = sorted(n for n, deps in _graph().items() if "m2iv" in deps and n != "m2iv")
    assert offenders == [], f"import from the top package `m2iv` (import from the defining module): {offenders}"


def test_no_module_over_400_lines():
    long = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in _modules().items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


MAX_FUNCTION_LINES = 60


def _long_functions(source: str, module: str) -> list[str]:
    """`module:function (N lines)` for each function or method of `source` longer than MAX_FUNCTION_LINES, counted
    from its def line to its last line (decorators excluded)."""
    return [f"{module}:{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_function_over_60_lines():
    long = [f for n, p in sorted(_modules().items()) for f in _long_functions(p.read_text(encoding="utf-8"), n)]
    assert long == [], "functions over 60 lines (split them into helpers with one job each): " + ", ".join(long)


def test_the_function_length_check_counts_def_to_last_line():
    def source(n_body: int, indent: str = "") -> str:  # a decorated function of 1 + n_body lines
        return f"{indent}@decorator\n{indent}def f(self):\n" + "".join(f"{indent}    x = {i}\n" for i in range(n_body))

    assert _long_functions(source(59), "m") == []  # 60 lines, the decorator not counted
    assert _long_functions("class C:\n" + source(60, "    "), "m") == ["m:f (61 lines)"]  # methods too


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


FOUNDATION = {"errors", "constants", "files", "identity", "progress", "registry", "dist", "plugins"}
LAYERS = {"foundation": 0, "models": 1, "data": 2, "hub": 3, "vectors": 4, "adapters": 5, "train": 6, "sandbox": 7,
          "library": 8, "methods": 9, "evaluate": 10, "export": 11, "integrations": 11, "app": 11, "api": 11,
          "cli": 12, "m2iv": 13}


def _room(module: str) -> str:
    """`m2iv.<room>.…` -> room; the foundation's modules share one room; the top package is its own."""
    parts = module.split(".")
    if len(parts) == 1:
        return "m2iv"
    return "foundation" if parts[1] in FOUNDATION else parts[1]


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a higher layer, or of another room on the same layer, as
    `module -> imported (room a, layer i -> room b, layer j)`."""
    out = []
    for n, deps in sorted(graph.items()):
        for m in sorted(deps):
            a, b = _room(n), _room(m)
            if a != b and LAYERS[b] >= LAYERS[a]:
                out.append(f"{n} -> {m} (room {a}, layer {LAYERS[a]} -> room {b}, layer {LAYERS[b]})")
    return out


def test_every_room_has_a_layer():
    assert {_room(n) for n in _modules()} == set(LAYERS), "add the new room to LAYERS and docs/architecture.md"


def test_no_room_imports_a_higher_layer():
    upward = _upward(_graph(type_only_too=True))
    assert upward == [], "imports against the layer order (docs/architecture.md):\n" + "\n".join(upward)


def test_the_layer_check_finds_an_upward_import():
    graph = {"m2iv.vectors.vector": {"m2iv.hub.remote", "m2iv.errors"}, "m2iv.hub.remote": {"m2iv.cli.main"},
             "m2iv.app.ui": {"m2iv.api.run"}, "m2iv": {"m2iv.cli.main"}}
    assert _upward(graph) == ["m2iv.app.ui -> m2iv.api.run (room app, layer 11 -> room api, layer 11)",
                              "m2iv.hub.remote -> m2iv.cli.main (room hub, layer 3 -> room cli, layer 12)"]


def test_type_checking_and_function_level_imports_count_for_the_layers(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from m2iv.cli import main\n"
                   "def f():\n    from m2iv.evaluate import runner\n")
    known = {"m2iv.cli.main", "m2iv.evaluate.runner"}
    assert _imports(src, "m2iv.models.mod", known, type_only_too=True) == known
    assert _imports(src, "m2iv.models.mod", known) == {"m2iv.evaluate.runner"}
