"""The layering of ``streams/`` and ``model_export/`` as a checkable rule set (STYLE.md).

``import_graph`` reads every module's imports with ``ast`` (module level and inside functions:
a lazy import is still a dependency), and ``violations`` lists every broken rule with the
importing module, the imported one and the line. Imports under ``if TYPE_CHECKING:`` count for
the layering rules but not for cycles, since they never run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

OURS = ("streams", "model_export")
FAUST = ("faust", "mode", "aiokafka")
CLIENTS = ("faust", "mode", "aiokafka", "kafka", "confluent_kafka", "prometheus_client")
PURE_PRIVACY = ("streams.privacy.pseudonyms", "streams.privacy.redact")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (a module, not a name inside it, where that can be told)
    line: int
    type_checking: bool


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph(root: Path, packages: tuple[str, ...] = OURS) -> dict[str, list[Import]]:
    """module -> its imports, for every module of ``packages`` under ``root``."""
    files = {
        _module_name(root, path): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }
    graph: dict[str, list[Import]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found: list[Import] = []

        def visit(
            node: ast.AST,
            type_checking: bool,
            module: str = module,
            is_package: bool = is_package,
            found: list[Import] = found,
        ) -> None:
            if isinstance(node, ast.If) and _is_type_checking(node):
                for child in node.body:
                    visit(child, True)
                for child in node.orelse:
                    visit(child, type_checking)
                return
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.append(Import(module, alias.name, node.lineno, type_checking))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")
                    anchor = anchor if is_package else anchor[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    target = candidate if candidate in files else base
                    found.append(Import(module, target, node.lineno, type_checking))
            for child in ast.iter_child_nodes(node):
                visit(child, type_checking)

        visit(tree, False)
        graph[module] = found
    return graph


def _top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _ours(name: str) -> bool:
    return _top(name) in OURS


def violations(graph: dict[str, list[Import]]) -> list[str]:
    """Every broken layering rule, one line each, plus every import cycle."""
    out: list[str] = []

    def bad(imp: Import, rule: str) -> None:
        out.append(f"{imp.source} imports {imp.target} (line {imp.line}): {rule}")

    for imports in graph.values():
        for imp in imports:
            src, dst = imp.source, imp.target
            if src == "streams.errors" and _ours(dst):
                bad(imp, "streams.errors imports nothing of ours")
            for pure in ("streams.contracts", "streams.features"):
                allowed = _within(dst, pure) or dst == "streams.errors"
                if _within(src, pure) and _ours(dst) and not allowed:
                    bad(imp, f"{pure} imports only itself and streams.errors")
            if _within(src, "streams.processing"):
                allowed = ("streams.processing", "streams.contracts", "streams.features",
                           "streams.model", "streams.errors", *PURE_PRIVACY)  # fmt: skip
                if _ours(dst) and not any(_within(dst, a) for a in allowed):
                    bad(imp, "streams.processing imports only contracts, features, model and "
                             "the pure privacy modules")  # fmt: skip
                if _top(dst) in CLIENTS:
                    bad(imp, "streams.processing never imports a Kafka client or Prometheus")
            if src in PURE_PRIVACY and (_top(dst) in CLIENTS or (_ours(dst) and dst not in (
                "streams.errors", *PURE_PRIVACY))):  # fmt: skip
                bad(imp, "the pure privacy modules import no client and only streams.errors")
            if _top(dst) in FAUST and not _within(src, "streams.worker"):
                bad(imp, "only streams.worker imports faust or aiokafka")
            if src == "streams.worker.agents" and dst == "streams.worker.app":
                bad(imp, "streams.worker.app imports agents, never the reverse")
            if any(_within(src, p) for p in ("streams.worker", "streams.processing",
                                              "streams.model")) and any(
                _within(dst, p) for p in ("streams.sources", "streams.devtools")
            ):  # fmt: skip
                bad(imp, "worker, processing and model never import sources or devtools")
            if _within(src, "model_export") and any(
                _within(dst, p) for p in ("streams.worker", "streams.devtools")
            ):
                bad(imp, "model_export never imports streams.worker or streams.devtools")
    out.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph))
    return out


def cycles(graph: dict[str, list[Import]]) -> list[list[str]]:
    """Import cycles among our modules (each reported once, as a closed path)."""
    edges = {
        module: sorted({i.target for i in imports if i.target in graph and not i.type_checking})
        for module, imports in graph.items()
    }
    # A package's __init__ runs before its submodules: "a.b" importing "a" is not a cycle
    # through a.b, so edges to a module's own ancestors are left out.
    for module, targets in edges.items():
        edges[module] = [t for t in targets if not module.startswith(t + ".")]
    found: list[list[str]] = []
    seen_cycles: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                key = frozenset(cycle)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    found.append(cycle)
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)
    return found
