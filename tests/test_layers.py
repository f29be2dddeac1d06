"""The layout's rules, checked from the source: which room may import which.

1. The pure rooms (decoders, capture, engine, media) import no Django: each of their modules is
   imported in a fresh interpreter whose import system refuses Django, DRF, Celery, psycopg2 and
   every product module outside the pure rooms (tests/pure_import_probe.py), and their source
   names none of those, not even inside a function.
2. The import graph of the product, built with `ast` from every import statement (top level,
   inside functions, under TYPE_CHECKING), has no cycle between modules and none between rooms;
   the directory knows nothing of the recorder or the TAPI app, and qms.lib no app.
3. The tests import no benchmark code: their traffic comes from recorder/capture/.

Modules and rooms are found by walking the folders, so a new module is covered without a change
here; a new room is a new line in ROOMS.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("qms", "extensions", "integrations", "recorder")
SKIPPED_FOLDERS = {"migrations", "tests", "__pycache__"}

# The pure rooms: plain Python (and numpy, dpkt...) that the capture process runs.
PURE = (
    "integrations.observations",
    "integrations.bounds",
    "integrations.sip",
    "integrations.sccp",
    "integrations.shoretel.bridge",
    "recorder.capture",
    "recorder.engine",
    "recorder.media",
    "recorder.lib",
)
# The web and broker stack that a pure room must never reach.
FORBIDDEN = ("django", "rest_framework", "celery", "kombu", "psycopg2", "psycopg")

# A module's room is the one whose prefix is the longest that matches its dotted name.
ROOMS = {
    "qms": "qms",  # the composition: settings, urls, api_urls, admin, apps, celery, wsgi, demo
    "qms.lib": "qms.lib",
    "extensions": "extensions",
    "integrations": "integrations.observations",
    "integrations.observations": "integrations.observations",
    "integrations.bounds": "integrations.observations",
    "integrations.sip": "integrations.sip",
    "integrations.sccp": "integrations.sccp",
    "integrations.shoretel": "integrations.shoretel",
    "integrations.shoretel.bridge": "integrations.shoretel.bridge",
    "recorder": "recorder",  # the entry points: tasks, admin, apps, management commands
    # The recorder's tables, and the names every Django room shares (a node's queue, its
    # dead letters and alerts): the bottom of the recorder's Django rooms.
    "recorder.models": "recorder.models",
    "recorder.nodes.models": "recorder.models",
    "recorder.nodes.alerts": "recorder.models",
    "recorder.nodes.queues": "recorder.models",
    "recorder.capture": "recorder.capture",
    "recorder.engine": "recorder.engine",
    "recorder.media": "recorder.media",
    "recorder.lib": "recorder.lib",
    "recorder.recordings": "recorder.recordings",
    "recorder.sinks": "recorder.sinks",
    "recorder.nodes": "recorder.nodes",
    "recorder.playback": "recorder.playback",
}


@dataclass(frozen=True)
class Edge:
    """One import statement from a product module: what it names and where."""

    source: str
    target: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


# --- the product's modules ---------------------------------------------------------------------


@cache
def modules() -> dict[str, Path]:
    """Every product module (packages by their __init__.py), without migrations and tests."""
    found = {}
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if SKIPPED_FOLDERS.intersection(parts):
                continue
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def room_of(module: str) -> str:
    prefix = max((p for p in ROOMS if within(module, p)), key=len)
    return ROOMS[prefix]


def is_pure(module: str) -> bool:
    return any(within(module, prefix) for prefix in PURE)


def pure_modules() -> list[str]:
    return [name for name in modules() if is_pure(name)]


# --- the import graph ---------------------------------------------------------------------------


def imported_names(module: str, tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(dotted name, line) for every import in the tree, wherever it sits; relative imports
    resolved; `from package import name` names package.name when that is a module."""
    is_package = modules()[module].name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = absolute(module, is_package, node.level, node.module)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule if submodule in modules() else base), node.lineno
        elif literal_import_module(node):
            yield node.args[0].value, node.lineno


def absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    parts = module.split(".")
    base = parts[: len(parts) - level + (1 if is_package else 0)]
    return ".".join([*base, *([name] if name else [])])


def literal_import_module(node: ast.AST) -> bool:
    """importlib.import_module("a.b"): an import by another name."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def resolve(name: str) -> str:
    """The product module a dotted name lands in (the longest existing prefix)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in modules():
        parts.pop()
    return ".".join(parts)


@cache
def all_imports() -> tuple[Edge, ...]:
    """Every import statement of the product, to product modules and to anything else."""
    edges = {}
    for module, path in modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, line in imported_names(module, tree):
            target = resolve(name) if name.partition(".")[0] in PRODUCT else name
            edge = Edge(module, target or name, path, line)
            edges[edge] = edge  # `from a import b, c` is one statement: one edge per line.
    return tuple(edges)


def product_edges() -> list[Edge]:
    return [
        edge for edge in all_imports() if edge.target in modules() and edge.target != edge.source
    ]


