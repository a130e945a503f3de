"""The shape of the code (issue 16): no import cycles, no module over 400 lines, no function over 60 lines,
rooms import from the module that defines a name (never from the top package)."""

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


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every m2iv module `path` imports, at the top or inside a function (a lazy import still couples)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
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


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {n: _imports(p, n, known) for n, p in mods.items()}


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
