"""docs/settings.md lists every setting with its environment variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_has_a_row_in_the_settings_table(name: str) -> None:
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    assert any(f"`{name}`" in row and f"`CONVEYOR_{name.upper()}`" in row for row in rows)


def test_the_table_lists_no_setting_that_does_not_exist() -> None:
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| `")]
    documented = {row.split("`")[1] for row in rows}
    assert documented == set(Settings.model_fields)
