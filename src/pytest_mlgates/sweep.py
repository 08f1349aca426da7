"""Sweeps under xdist: one run dir's items stay on one worker.

``pytest acceptance/ --run-dir r1 ... --run-dir r8 -n 2`` used to be slower than the same
session without ``-n`` (0.76x).  Items are collected criterion by criterion (``finite_log``
of every run, then ``log_complete`` of every run, ...), and xdist's default ``load``
scheduler deals them out one at a time, round robin.  So every worker judged a few
criteria of *every* run: each worker parsed every run's log, built every run's
``mlgates_subject`` (the user's data) and loaded every run's checkpoints -- all of the
per-run work done once per worker instead of once -- on top of what every worker pays
anyway (starting Python, collecting, importing torch and the user's code).

:class:`RunScheduling` is xdist's ``loadscope`` scheduler with one change: an item's
scope is the run dir it judges (the ``[label]`` every gate item and every test that uses
the ``run`` fixture ends with), so a run's items go to one worker together, and each
worker opens only the runs it was given.  Items without a run dir are scheduled one by
one, as ``load`` would.

It is used when pytest-xdist's ``--dist`` is ``load`` (what ``-n`` means unless told
otherwise) and the session has at least as many run dirs as workers: with fewer, whole
runs would leave workers idle, and splitting one run's items is the better trade.  Any
other ``--dist`` the user chose (``loadscope``, ``loadfile``, ``loadgroup``,
``worksteal``, ``each``) is left alone.

This module imports xdist; ``plugin.py`` imports it only from xdist's own hook.
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling


def wanted(config: pytest.Config) -> bool:
    """Whether this session's items should be grouped by run dir (see the module doc)."""
    from pytest_mlgates.items import get_settings

    if config.getvalue("dist") != "load":
        return False
    workers = _worker_count(config)
    runs = len(get_settings(config).run_dirs)
    return runs >= 2 and workers >= 2 and runs >= workers


def _worker_count(config: pytest.Config) -> int:
    from xdist.workermanage import parse_tx_spec_config

    try:
        return len(parse_tx_spec_config(config))
    except Exception:  # noqa: BLE001 - an unusual --tx spec: let xdist's default decide
        return 0


class RunScheduling(LoadScopeScheduling):
    """``loadscope`` whose scope is an item's run dir (``...[<run label>]``)."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        from pytest_mlgates.items import get_settings

        super().__init__(config, log)
        # longest first: a label that ends another label ("b" and "runs/b") matches whole
        self._suffixes = sorted((f"[{run.label}]" for run in get_settings(config).run_dirs),
                                key=len, reverse=True)
        self._scopes: dict[str, str] = {}

    def _split_scope(self, nodeid: str) -> str:
        scope = self._scopes.get(nodeid)
        if scope is None:
            scope = next((suffix for suffix in self._suffixes if nodeid.endswith(suffix)),
                         nodeid)
            self._scopes[nodeid] = scope
        return scope
