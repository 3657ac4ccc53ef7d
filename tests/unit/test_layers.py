"""The arrows of docs/development.md's architecture, checked on the imports: the domain does
no I/O, the use cases know their adapters only through their ports, and only the
composition root (and the processes that start one) builds adapters."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "gatehook"

IO = ("nats", "pymongo", "aiohttp", "starlette", "faststream", "uvicorn", "quickjs", "socket")
ADAPTERS = ("sandbox", "storage", "transport", "audit", "console", "runtime", "app", "cli")


def _imports(package: str) -> dict[str, set[str]]:
    """Module (relative to src/gatehook) -> the modules it imports, at any depth of the file
    (a function-level import counts as much as a top-level one)."""
    found: dict[str, set[str]] = {}
    for path in (SRC / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(SRC))] = names
    return found


def _offending(package: str, banned: tuple[str, ...]) -> dict[str, list[str]]:
    return {
        module: sorted(
            name
            for name in names
            if name.split(".")[0] in banned
            or (name.startswith("gatehook.") and name.split(".")[1] in banned)
        )
        for module, names in _imports(package).items()
        if any(
            name.split(".")[0] in banned
            or (name.startswith("gatehook.") and name.split(".")[1] in banned)
            for name in names
        )
    }


def test_the_domain_does_no_io_and_knows_no_adapter() -> None:
    assert _offending("domain", IO + ADAPTERS) == {}


def test_the_use_cases_know_their_adapters_only_through_ports() -> None:
    assert _offending("service", IO + ADAPTERS) == {}
    assert _offending("admin", ("pymongo", "storage", "sandbox", "audit", "runtime")) == {}
