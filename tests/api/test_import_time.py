"""``import conveyor`` stays light: pydantic and pydantic-settings (most of its former 0.26 s)
are imported only when a queue is built and needs its settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("pydantic", "pydantic_core", "pydantic_settings")


def imported_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules = eval(done.stdout.strip().splitlines()[-1])  # a list of module names
    return [name for name in modules if name.split(".")[0] in HEAVY]


@pytest.mark.parametrize(
    "code",
    ["import conveyor", "import conveyor.cli", "from conveyor.settings import DEFAULT_LEASE"],
)
def test_importing_conveyor_does_not_import_pydantic(code: str) -> None:
    assert imported_after(code) == []


def test_building_a_queue_loads_the_settings() -> None:
    loaded = imported_after("import conveyor\nconveyor.Queue(workers=0, lease=5).close()")
    assert "pydantic_settings" in loaded


def test_the_settings_class_is_still_found_where_it_was() -> None:
    from conveyor.settings import Settings
    from conveyor.settings_model import Settings as Model

    assert Settings is Model
    assert Settings.load(lease=5).lease == 5
