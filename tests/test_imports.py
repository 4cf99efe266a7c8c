"""The package's layering, read from the source: which layer may import which, and no
import cycles (imports inside functions count; ``if TYPE_CHECKING:`` ones do not)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gateway"

# (the modules under this folder, may not import this package)
FORBIDDEN = [
    ("pipeline", "gateway.protocol"),  # the pipeline speaks typed events, no wire format
    ("pipeline", "gateway.transports"),
    ("pipeline", "gateway.api"),
    ("transports", "gateway.api"),  # HTTP routes live in api/; auth is gateway.access
    ("providers", "gateway.pipeline.visemes"),  # lip-sync data is the TTS's (providers/)
    ("protocol", "gateway.transports"),
    ("protocol", "gateway.api"),
    ("store", "gateway.api"),
    ("store", "gateway.transports"),
    ("audio", "gateway.pipeline"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports(module: str) -> set[str]:
    """The gateway modules ``module`` imports at run time (anywhere in its code)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text("utf-8"))
    skip = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != module}


GRAPH = {m: imports(m) for m in MODULES}


@pytest.mark.parametrize(("folder", "forbidden"), FORBIDDEN)
def test_layers_import_only_downwards(folder: str, forbidden: str) -> None:
    prefix = f"gateway.{folder}."
    bad = sorted(f"{m} imports {d}" for m, deps in GRAPH.items() if m.startswith(prefix)
                 for d in deps if d == forbidden or d.startswith(forbidden + "."))
    assert not bad, bad


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over the module graph: none bigger than one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_the_rules_see_imports() -> None:
    """The reader finds what is there (a test that could not fail would prove nothing)."""
    assert "gateway.pipeline.events" in GRAPH["gateway.pipeline.session"]
    assert "gateway.pipeline.session" in GRAPH["gateway.session_host"]
    assert "gateway.config" not in GRAPH["gateway.pipeline.tool_kinds"]  # TYPE_CHECKING only
