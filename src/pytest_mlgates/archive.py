"""The RED/GREEN archive: evidence of every acceptance session, kept beside the run.

Every pytest session that ran acceptance items for a run dir (items carrying the
``mlgates.run`` user property) leaves, per run dir:

* one JSON line appended to ``<run>/acceptance/ledger.jsonl`` (verdict, fingerprint of
  the run's files, every criterion's status and value, what the session left out, the
  gate files and key-linked code it vouches for, pytest args, git commit; signed with
  HMAC-SHA256 when ``MLGATES_LEDGER_KEY`` is set -- ``ledger.py``);
* one directory ``<run>/acceptance/<UTC time>-<id>-red|green/`` holding ``log.txt`` (the
  terminal output), ``junit.xml``, ``results.json``, ``summary.md`` and ``report.html``
  (the gate table and the run's curves with the RED thresholds drawn: ``report_html.py``).

``mlgates verdict`` and ``mlgates history`` read them back (``verdict.py``, ``cli.py``).

Why it is built this way:

* Only the xdist controller writes (workers have ``config.workerinput``); the items'
  values reach it on the reports' ``user_properties``, as they do for pytest's junitxml.
* The run is fingerprinted before the first item (``pytest_runtestloop``) and again at the
  end; a run that changed in between (content, or inode/ctime: changed and put back) makes
  the session *void*: archived RED, never GREEN, and the session exits non-zero.  The
  first fingerprint reuses the digests of ``fingerprint-cache.json`` where the file's
  size, mtime, ctime, inode and device are unchanged (and old enough), the second those of
  the first; the cache is written back at the end (``fingerprint_cache.py``).
* A session that ran fewer criteria than its gate files hold (``-k``, ``-m``,
  ``--deselect``, a node id) is *partial*: a partial GREEN never makes a run ACCEPTED.
* Writes go through directory file descriptors and never follow a symlink
  (``archive_fs.py``): a session dir is written under a temporary name and renamed into
  place, and the ledger line is appended under a lock in one ``write``, then fsync'd.
* Everything happens at ``pytest_unconfigure``, after the terminal summary, so that
  ``log.txt`` holds the gate table and the final counts line.  Git runs only then.  A
  session that could not be archived says so in one line and exits non-zero.

This module is the plugin: its options and registration, and the hooks that gather the
items' reports and the session's fingerprints, then judge and write each run at the end.
The rest is elsewhere: the per-criterion records and the verdict (``archive_records.py``),
each run judged (``archive_judge.py``) and written (``archive_write.py``), the summary,
JUnit XML, names and git state (``archive_contents.py``), the ledger line (``ledger.py``),
the report page (``report_html.py``), the safe writes (``archive_fs.py``), and what an
xdist worker's ``-k``/``-m`` left out (``archive_partial.py``).  It is
imported by ``plugin.py`` lazily; it imports nothing heavy.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import secrets
from collections.abc import Generator
from pathlib import Path
from typing import Any, Literal

import pytest

from pytest_mlgates.archive_contents import git_state
from pytest_mlgates.archive_fs import ArchiveError, archive_location
from pytest_mlgates.archive_judge import GateFilePatterns, judge_run
from pytest_mlgates.archive_partial import WORKER_KEY, DeselectionReporter, deselected_criteria
from pytest_mlgates.archive_records import (
    PROP,
    CriterionRecord,
    RunOutcome,
    one_line,
    per_run_results,
)
from pytest_mlgates.archive_write import SessionFacts, archive_run
from pytest_mlgates.fingerprint import KnownDigests, Snapshot, preferred_algorithm, snapshot
from pytest_mlgates.ledger import LedgerKeyError, ledger_key

__all__ = ["add_options", "register"]

PLUGIN_NAME = "mlgates-archive"


# --------------------------------------------------------------------------- options


def add_options(group: Any) -> None:
    """Add ``--mlgates-archive``; ``plugin.py``'s ``pytest_addoption`` calls this.

    Safe to call twice (``-p pytest_mlgates.archive`` next to plugin.py's own call)."""
    try:
        group.addoption(
            "--mlgates-archive",
            dest="mlgates_archive",
            default="on",
            metavar="on|off|DIR",
            help="archive each acceptance session as RED/GREEN evidence: 'on' (default) "
            "writes <run>/acceptance/, 'off' writes nothing, DIR writes DIR/<run name>/.",
        )
    except ValueError:  # "option names already added": registered by the other caller
        pass


def pytest_addoption(parser: pytest.Parser) -> None:
    """This module is also a plugin of its own: ``pytest -p pytest_mlgates.archive``."""
    add_options(parser.getgroup("mlgates"))


def pytest_configure(config: pytest.Config) -> None:
    register(config)


def register(config: pytest.Config) -> None:
    """Register the archive plugin for this session; ``plugin.py``'s ``pytest_configure``
    calls this.  Does nothing on xdist workers, with ``--mlgates-archive=off``, or twice."""
    if config.pluginmanager.has_plugin(PLUGIN_NAME):
        return
    setting = str(config.getoption("mlgates_archive", default="on") or "on")
    if setting.lower() == "off":
        return
    if hasattr(config, "workerinput"):  # a worker only reports what -k/-m left out
        config.pluginmanager.register(DeselectionReporter(config), PLUGIN_NAME)
        return
    config.pluginmanager.register(ArchivePlugin(config), PLUGIN_NAME)


def archive_root(run_dir: Path, setting: str) -> Path:
    """The archive dir as one path (for messages)."""
    base, name = archive_location(run_dir, setting)
    return base / name


# --------------------------------------------------------------------------- plugin


class ArchivePlugin:
    """Collects acceptance reports on the controller and archives them per run dir."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.setting = str(config.getoption("mlgates_archive", default="on") or "on")
        self.records: dict[tuple[str, str], CriterionRecord] = {}
        self.deselected: set[tuple[str, str]] = set()  # (node id, run) left out by -k/-m
        self.collection_errors = 0
        self.gate_file_errors = 0
        self.interrupted = False
        self.exitstatus: int | None = None
        self.session: pytest.Session | None = None
        self.log = io.StringIO()
        self._teed = False
        self._planned: dict[str, RunOutcome] | None = None
        #: resolved run path -> its snapshot before the first item (or why there is none)
        self.before: dict[Path, Snapshot | str] = {}
        self.started = _dt.datetime.now(_dt.timezone.utc)
        #: one content hash for both fingerprints of the session and its ledger lines
        self.algorithm = preferred_algorithm()
        self.patterns = GateFilePatterns.of(config)

    # -- capture the terminal ----------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session
        self._tee_terminal()

    def _tee_terminal(self) -> None:
        """Copy everything the terminal reporter writes into ``self.log`` (the approach
        of pytest's own pastebin plugin): markup is applied inside ``write``, so the
        copy is plain text."""
        if self._teed:
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        writer = getattr(reporter, "_tw", None)
        if writer is None:
            return
        original = writer.write
        log = self.log

        def tee_write(text: str, **kwargs: Any) -> None:
            original(text, **kwargs)
            log.write(text if isinstance(text, str) else str(text))

        writer.write = tee_write
        self._teed = True

    # -- fingerprint before the first item -------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """Fingerprint every run dir before any item runs (under xdist, too: the
        controller's loop is what hands items to the workers)."""
        if not self.config.option.collectonly:
            key = self._cache_key()
            for path in sorted(set(self._run_paths().values())):
                known = None
                if key is not False:
                    from pytest_mlgates import fingerprint_cache

                    base, name = archive_location(path, self.setting)
                    known = fingerprint_cache.load(base, name, path, self.algorithm,
                                                   key if isinstance(key, bytes) else None)
                self.before[path] = self._snapshot(path, known)
        return (yield)

    @staticmethod
    def _cache_key() -> bytes | None | Literal[False]:
        """The key a cache must be signed with (None: no key set), or False when the key
        is set but unusable: then no cache is trusted (the ledger line says why)."""
        try:
            return ledger_key()
        except LedgerKeyError:
            return False

    def _snapshot(self, path: Path, known: KnownDigests | None = None) -> Snapshot | str:
        try:
            return snapshot(path, algorithm=self.algorithm, known=known)
        except OSError as err:
            return f"the run could not be fingerprinted: {err.strerror or err}"

    def _run_paths(self) -> dict[str, Path]:
        """Run label (what ``mlgates.run`` says) -> resolved path, for every run dir of
        this session (``--run-dir`` and the ini's ``mlgates_run_dirs``)."""
        from pytest_mlgates.items import get_settings

        try:
            runs = get_settings(self.config).run_dirs
        except (ValueError, KeyError):  # archive loaded without plugin.py: no --run-dir
            return {}
        return {run.label: Path(os.path.abspath(run.path)) for run in runs}

    # -- collect -------------------------------------------------------------------------

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected.update(deselected_criteria(items))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist: each worker collected the same items; any one's deselection counts."""
        for pair in (getattr(node, "workeroutput", None) or {}).get(WORKER_KEY, []):
            self.deselected.add((str(pair[0]), str(pair[1])))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = {name: value for name, value in report.user_properties if isinstance(name, str)}
        run = props.get(PROP + "run")
        if run is None:
            return
        per_run = per_run_results(props.get(PROP + "runs"))
        if per_run is None:
            per_run = {str(run): {}}
        for label, own in per_run.items():
            # an across_runs item: its outcome goes into every run's ledger, with the run's
            # own value and line
            key = (report.nodeid, label)
            record = self.records.get(key)
            if record is None:
                record = self.records[key] = CriterionRecord(id=report.nodeid, run=label)
            record.update(report)
            if own:
                record.props["run"] = label
                record.props["run_status"] = own.get("status")
                for name in ("value", "threshold"):
                    record.props[name] = own.get(name)
                record.props["message"] = (f"{label}: {own.get('status')}"
                                           f" ({own.get('message')}); the set: "
                                           f"{record.props.get('message')}")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collection_errors += 1
            if self.patterns.is_gate_file(report.nodeid):
                self.gate_file_errors += 1

    def pytest_keyboard_interrupt(self) -> None:
        self.interrupted = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.exitstatus = int(exitstatus)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Name the archive dirs in the terminal (and so in log.txt) before writing."""
        plans = self._plan()
        if not plans:
            return
        terminalreporter.write_sep("-", "mlgates archive")
        for run, outcome in plans.items():
            note = ""
            if outcome.void:
                note = f" (void: {outcome.void})"
            elif outcome.partial_reasons:
                note = (f" (partial: {'; '.join(outcome.partial_reasons)}; a partial session "
                        "never makes the run ACCEPTED)")
            where = archive_root(outcome.path, self.setting) / outcome.dir_name
            terminalreporter.write_line(f"{outcome.verdict}: {run} -> {where}{note}")

    # -- judge -----------------------------------------------------------------------------

    def _runs(self) -> dict[str, list[CriterionRecord]]:
        runs: dict[str, list[CriterionRecord]] = {}
        for record in self.records.values():
            runs.setdefault(record.run, []).append(record)
        if self.gate_file_errors:
            # A gate file that did not even collect is a RED session for every run dir it
            # was meant for: otherwise an older GREEN line would still say ACCEPTED.
            for value in getattr(self.config.option, "mlgates_run_dirs", None) or []:
                runs.setdefault(str(value).rstrip("/\\") or str(value), [])
        return runs

    def _complete(self) -> bool:
        return not self.interrupted and self.collection_errors == 0 and self.exitstatus in (
            None,
            int(pytest.ExitCode.OK),
            int(pytest.ExitCode.TESTS_FAILED),
        )

    def _plan(self) -> dict[str, RunOutcome]:
        """Judge each run once (the terminal line and the archive say the same): the end
        fingerprint, what was left out, the gate files and key-linked code."""
        if self._planned is None:
            self._planned = {}
            now = _dt.datetime.now(_dt.timezone.utc)
            scopes: dict[str, Any] = {}
            node_ids = [str(a) for a in self.config.args if "::" in str(a)]
            for run, records in sorted(self._runs().items()):
                path = self._run_path(run)
                self._planned[run] = judge_run(
                    run, records, path=path, before=self.before.get(path), snapshot=self._snapshot,
                    deselected=sum(1 for _, r in self.deselected if r == run), node_ids=node_ids,
                    root=Path(str(self.config.rootpath)), patterns=self.patterns,
                    complete=self._complete(), now=now, uid=self._uid(), scopes=scopes)
        return self._planned

    def _uid(self) -> str:
        uid = os.environ.get("PYTEST_XDIST_TESTRUNUID") or ""
        return (uid[:6] + secrets.token_hex(2)) if uid else secrets.token_hex(4)

    def _run_path(self, run: str) -> Path:
        known = self._run_paths().get(run)
        if known is not None:
            return known
        path = Path(run).expanduser()
        if not path.is_absolute():
            path = Path(self.config.invocation_params.dir) / path
        return Path(os.path.abspath(path))

    # -- write ---------------------------------------------------------------------------

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        plans = self._plan()
        if not plans:
            return
        lines: list[str] = []
        try:
            key = ledger_key()
        except LedgerKeyError as err:
            key = None
            lines.append(f"mlgates: warning: {err}; ledger lines are not signed")
        git = git_state(Path(str(config.rootpath)))
        session = SessionFacts(
            config=self.config, setting=self.setting, started=self.started, log_text=self.log.getvalue(),
            complete=self._complete(), collection_errors=self.collection_errors, exitstatus=self.exitstatus,
            algorithm=self.algorithm, runs=len(plans), patterns=self.patterns,
            cache_trusted=self._cache_key() is not False)
        failed = False
        for run, outcome in plans.items():
            try:
                archive_run(outcome, session, git, key)
            except (ArchiveError, OSError, ValueError) as err:
                failed = True
                lines.append(f"mlgates: could not archive {run}: {one_line(str(err))}")
        self._say(lines)
        if failed or any(outcome.void for outcome in plans.values()):
            self._fail_session()

    def _say(self, lines: list[str]) -> None:
        if not lines:
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        for line in lines:
            if reporter is not None:
                reporter.write_line(line)
            else:
                import sys

                print(line, file=sys.stderr)

    def _fail_session(self) -> None:
        """Evidence that could not be kept (or is void) is a failed session, as
        pytest-cov's --cov-fail-under is: exit 1 unless it was already non-zero."""
        session = self.session
        if session is not None and int(session.exitstatus) == int(pytest.ExitCode.OK):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

