"""Every function in app/ is short enough to read at once: at most MAX_LINES lines."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

MAX_LINES = 80


def long_functions(max_lines: int = MAX_LINES) -> list[str]:
    """`path:line name (n lines)` for each function or method in app/ longer than `max_lines`."""
    found = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = (node.end_lineno or node.lineno) - start + 1
                if lines > max_lines:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_app_is_longer_than_80_lines() -> None:
    assert long_functions() == []


def test_the_check_finds_long_functions() -> None:
    """The walk reaches nested functions and methods: at a low enough limit the route factories show up."""
    assert any("routes/predict.py" in entry and " routes (" in entry for entry in long_functions(max_lines=10))
