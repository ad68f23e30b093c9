"""The package reads as its diagram: data -> models -> train -> extract -> metrics / embed -> plots
-> report -> cli. Every import inside alviz (module-level or inside a function) is read from the
source; none may run from a module to one further right, and the module graph has no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import alviz

PKG = Path(alviz.__file__).parent

# left to right; modules of one level may import each other as long as no cycle forms
LEVELS = {
    "errors": 0, "sampling": 0, "safeio": 0, "schema": 0, "npyfile": 0, "locks": 0,
    "config": 1, "adam": 1, "presets": 1, "snapshots": 1, "published": 1, "recipe": 1,
    "data": 2,
    "models": 3, "onednn": 3,
    "checkpoint": 4, "epochstats": 4,
    "train": 5, "concurrent": 5, "experiment": 5, "parallel": 5, "sweep": 5,
    "extract": 6,
    "metrics": 7, "embed": 7, "similarity": 7, "uncertainty": 7, "resample": 7,
    "plots": 8, "simplots": 8, "palette": 8, "curves": 8,
    "report": 9,
    "cli": 10, "__main__": 10,
}
MAX_LINES = 650


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str | None = None) -> set[str]:
    """Absolute names of the alviz modules that `path` (module `name`) imports, anywhere in the file."""
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "alviz"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "alviz":
                continue
            for a in node.names:  # `from . import plots` imports the module alviz.plots
                sub = f"{mod}.{a.name}"
                out.add(sub if _exists(sub) else mod)
    return out


def _exists(module: str) -> bool:
    p = PKG.parent.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PKG.rglob("*.py")}


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package root (public re-exports)


def test_every_module_has_a_level():
    missing = sorted({_top(m) for m in _graph()} - set(LEVELS) - {None})
    assert not missing, f"place these modules in LEVELS: {missing}"


def test_no_import_runs_back_up_the_diagram():
    bad = _upward(_graph())
    assert not bad, "imports against the flow data -> ... -> cli:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph = {m: {d for d in deps if _top(d) is not None} for m, deps in _graph().items() if _top(m) is not None}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _upward(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        a = _top(mod)
        if a is None:
            continue
        for d in deps:
            b = _top(d)
            if b is not None and LEVELS[b] > LEVELS[a]:
                bad.append(f"{mod} imports {d}")
    return sorted(bad)


def test_the_checker_sees_function_level_relative_imports(tmp_path):
    # what the old parallel.py did: import the CLI inside a function, relative to a subpackage
    src = tmp_path / "launch.py"
    src.write_text("import os\n\ndef rank():\n    from ..cli import main\n    from .. import plots\n    return main\n")
    deps = _imports(src, "alviz.parallel.launch")
    assert deps == {"alviz.cli", "alviz.plots"}
    assert _upward({"alviz.parallel.launch": deps}) == ["alviz.parallel.launch imports alviz.cli",
                                                        "alviz.parallel.launch imports alviz.plots"]


def test_modules_stay_small_and_say_what_they_are():
    long, undocumented = [], []
    for p in PKG.rglob("*.py"):
        n = len(p.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            long.append(f"{p.relative_to(PKG)}: {n} lines")
        doc = ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))
        if p.name != "__main__.py" and not doc:
            undocumented.append(str(p.relative_to(PKG)))
    assert not long, f"modules over {MAX_LINES} lines: {long}"
    assert not undocumented, f"modules without a docstring: {undocumented}"


def test_report_assets_are_shipped_and_inlined():
    from alviz.report.document import asset

    assert "function" in asset("viewer.js") and "#tv" in asset("report.css")
    assert (PKG / "report" / "assets" / "viewer.js").is_file()
