"""tqdm progress bars for ``wait(progress=True)`` and ``map(progress=True)``."""

from __future__ import annotations

from typing import Any

from conveyor.errors import MissingExtra


def progress_bar(total: int, desc: str) -> Any:
    """A tqdm bar of ``total`` jobs; raises MissingExtra naming the extra when tqdm is absent."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise MissingExtra("tqdm", "progress", "progress=True") from None
    return tqdm(total=total, desc=desc, unit="job", dynamic_ncols=True)
