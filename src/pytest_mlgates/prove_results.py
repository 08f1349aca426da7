"""What ``mlgates prove``'s pytest subprocess loads: the status of every gate item, as JSON.

``prove`` runs the gate files on its run copies in a pytest subprocess started with
``-p pytest_mlgates.prove_results --mlgates-prove-results=<work>/batch-N.json``.  When the
session ends, the controller (never an xdist worker) writes there one record per gate
item, built from the reports' ``user_properties`` by :func:`pytest_mlgates.summary.collect_records`
(the same aggregator as the terminal table and the archive)::

    [{"run": "/tmp/mlgates-prove-x1/t0-m3", "criterion": "no_nan", "status": "RED"}, ...]

The status is the item's ``mlgates.status`` corrected by how its reports ended: a failed
call whose status is not RED, ERROR or UNVERIFIED counts RED (the item turned GREEN, then
something failed it); a failed setup or teardown is ERROR; a skipped item keeps UNVERIFIED,
else it is SKIPPED; a passing item keeps its status (GREEN when it has none).  Items without
an mlgates criterion and run (ordinary tests) are left out.

The file is written whole (temp file, fsync, rename: ``ArchiveDir.write_file``), so
``prove`` never reads half of it; when it cannot be written, one line on stderr says why
and ``prove`` reports the missing result.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

OPTION = "--mlgates-prove-results"

# how an item's reports ended, weakest first: a failed call wins over a failed
# setup/teardown, which wins over a skip
_ENDINGS = ("passed", "skipped", "error", "failure")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlgates", "pytest-mlgates: exit criteria of ML training runs")
    group.addoption(
        OPTION, dest="mlgates_prove_results", metavar="PATH", default=None,
        help="(for mlgates prove) write each gate item's run, criterion and status to PATH "
             "as JSON when the session ends",
    )


def pytest_configure(config: pytest.Config) -> None:
    value = config.getoption("mlgates_prove_results", None)
    if value and not hasattr(config, "workerinput"):  # the controller gets every report
        path = Path(config.invocation_params.dir, value)
        config.pluginmanager.register(ProveResults(path), "mlgates-prove-results")


def statuses(reports: Iterable[Any]) -> list[dict[str, str]]:
    """One ``{"run", "criterion", "status"}`` per gate item among ``reports`` (every phase
    of every item), in ``collect_records``' order."""
    from pytest_mlgates.summary import collect_records

    reports = list(reports)
    ending: dict[str, str] = {}
    for report in reports:
        if report.failed:
            end = "failure" if report.when == "call" else "error"
        elif report.skipped:
            end = "skipped"
        else:
            end = "passed"
        nodeid = report.nodeid
        if _ENDINGS.index(end) > _ENDINGS.index(ending.get(nodeid, "passed")):
            ending[nodeid] = end
    out = []
    for record in collect_records({"": reports}):
        run, criterion, status = record["run"], record["criterion"], record["status"]
        if not run or not criterion:
            continue
        end = ending.get(record["nodeid"], "passed")
        if end == "failure":
            status = status if status in ("RED", "ERROR", "UNVERIFIED") else "RED"
        elif end == "error":
            status = "ERROR"
        elif end == "skipped":
            status = status if status == "UNVERIFIED" else "SKIPPED"
        out.append({"run": str(run), "criterion": str(criterion), "status": str(status or "GREEN")})
    return out


class ProveResults:
    """Keeps the session's test reports; writes their statuses to ``path`` at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reports: list[pytest.TestReport] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports.append(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from pytest_mlgates.archive_fs import ArchiveDir, ArchiveError

        text = json.dumps(statuses(self.reports), indent=1)
        path = Path(os.path.abspath(self.path))
        base, name = (path.parent.parent, path.parent.name) if path.parent.name else (path.parent, ".")
        try:
            folder = ArchiveDir.open(base, name, create=True)
            assert folder is not None  # create=True: made or an error
            with folder:
                folder.write_file(path.name, text)
        except ArchiveError as err:
            print(f"mlgates: prove results not written: {err}", file=sys.stderr)
