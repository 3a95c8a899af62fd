"""The test suite's own table: the `fast` subset names tests that exist."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import FAST_TESTS

TESTS = Path(__file__).parent


def test_the_fast_subset_names_existing_tests():
    """A renamed or removed test would silently drop out of `pytest -m fast`."""
    files = {p.name: p for p in TESTS.rglob("test_*.py")}
    for module, chosen in FAST_TESTS.items():
        assert module in files, f"helpers.FAST_TESTS names {module}, which does not exist"
        if chosen == "*":
            continue
        tree = ast.parse(files[module].read_text())
        defined = {n.name for n in ast.walk(tree)
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        missing = sorted(chosen - defined)
        assert not missing, f"helpers.FAST_TESTS names tests {module} no longer has: {missing}"
