"""One mutation of a run copy (:class:`Mutation`), why one could not be applied
(:class:`MutationError`), and :func:`combine`: what the log editors
(``_log_editors.py``), the file mutations (``_file_mutations.py``) and the gate map
(``_mutations.py``) share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Mutation", "MutationError", "combine"]


class MutationError(Exception):
    """A mutation that could not be applied to the copy: reported, never a defect."""


@dataclass(frozen=True)
class Mutation:
    """One change to a run copy; ``key`` identifies it so one mutated copy serves every
    criterion that asks for the same change."""

    key: str
    description: str
    apply: Callable[[Path], None] = field(compare=False, hash=False)


def combine(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    """A mutation that applies ``steps`` in order."""
    def apply(run: Path) -> None:
        for step in steps:
            step(run)

    return apply
