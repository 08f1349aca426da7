"""One run's evidence of an acceptance session, written: its session dir and its ledger line.

:func:`archive_run` takes a run's :class:`~pytest_mlgates.archive_records.RunOutcome`
(judged by ``archive_judge.py``) and the :class:`SessionFacts` every run of the session
shares, and writes ``<run>/acceptance/<session dir>/`` (``log.txt``, ``junit.xml``,
``results.json``, ``summary.md``, ``report.html``) and one ledger line, through the
directory file descriptors of ``archive_fs.py``; then the fingerprint cache and, on
GitHub Actions, the step summary.  ``report.html`` draws the curves from the log the
session's items opened when there is one (not under xdist), else reads it again the way
the gate file's ``run:`` section says; a page that cannot be drawn says why and never
keeps the evidence from being written.  Nothing heavy is imported.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_mlgates.archive_contents import SUMMARY_CAP, format_markdown, iso_time, junit_xml
from pytest_mlgates.archive_fs import ArchiveError, archive_location
from pytest_mlgates.archive_judge import GateFilePatterns
from pytest_mlgates.archive_records import RunOutcome, count_statuses, one_line
from pytest_mlgates.ledger import LEDGER_FORMAT, LEDGER_NAME, encode_line

__all__ = ["SessionFacts", "archive_run"]


@dataclass(frozen=True)
class SessionFacts:
    """What the whole session contributes to each run's evidence."""

    config: pytest.Config
    #: ``--mlgates-archive``: ``on`` or a directory
    setting: str
    started: _dt.datetime
    #: the terminal output so far (``log.txt``)
    log_text: str
    #: no interruption, no collection error, an ordinary exit status
    complete: bool
    collection_errors: int
    exitstatus: int | None
    #: the content hash of the session's fingerprints
    algorithm: str
    #: how many runs this session archives (they share the summary's size cap)
    runs: int
    patterns: GateFilePatterns
    #: the fingerprint cache may be written (no ledger key set, or a usable one)
    cache_trusted: bool


