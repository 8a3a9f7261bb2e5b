"""The house rules that keep the code readable: functions ≤ 80 lines; a module over 400 lines says in its
docstring why it stays one module (a paragraph starting "One module:"), rather than being split where a
split would scatter one concept."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(p for package in ("h2crop_core", "pipelines") for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_short(path):
    source = path.read_text()
    lines, doc = len(source.splitlines()), ast.get_docstring(ast.parse(source)) or ""
    assert lines <= 400 or "One module:" in doc, (
        f"{path} has {lines} lines and no 'One module:' reason in its docstring"
    )
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, f"{path}: {long}"


def test_the_worker_loop_reads_top_to_bottom_in_under_50_lines():
    import inspect

    from pipelines.training.worker import train_loop_per_worker

    assert len(inspect.getsource(train_loop_per_worker).splitlines()) <= 50
