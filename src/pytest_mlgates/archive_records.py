"""What a session's items said, per run dir: one record per criterion, and the verdict.

The archive plugin merges each item's setup/call/teardown reports into one
:class:`CriterionRecord` (its ``mlgates.*`` user properties, outcome and failure text,
capped), then decides per run dir a :class:`RunOutcome` before anything is written::

    >>> record = CriterionRecord("acceptance/default.gates.yaml::val_loss_decreases[runs/x]", "runs/x")
    >>> record.update(report)            # each of the item's reports, as pytest sends them
    >>> session_verdict([record.as_dict()])
    'GREEN'

Plain data and pure functions: nothing here writes a file or runs git.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_mlgates.fingerprint import Snapshot
from pytest_mlgates.ledger import STATUSES

__all__ = ["CriterionRecord", "RunOutcome", "count_statuses", "named", "session_verdict"]

#: The prefix of the items' user properties the archive keeps (``mlgates.status``, ...).
PROP = "mlgates."
#: Longest value, threshold or message kept per criterion (a gate's value is one line).
TEXT_CAP = 2000
#: Longest failure text kept for junit.xml per criterion.
DETAIL_CAP = 64 << 10
#: Entries named in a one-line reason before "and N more".
NAMED_CAP = 5


@dataclass
class CriterionRecord:
    """One acceptance item, merged over its setup/call/teardown reports."""

    id: str
    run: str
    props: dict[str, Any] = field(default_factory=dict)
    outcome: str = "passed"  # passed | failed | skipped | error
    duration: float = 0.0
    longrepr: str = ""
    detail: str = ""

    def update(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if isinstance(name, str) and name.startswith(PROP):
                self.props[name[len(PROP) :]] = value
        self.duration += float(getattr(report, "duration", 0.0) or 0.0)
        if report.failed:
            self.outcome = "failed" if report.when == "call" else "error"
            text = str(report.longrepr)
            self.longrepr = capped(one_line(text[-DETAIL_CAP:]), TEXT_CAP)
            self.detail = capped(text, DETAIL_CAP)
        elif report.skipped and self.outcome == "passed":
            self.outcome = "skipped"
            self.longrepr = capped(_skip_reason(report), TEXT_CAP)

    @property
    def criterion(self) -> str:
        return _text(self.props.get("criterion")) or self.id.rsplit("::", 1)[-1]

    @property
    def status(self) -> str:
        """GREEN only for an item that passed and did not call itself UNVERIFIED."""
        said = str(self.props.get("status") or "").upper()
        if self.outcome == "error":
            return "ERROR"
        if said == "UNVERIFIED":
            return "UNVERIFIED"
        if self.outcome == "skipped":
            return "SKIPPED"
        if self.outcome == "failed":
            return said if said in ("RED", "ERROR") else "RED"
        return "GREEN"

    def as_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "name": self.criterion,
            "gate": _text(self.props.get("gate")),
            "status": self.status,
            "value": _text(self.props.get("value")),
            "threshold": _text(self.props.get("threshold")),
            "message": _text(self.props.get("message")) or self.longrepr or None,
            "duration": round(self.duration, 6),
        }
        if self.props.get("run_status"):  # across_runs: this run's own status in the set
            out["run_status"] = _text(self.props["run_status"])
        return out


def per_run_results(text: Any) -> dict[str, dict[str, Any]] | None:
    """The ``mlgates.runs`` property of an across_runs item: run label -> its own
    ``{status, value, threshold, message}`` (None when absent or unreadable)."""
    if not isinstance(text, str):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not data:
        return None
    return {str(k): (v if isinstance(v, dict) else {}) for k, v in data.items()}


def capped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(value: Any) -> str | None:
    """A property value as the text the archive keeps, capped: a value is one line."""
    return None if value is None else capped(str(value), TEXT_CAP)


def one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return one_line(str(longrepr)[-DETAIL_CAP:])


def session_verdict(criteria: Iterable[dict[str, Any]], *, complete: bool = True) -> str:
    """GREEN when every criterion is GREEN (none skipped, UNVERIFIED or errored)."""
    statuses = [c["status"] for c in criteria]
    return "GREEN" if complete and statuses and all(s == "GREEN" for s in statuses) else "RED"


def count_statuses(criteria: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    total = 0
    for criterion in criteria:
        counts[criterion["status"]] = counts.get(criterion["status"], 0) + 1
        total += 1
    counts["total"] = total
    return counts


def named(items: list[str], cap: int = NAMED_CAP) -> str:
    """``a, b, c and 4 more``: a one-line list that stays short however many there are."""
    shown = ", ".join(items[:cap])
    return shown + (f" and {len(items) - cap} more" if len(items) > cap else "")


@dataclass
class RunOutcome:
    """What one session decided about one run dir, before anything is written."""

    run: str
    path: Path
    records: list[CriterionRecord]
    verdict: str
    dir_name: str
    snapshot: Snapshot | None
    void: str | None
    partial_reasons: list[str]
    deselected: int
    gate_files: dict[str, str]
    code_files: dict[str, str]
