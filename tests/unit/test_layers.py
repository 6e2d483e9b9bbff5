"""The import rule of docs/architecture.md: a package imports only packages of lower layers.

Layers, bottom first; packages in one layer do not import each other::

    gateway            HTTP API, CLI, wiring: the entry points
    trainer
    monitor
    adapters  retrieval
    core               store, settings, progress, logging, shared rules

Every import counts, the ones inside functions and under ``TYPE_CHECKING`` too: a lazy import
is still a dependency.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("adapters", "retrieval"),
    ("monitor",),
    ("trainer",),
    ("gateway",),
)
LAYER_OF = {package: level for level, names in enumerate(LAYERS) for package in names}


def imported_modules(path: Path, package: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in one file of ``package`` (the dotted
    package the file is in), relative imports resolved."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
            elif node.module:
                yield node.lineno, node.module


def package_imports() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> where, for every pair of project packages."""
    edges: dict[tuple[str, str], list[str]] = {}
    for package in LAYER_OF:
        for path in sorted((ROOT / package).rglob("*.py")):
            dotted = ".".join(path.relative_to(ROOT).parts[:-1])
            for line, module in imported_modules(path, dotted):
                target = module.split(".")[0]
                if target in LAYER_OF and target != package:
                    where = f"{path.relative_to(ROOT)}:{line} imports {module}"
                    edges.setdefault((package, target), []).append(where)
    return edges


def test_every_package_has_a_layer() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in included}
    assert packages == set(LAYER_OF)
    assert set(config["tool"]["mypy"]["packages"]) == set(LAYER_OF)


def test_the_scan_sees_imports() -> None:
    # A scan that found nothing would pass the rule below vacuously.
    edges = package_imports()
    assert ("gateway", "core") in edges
    assert ("trainer", "adapters") in edges


def test_no_package_imports_its_own_layer_or_one_above() -> None:
    wrong = [
        where
        for (source, target), places in package_imports().items()
        if LAYER_OF[target] >= LAYER_OF[source]
        for where in places
    ]
    assert wrong == [], "imports against the layers:\n" + "\n".join(wrong)


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {package: set() for package in LAYER_OF}
    for source, target in package_imports():
        graph[source].add(target)
    cycles = [cycle for package in graph for cycle in _cycles_from(package, graph, [package])]
    assert cycles == [], f"package cycles: {cycles}"


def _cycles_from(start: str, graph: dict[str, set[str]], path: list[str]) -> list[list[str]]:
    found = []
    for nxt in sorted(graph[path[-1]]):
        if nxt == start:
            found.append([*path, nxt])
        elif nxt not in path:
            found.extend(_cycles_from(start, graph, [*path, nxt]))
    return found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from gateway.chat import ChatService\n", "gateway.chat"),
        ("from . import tables\n", "trainer.demo"),
        ("from ..store import TrainerStore\n", "trainer.store"),
        ("import monitor.service as service\n", "monitor.service"),
        ("def f():\n    from gateway import app\n", "gateway"),
    ],
)
def test_imports_are_resolved(tmp_path: Path, source: str, expected: str) -> None:
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert [module for _, module in imported_modules(path, "trainer.demo")] == [expected]
