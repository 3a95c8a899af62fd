"""The architecture's rules, checked: layers and contracts (import-linter), no private
names across modules, and the size bounds of docs/architecture.md."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*REPO.glob("featstore/**/*.py"), *REPO.glob("cli/**/*.py")])
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 100


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_import_contracts_hold():
    """.importlinter: CLI -> workflows -> core -> infrastructure, private modules stay in
    their package, no cycles between sibling packages, workflows independent."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    res = subprocess.run([exe, "--config", str(REPO / ".importlinter")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_no_private_names_imported_from_other_modules():
    offenders = []
    for path in SOURCES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    ("featstore", "featstore_cli")):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno} "
                                         f"{node.module}.{alias.name}")
    assert not offenders, "private names imported across modules:\n" + "\n".join(offenders)


def test_modules_and_functions_stay_small():
    too_long = []
    for path in SOURCES:
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}() "
                                    f"{n} lines")
    assert not too_long, "over the bounds:\n" + "\n".join(too_long)
