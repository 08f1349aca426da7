"""What a session left out: the gate-file criteria ``-k``, ``-m``, ``--deselect`` or a
node id deselected, per run dir, so that the archive records the session as *partial*
(a partial GREEN never makes a run ACCEPTED).

The controller sees its own deselections (``pytest_deselected``); under xdist each worker
collects and deselects on its own, so a worker runs :class:`DeselectionReporter`, which
sends its list to the controller in ``workeroutput`` (``WORKER_KEY``), read back in the
archive plugin's ``pytest_testnodedown``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

__all__ = ["WORKER_KEY", "DeselectionReporter", "deselected_criteria"]

#: workeroutput key under which an xdist worker reports the criteria -k/-m left out
WORKER_KEY = "mlgates_deselected"


def deselected_criteria(items: Iterable[Any]) -> list[tuple[str, str]]:
    """(node id, run label) of every gate-file criterion among deselected items."""
    out = []
    for item in items:
        if getattr(item, "criterion", None) is None:
            continue
        run = getattr(item, "run", None)
        # an across_runs item stands for every run dir it judges
        for one in getattr(item, "runs", None) or ([run] if run is not None else []):
            out.append((str(item.nodeid), str(getattr(one, "label", one))))
    return out


class DeselectionReporter:
    """On an xdist worker: the criteria ``-k``/``-m``/``--deselect`` left out, sent to the
    controller in ``workeroutput`` so that a subset session is archived as partial."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.deselected: list[tuple[str, str]] = []

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += deselected_criteria(items)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        output = getattr(self.config, "workeroutput", None)
        if output is not None:
            output[WORKER_KEY] = [list(pair) for pair in self.deselected]
