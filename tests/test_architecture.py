"""The package's import graph: no cycles between modules, no private names or private modules across packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "vislab"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _package_of(module: str) -> str:
    """The package a module belongs to: itself for a package's __init__, else its parent."""
    return module if _is_package(module) else module.rpartition(".")[0]


def _resolve(module: str, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = _package_of(module).split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in `module`, module- or function-level,
    leaving out those under `if TYPE_CHECKING:`."""
    tree = ast.parse(MODULES[module].read_text())
    skip = _type_checking_lines(tree)
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node.level, node.module)
            if target.split(".")[0] != PACKAGE:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                # `from pkg import submodule` imports the submodule; anything else is a name of `target`.
                found.append((sub, None, node.lineno) if sub in MODULES else (target, a.name, node.lineno))
    return found


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def test_no_private_name_or_module_is_imported_from_another_package():
    bad = []
    for module in MODULES:
        home = _package_of(module)
        for target, name, line in imports_of(module):
            if target not in MODULES:
                continue
            owner = _package_of(target)
            if owner == home:
                continue  # a package's own private modules and names are its business
            if _private(target.rpartition(".")[2]):
                bad.append(f"{module}:{line} imports the private module {target}")
            if name is not None and _private(name):
                bad.append(f"{module}:{line} imports the private name {target}.{name}")
    assert not bad, "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in imports_of(m) if t in MODULES and t != m} for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_modules():
    # A package's __init__ re-exporting its own modules is not a cycle: those modules never import it back.
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_finds_what_it_must(tmp_path, monkeypatch):
    # The checks above pass only if they can fail: a fake cycle and a fake private import are caught.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _resolve("vislab.report._report", 2, "engine") == "vislab.engine"
    assert _resolve("vislab.report", 1, "_rundir") == "vislab.report._rundir"
    assert _private("_dist") and not _private("__version__") and not _private("engine")


@pytest.mark.parametrize("module", ["vislab.run"])
def test_run_is_imported_only_by_the_cli_and_the_public_api(module):
    importers = sorted(m for m in MODULES if any(t == module for t, _, _ in imports_of(m)))
    assert set(importers) <= {"vislab", "vislab.cli"}, importers
