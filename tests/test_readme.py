"""The README's Python examples run as written and print what their comments say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_a_quickstart() -> None:
    assert python_blocks(), "the README lost its python examples"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs_and_prints_what_it_says(
    index: int, capsys: pytest.CaptureFixture[str]
) -> None:
    source = python_blocks()[index]
    exec(compile(source, f"README.md[python block {index}]", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    promised = re.findall(r"print\(.*?\)\s+# (.+)$", source, re.M)
    for expected in promised:
        assert expected.strip() in printed