def archive_run(outcome: RunOutcome, session: SessionFacts, git: dict[str, Any] | None,
                key: bytes | None) -> None:
    """Write one run's evidence: its session dir (under a temporary name, renamed into
    place) and its ledger line, then the fingerprint cache and the CI step summary."""
    import pytest_mlgates
    from pytest_mlgates.archive_fs import ArchiveDir

    criteria = [r.as_dict() for r in outcome.records]
    counts = count_statuses(criteria)
    counts["collection_errors"] = session.collection_errors
    counts["deselected"] = outcome.deselected
    snap = outcome.snapshot
    now = _dt.datetime.now(_dt.timezone.utc)
    results = {
        "run": outcome.run,
        "run_path": str(outcome.path),
        "time": iso_time(now),
        "started": iso_time(session.started),
        "verdict": outcome.verdict,
        "complete": session.complete,
        "partial": bool(outcome.partial_reasons),
        "partial_reasons": outcome.partial_reasons,
        "void": outcome.void,
        "counts": counts,
        "fingerprint": snap.digest if snap else None,
        "criteria": criteria,
    }
    summary = format_markdown(outcome.run, outcome.verdict, criteria,
                              limit=SUMMARY_CAP // max(1, session.runs))
    contents = {
        "log.txt": session.log_text or "(no terminal output was captured)\n",
        "junit.xml": junit_xml(outcome.records, session.started, now),
        "results.json": json.dumps(results, indent=2) + "\n",
        "summary.md": summary,
        "report.html": _report_html(outcome, results, session),
    }
    base, name = archive_location(outcome.path, session.setting)
    if base != outcome.path:  # --mlgates-archive=DIR: the user's own directory
        base.mkdir(parents=True, exist_ok=True)
    archive = ArchiveDir.open(base, name, create=True)
    if archive is None:
        raise ArchiveError(f"{base / name}: vanished while archiving")
    with archive, archive.ledger(LEDGER_NAME) as append:
        final = archive.write_session(outcome.dir_name, contents)
        line = {
            "format": LEDGER_FORMAT,
            "time": iso_time(now),
            "verdict": outcome.verdict,
            "run": outcome.run,
            "fingerprint": snap.digest if snap else None,
            "fingerprint_hash": snap.algorithm if snap else session.algorithm,
            "files": snap.files if snap else {},
            "criteria": [
                {k: c[k] for k in ("id", "name", "gate", "status", "value", "threshold")}
                for c in criteria
            ],
            "counts": counts,
            "partial": bool(outcome.partial_reasons),
            "partial_reasons": outcome.partial_reasons,
            "void": outcome.void,
            "gate_files": outcome.gate_files,
            "code_files": outcome.code_files,
            "rootdir": str(session.config.rootpath),
            "pytest_args": [str(a) for a in session.config.invocation_params.args],
            "plugin_version": str(pytest_mlgates.__version__),
            "git": git,
            "archive_dir": final,
            "exitstatus": session.exitstatus,
        }
        append(encode_line(line, key))
    if snap is not None and session.cache_trusted:
        from pytest_mlgates import fingerprint_cache

        fingerprint_cache.save(base, name, outcome.path, snap, key)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(summary + "\n")


def _report_html(outcome: RunOutcome, results: dict[str, Any], session: SessionFacts) -> str:
    """The session's ``report.html`` (``report_html.py``); a page that cannot be drawn
    says why, and never keeps the evidence from being archived."""
    from pytest_mlgates import report_html

    notes = list(outcome.partial_reasons)
    if outcome.void:
        notes.insert(0, f"void: {outcome.void}")
    try:
        section = _run_section(outcome, session)
        log = _opened_log(session.config, outcome.path, section)
        problem = None
        columns: report_html.Curves | None
        if log is not None:
            columns, index = report_html.log_curves(log)
        else:
            columns, index, problem = report_html.load_columns(
                outcome.path, _run_format(session.config), section)
        snap = outcome.snapshot
        return report_html.render_report(
            run=outcome.run, verdict=outcome.verdict, criteria=results["criteria"],
            fingerprint=snap.digest if snap else None,
            algorithm=snap.algorithm if snap else None, time=str(results["time"]),
            notes=notes, columns=columns, log_problem=problem, index=index)
    except Exception as err:  # noqa: BLE001 - the ledger line matters more than the page
        import html

        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<title>mlgates report</title></head><body><p>The report could not be "
                f"drawn: {html.escape(one_line(f'{type(err).__name__}: {err}'))}</p>"
                "</body></html>\n")


def _opened_log(config: pytest.Config, path: Path, section: Any) -> Any:
    """The log of the run as this process's items opened it (not under xdist:
    the controller ran no item), so a long log is not parsed twice."""
    from pytest_mlgates.items import get_settings
    from pytest_mlgates.rundir import Run

    try:
        opened = list(get_settings(config).runs.items())
    except (ValueError, KeyError):
        return None
    for (where, opened_section), run in opened:
        if (isinstance(run, Run) and opened_section == section
                and Path(os.path.abspath(where)) == path):
            return run.log
    return None


def _run_format(config: pytest.Config) -> str | None:
    from pytest_mlgates.items import get_settings

    try:
        return get_settings(config).run_format
    except (ValueError, KeyError):
        return None


def _run_section(outcome: RunOutcome, session: SessionFacts) -> Any:
    """The ``run:`` section of the first gate file (of this run's criteria) that has
    one: how the criteria read the run, so the curves are the same numbers.  Under
    xdist the controller collected nothing, so the file is parsed here."""
    from pytest_mlgates.collect import parse_gate_file

    root = Path(str(session.config.rootpath))
    for rel in sorted({r.id.split("::", 1)[0] for r in outcome.records}):
        if not session.patterns.is_gate_file(rel):
            continue
        try:
            document = parse_gate_file(root / rel, plan=session.patterns.is_plan(rel))
        except Exception:  # noqa: BLE001, S112 - a gate file that does not parse has no section
            continue
        if document is not None and document.run is not None:
            return document.run
    return None
