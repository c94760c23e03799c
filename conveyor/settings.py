"""The settings of a queue and its workers. Each value comes, first found, from: the keyword
argument given to ``Queue``; the environment variable ``<QUEUE NAME>_<SETTING>`` for a named
queue; the environment variable ``CONVEYOR_<SETTING>``; the default written here.

This module is light: the settings class, :class:`Settings`, is a pydantic-settings model that
costs its import about 70 ms, so it lives in :mod:`conveyor.settings_model` and is imported
when first asked for (``conveyor.settings.Settings``, or building a ``Queue``), never by
``import conveyor``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.defaults import (
    ALLOWED,
    DEFAULT_FILE_MODE,
    DEFAULT_GRACEFUL_TIMEOUT,
    DEFAULT_LEASE,
    DEFAULT_PREFETCH,
    check_module_pattern,
)

if TYPE_CHECKING:
    from conveyor.settings_model import Settings

__all__ = [
    "ALLOWED",
    "DEFAULT_FILE_MODE",
    "DEFAULT_GRACEFUL_TIMEOUT",
    "DEFAULT_LEASE",
    "DEFAULT_PREFETCH",
    "Settings",
    "check_module_pattern",
    "load_settings",
]


def load_settings(name: str, given: dict[str, Any]) -> Settings:
    """The settings of the queue ``name``, ``given`` first; pydantic-settings is imported
    here, not by ``import conveyor``."""
    from conveyor.settings_model import Settings

    return Settings.load(name, **given)


def __getattr__(name: str) -> Any:
    """``Settings`` is imported on first use (pydantic-settings is slow to import)."""
    if name == "Settings":
        from conveyor.settings_model import Settings

        return Settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
