"""The house rules that keep the code readable: functions ≤ 80 lines, modules ≤ 400 lines."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(p for package in ("h2crop_core", "pipelines") for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_short(path):
    source = path.read_text()
    assert len(source.splitlines()) <= 400, f"{path} has {len(source.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, f"{path}: {long}"


def test_the_worker_loop_reads_top_to_bottom_in_under_50_lines():
    import inspect

    from pipelines.training.train import train_loop_per_worker

    assert len(inspect.getsource(train_loop_per_worker).splitlines()) <= 50