# --- cycles -------------------------------------------------------------------------------------


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of nodes that all reach each other, of two or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            group.append(node)
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str]:
    """The shortest path from `start` back to itself, as the list of nodes along it."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph.get(node, ())):
                if successor == start:
                    return [*paths[node], start]
                if successor not in paths:
                    paths[successor] = [*paths[node], successor]
                    following.append(successor)
        frontier = following
    return []


def describe_cycles(edges: Iterable[Edge], node_of: Callable[[str], str]) -> list[str]:
    """Per group of nodes that reach each other: the shortest cycle through it, then every
    import statement from one node of the group to another (the ones to undo)."""
    graph: dict[str, set[str]] = defaultdict(set)
    inside: dict[tuple[str, str], list[Edge]] = defaultdict(list)
    for edge in edges:
        source, target = node_of(edge.source), node_of(edge.target)
        if source != target:
            graph[source].add(target)
            inside[source, target].append(edge)
    found = []
    for group in strongly_connected(graph):
        lines = [" -> ".join(shortest_cycle(graph, group[0]))]
        for (source, target), statements in sorted(inside.items()):
            if source in group and target in group:
                lines.append(f"  {source} -> {target}")
                lines += [f"    {e.where()}: {e.source} imports {e.target}" for e in statements]
        found.append("\n    ".join(lines))
    return found


# --- 1. purity ----------------------------------------------------------------------------------


def ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts))}


def probe_pure_imports() -> dict:
    pure = pure_modules()
    allowed = set(pure).union(*(ancestors(name) for name in pure))
    config = {
        "root": str(ROOT),
        "products": PRODUCT,
        "modules": pure,
        "allowed": sorted(allowed),
        "forbidden": FORBIDDEN,
    }
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # -I: no PYTHON* variables, no user site, no script folder on sys.path: only what the probe
    # puts there, so nothing of the test run leaks in.
    completed = subprocess.run(
        [sys.executable, "-I", str(ROOT / "tests" / "pure_import_probe.py"), json.dumps(config)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])  # the report is the last line


def test_the_pure_rooms_are_found_where_the_layout_says() -> None:
    pure = pure_modules()
    for room in ("integrations.sip", "recorder.capture", "recorder.engine", "recorder.media"):
        assert any(within(name, room) for name in pure), f"no module found in {room}"


def test_the_pure_rooms_import_without_django_or_any_django_side_module() -> None:
    report = probe_pure_imports()
    assert not report["preloaded"], f"loaded before any product import: {report['preloaded']}"
    refused = sorted(
        {" -> ".join([*r["chain"], r["refused"]]) for r in report["refused"]}
    )  # fmt: skip
    assert not refused, "a pure room reaches a refused module:\n  " + "\n  ".join(refused)
    failed = [f"{module}:\n{trace}" for module, trace in report["failed"].items()]
    assert not failed, "pure modules that do not import on their own:\n" + "\n".join(failed)


def test_the_pure_rooms_name_no_django_side_module_even_inside_a_function() -> None:
    # The probe sees only what runs at import; a lazy import inside a function is a dependency
    # too, and the one that ends up pulling Django into the capture process.
    offending = [
        f"{edge.where()}: {edge.source} imports {edge.target}"
        for edge in all_imports()
        if is_pure(edge.source) and not is_pure_target(edge.target)
    ]
    assert not offending, "\n".join(offending)


def is_pure_target(target: str) -> bool:
    top = target.partition(".")[0]
    if top in FORBIDDEN:
        return False
    return top not in PRODUCT or is_pure(target) or target in ancestors_of_pure()


@cache
def ancestors_of_pure() -> frozenset[str]:
    return frozenset().union(*(ancestors(name) for name in pure_modules()))


# --- 2. directions ------------------------------------------------------------------------------


def test_every_product_module_is_read() -> None:
    assert len(modules()) > 100
    assert all_imports(), "no import statement found"


def test_no_import_cycle_between_modules() -> None:
    cycles = describe_cycles(product_edges(), lambda module: module)
    assert not cycles, "import cycles between modules:\n  " + "\n  ".join(cycles)


def test_no_import_cycle_between_rooms() -> None:
    cycles = describe_cycles(product_edges(), room_of)
    assert not cycles, "import cycles between rooms:\n  " + "\n  ".join(cycles)


def test_the_directory_imports_nothing_of_the_recorder_or_the_tapi_app() -> None:
    offending = [
        f"{edge.where()}: {edge.source} imports {edge.target}"
        for edge in product_edges()
        if room_of(edge.source) == "extensions"
        and (within(edge.target, "recorder") or within(edge.target, "integrations.shoretel"))
    ]
    assert not offending, "\n".join(offending)


def test_qms_lib_imports_no_app_and_nothing_of_the_composition() -> None:
    offending = [
        f"{edge.where()}: {edge.source} imports {edge.target}"
        for edge in product_edges()
        if room_of(edge.source) == "qms.lib" and room_of(edge.target) != "qms.lib"
    ]
    assert not offending, "\n".join(offending)


# --- 3. the tests stand on the product, not on the benchmarks ------------------------------------


def test_no_test_imports_benchmark_code() -> None:
    # Benchmarks are run by hand; the traffic they and the tests share lives in
    # recorder/capture/traffic.py, so the suite never reaches into bench/ (by sys.path or not).
    bench = {"bench"} | {path.stem for path in (ROOT / "bench").glob("*.py")} - {"__init__"}
    offending = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offending += [
                f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}"
                for name in names
                if name.partition(".")[0] in bench
            ]
    assert not offending, "\n".join(offending)
