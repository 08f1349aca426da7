"""The gate table: criterion | run | value | threshold | status.

Built only from test reports (their ``user_properties``), never from items, so the table is
the same with and without ``-n``: under xdist the reports come back from the workers with
their properties, and only the controller prints.  The archive reuses these functions for
``summary.md``::

    records = collect_records(terminalreporter.stats)
    print(format_table(records))
    Path("summary.md").write_text(format_markdown(records))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

STATUSES = ("GREEN", "RED", "UNVERIFIED", "ERROR")
COLUMNS = ("criterion", "run", "value", "threshold", "status")
_PREFIX = "mlgates."
_MAX_CELL = 48
_WALK_CAP = 4096  # criterion names are never cut for display, but a name is not a book


def record_of(report: Any) -> dict[str, Any] | None:
    """The mlgates record a report carries, or None for a report of an ordinary test."""
    props = {}
    for pair in getattr(report, "user_properties", None) or ():
        try:
            name, value = pair
        except (TypeError, ValueError):
            continue
        if isinstance(name, str) and name.startswith(_PREFIX):
            props[name[len(_PREFIX):]] = value
    if "criterion" not in props or "status" not in props:
        return None
    record = {key: props.get(key) for key in ("criterion", "gate", "run", "value", "threshold",
                                               "status", "message")}
    record["nodeid"] = report.nodeid
    record["file"] = report.nodeid.split("::", 1)[0]
    return record


def collect_records(stats: Mapping[str, Iterable[Any]]) -> list[dict[str, Any]]:
    """One record per mlgates item from ``terminalreporter.stats``, in a stable order.

    Each record has ``criterion, gate, run, value, threshold, status, message, nodeid,
    file``.  An item reports several phases; the one that carries a status wins (a failure
    of a later phase overrides an earlier GREEN).
    """
    by_node: dict[str, dict[str, Any]] = {}
    for reports in stats.values():
        for report in reports:
            record = record_of(report)
            if record is None:
                continue
            previous = by_node.get(record["nodeid"])
            if previous is None or _rank(record["status"]) > _rank(previous["status"]):
                by_node[record["nodeid"]] = record
    return sorted(by_node.values(), key=_sort_key)


def _rank(status: Any) -> int:
    return {"GREEN": 0, "UNVERIFIED": 1, "RED": 2, "ERROR": 3}.get(str(status), 0)


def _sort_key(record: dict[str, Any]) -> tuple[str, str, str, str]:
    return (record["file"], str(record["criterion"]), str(record["run"] or ""), record["nodeid"])


def counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many records have each status, every status present (zeros included)."""
    found = Counter(str(r["status"]) for r in records)
    return {status: found.get(status, 0) for status in STATUSES}


def overall(records: list[dict[str, Any]]) -> str:
    """GREEN only when every record is GREEN; otherwise RED (UNVERIFIED/ERROR count as RED)."""
    return "GREEN" if records and all(r["status"] == "GREEN" for r in records) else "RED"


def _cell(value: Any, column: str) -> str:
    """A table cell on one line.  Criterion names are never cut (people search for them);
    a long run path keeps its end (the distinctive part), other cells their start."""
    # Cut before joining: a cell never walks more of a value than it could show.
    text = "-" if value is None or value == "" else " ".join(str(value)[:_WALK_CAP].split())
    if column == "criterion" or len(text) <= _MAX_CELL:
        return text
    if column == "run":
        return "..." + text[-(_MAX_CELL - 3):]
    return text[: _MAX_CELL - 3] + "..."


def _rows(records: list[dict[str, Any]]) -> list[list[str]]:
    return [[_cell(r.get(column), column) for column in COLUMNS] for r in records]


def counts_line(records: list[dict[str, Any]]) -> str:
    """``12 criteria: 10 GREEN, 1 RED, 1 UNVERIFIED, 0 ERROR``."""
    parts = ", ".join(f"{n} {status}" for status, n in counts(records).items())
    return f"{len(records)} criteria: {parts}"


def format_table(records: list[dict[str, Any]]) -> str:
    """A plain-text table, columns aligned, ending with the count line."""
    rows = _rows(records)
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)]

    def line(cells: Iterable[str]) -> str:
        return "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip()

    out = [line(COLUMNS), line("-" * w for w in widths)]
    out += [line(row) for row in rows]
    out.append(counts_line(records))
    return "\n".join(out)


def format_markdown(records: list[dict[str, Any]]) -> str:
    """A GitHub-flavoured Markdown table (for summary.md and $GITHUB_STEP_SUMMARY)."""
    def md(cell: str) -> str:
        return cell.replace("|", "\\|")

    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in _rows(records):
        row[-1] = f"**{row[-1]}**" if row[-1] in ("RED", "ERROR") else row[-1]
        out.append("| " + " | ".join(md(c) for c in row) + " |")
    out.append("")
    out.append(counts_line(records))
    return "\n".join(out) + "\n"
