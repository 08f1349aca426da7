"""What the preflight suite and its checks share: how a check ends, what it may ask of the suite.

A check (``preflight_data.py``, ``preflight_model.py``) is a function of a :class:`Suite`
that returns its one-line message when it passes, raises :class:`CheckFailed` (what was
measured, where, what was needed) when it does not, and :class:`CheckSkipped` (naming the
field it needs) when the subject cannot feed it.  :class:`Suite` is the part of
``preflight_checks.PreflightSuite`` a check may use; it lives here so that the checks never
import the suite that runs them.

Nothing heavy is imported: ``preflight.py`` reads ``CHECK_ORDER`` without torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

__all__ = ["CheckFailed", "CheckSkipped", "Suite", "closest", "first", "gist"]


class CheckFailed(Exception):
    """A preflight check that did not hold; ``str()`` is the one line a user reads."""


class CheckSkipped(Exception):
    """A check that does not apply (an image probe on tabular data, a field not given)."""


class Suite(Protocol):
    """The preflight suite as a check sees it: the subject, what the loader scan kept, and
    the subject's parts built the same way for every check."""

    subject: Any
    #: seconds each batch of a loader may take
    timeout: float
    #: where training would write (``--run-dir``), else None: the subject's ``run_dir``
    run_dir: Path | None
    #: split -> what one pass over its loader found (``preflight_data.SplitScan``)
    scans: dict[str, Any]
    #: split -> its first batches, as the loader gave them
    kept: dict[str, list[tuple[Any, Any]]]

    @property
    def label(self) -> str: ...

    def new_model(self) -> Any: ...

    def first_batches(self, split: str = "train") -> list[tuple[Any, Any]]: ...

    def first_batch(self, split: str = "train") -> tuple[Any, Any]: ...

    def loss(self, logits: Any, y: Any) -> Any: ...

    def forward(self, model: Any, x: Any) -> Any: ...


def first(items: Iterable[Any], n: int = 5) -> str:
    """The first ``n`` items as ``[a, b, ...]``: where a message shows positions or ids."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"


def closest(name: str, choices: list[str]) -> str:
    """``; did you mean 'x'?`` for a misspelt name, else nothing."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def gist(exc: BaseException, limit: int = 200) -> str:
    """The user's exception as one line of at most ``limit`` characters."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
