"""The RED/GREEN archive: evidence of every acceptance session, kept beside the run.

Every pytest session that ran acceptance items for a run dir (items carrying the
``mlgates.run`` user property) leaves, per run dir:

* one JSON line appended to ``<run>/acceptance/ledger.jsonl`` (verdict, fingerprint of
  the run's files, every criterion's status and value, pytest args, git commit);
* one directory ``<run>/acceptance/<UTC time>-<id>-red|green/`` holding ``log.txt`` (the
  terminal output), ``junit.xml``, ``results.json`` and ``summary.md``.

``mlgates verdict`` and ``mlgates history`` read them back (``cli.py``).

Why it is built this way:

* Only the xdist controller writes (workers have ``config.workerinput``); the items'
  values reach it on the reports' ``user_properties``, as they do for pytest's junitxml.
* An archive dir is written under a temporary name and renamed into place, so a reader
  never sees half of one; the ledger line is written after it, in one ``os.write`` with
  ``O_APPEND`` under a file lock, then fsync'd: concurrent sessions lose no line, and a
  killed one leaves at most a torn tail that readers skip (``read_ledger``).
* Everything happens at ``pytest_unconfigure``, after the terminal summary, so that
  ``log.txt`` holds the gate table and the final counts line.  Git runs only then.

This module is imported by ``plugin.py`` lazily; it imports nothing heavy.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_mlgates.fingerprint import ARCHIVE_DIRNAME, file_sha256, fingerprint

LEDGER_NAME = "ledger.jsonl"
PLUGIN_NAME = "mlgates-archive"
#: workeroutput key under which an xdist worker reports the criteria -k/-m left out
WORKER_KEY = "mlgates_deselected"
PROP = "mlgates."
STATUSES = ("GREEN", "RED", "UNVERIFIED", "ERROR", "SKIPPED")
_GIT_TIMEOUT_S = 5.0
_LOCK_TIMEOUT_S = 120.0


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


def deselected_criteria(items: Iterable[Any]) -> list[tuple[str, str]]:
    """(node id, run label) of every gate-file criterion among deselected items."""
    out = []
    for item in items:
        run = getattr(item, "run", None)
        if getattr(item, "criterion", None) is not None and run is not None:
            out.append((str(item.nodeid), str(getattr(run, "label", run))))
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


def archive_root(run_dir: Path, setting: str) -> Path:
    """Where a run's archive lives: ``<run>/acceptance`` or ``DIR/<run name>``."""
    if setting.lower() in ("on", ""):
        return run_dir / ARCHIVE_DIRNAME
    return Path(setting).expanduser().resolve() / run_dir.name


# --------------------------------------------------------------------------- records


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
            self.longrepr = _one_line(str(report.longrepr))
            self.detail = str(report.longrepr)
        elif report.skipped and self.outcome == "passed":
            self.outcome = "skipped"
            self.longrepr = _skip_reason(report)

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
        return {
            "id": self.id,
            "name": _text(self.props.get("criterion")) or self.id.rsplit("::", 1)[-1],
            "gate": _text(self.props.get("gate")),
            "status": self.status,
            "value": _text(self.props.get("value")),
            "threshold": _text(self.props.get("threshold")),
            "message": _text(self.props.get("message")) or self.longrepr or None,
            "duration": round(self.duration, 6),
        }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return _one_line(str(longrepr))


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
        self.log = io.StringIO()
        self._teed = False
        self._planned: dict[str, tuple[Path, str]] | None = None
        self.started = _dt.datetime.now(_dt.timezone.utc)

    # -- capture the terminal ----------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
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
        key = (report.nodeid, str(run))
        record = self.records.get(key)
        if record is None:
            record = self.records[key] = CriterionRecord(id=report.nodeid, run=str(run))
        record.update(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collection_errors += 1
            if self._is_gate_file(report.nodeid):
                self.gate_file_errors += 1

    def _is_gate_file(self, nodeid: str) -> bool:
        from fnmatch import fnmatch

        name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
        patterns = ["*.gates.yaml", "*.gates.yml", "*-PLAN.md"]
        for ini in ("mlgates_gate_patterns", "mlgates_plan_patterns"):
            try:
                patterns += list(self.config.getini(ini))
            except (ValueError, KeyError):
                pass
        return any(fnmatch(name, pattern) for pattern in patterns)

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
        for run, (root, name) in plans.items():
            verdict = "GREEN" if name.endswith("-green") else "RED"
            left_out = sum(1 for _, r in self.deselected if r == run)
            note = (f" (partial: {left_out} criteria deselected; mlgates verdict counts a partial "
                    "session only when it is RED)") if left_out else ""
            terminalreporter.write_line(f"{verdict}: {run} -> {root / name}{note}")

    # -- write ---------------------------------------------------------------------------

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

    def _plan(self) -> dict[str, tuple[Path, str]]:
        """Choose each run's archive root and dir name once (terminal line == dir)."""
        if self._planned is None:
            self._planned = {}
            now = _dt.datetime.now(_dt.timezone.utc)
            for run, records in sorted(self._runs().items()):
                criteria = [r.as_dict() for r in records]
                # a partial session is judged on what it ran: its GREEN proves only those
                # criteria, and `mlgates verdict` does not count it (its RED does count)
                verdict = session_verdict(criteria, complete=self._complete())
                root = archive_root(self._run_path(run), self.setting)
                self._planned[run] = (root, archive_dir_name(now, verdict, self._uid()))
        return self._planned

    def _gate_files(self, records: list[CriterionRecord]) -> dict[str, str]:
        """sha256 of each gate file the session's criteria came from (rootdir-relative): the
        criteria are part of what was accepted, so editing them makes the verdict STALE."""
        out: dict[str, str] = {}
        root = Path(str(self.config.rootpath))
        for record in records:
            rel = record.id.split("::", 1)[0]
            if rel in out or not self._is_gate_file(rel):
                continue
            try:
                out[rel] = file_sha256(root / rel)
            except OSError:
                continue
        return out

    def _uid(self) -> str:
        uid = os.environ.get("PYTEST_XDIST_TESTRUNUID") or ""
        return (uid[:6] + secrets.token_hex(2)) if uid else secrets.token_hex(4)

    def _run_path(self, run: str) -> Path:
        path = Path(run).expanduser()
        if not path.is_absolute():
            path = Path(self.config.invocation_params.dir) / path
        return path.resolve()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        plans = self._plan()
        if not plans:
            return
        git = git_state(Path(str(config.rootpath)))
        runs = self._runs()
        for run, (root, name) in plans.items():
            try:
                self._archive_run(run, runs[run], root, name, git)
            except OSError as err:  # a read-only run dir must not fail the session
                reporter = config.pluginmanager.get_plugin("terminalreporter")
                line = f"mlgates: could not archive {run}: {err}"
                if reporter is not None:
                    reporter.write_line(line)

    def _archive_run(
        self,
        run: str,
        records: list[CriterionRecord],
        root: Path,
        name: str,
        git: dict[str, Any] | None,
    ) -> None:
        from pytest_mlgates import __version__

        run_path = self._run_path(run)
        records = sorted(records, key=lambda r: r.id)
        criteria = [r.as_dict() for r in records]
        verdict = "GREEN" if name.endswith("-green") else "RED"
        counts = count_statuses(criteria)
        counts["collection_errors"] = self.collection_errors
        counts["deselected"] = sum(1 for _, r in self.deselected if r == run)
        digest, files = fingerprint(run_path) if run_path.is_dir() else ("", {})
        gate_files = self._gate_files(records)
        now = _dt.datetime.now(_dt.timezone.utc)
        results = {
            "run": run,
            "run_path": str(run_path),
            "time": iso_time(now),
            "started": iso_time(self.started),
            "verdict": verdict,
            "complete": self._complete(),
            "partial": counts["deselected"] > 0,
            "counts": counts,
            "fingerprint": digest,
            "criteria": criteria,
        }
        summary = format_markdown(run, verdict, criteria)
        contents = {
            "log.txt": self.log.getvalue() or "(no terminal output was captured)\n",
            "junit.xml": junit_xml(records, self.started, now),
            "results.json": json.dumps(results, indent=2) + "\n",
            "summary.md": summary,
        }
        final = write_archive_dir(root, name, contents)
        line = {
            "time": iso_time(now),
            "verdict": verdict,
            "run": run,
            "fingerprint": digest,
            "files": files,
            "criteria": [
                {k: c[k] for k in ("id", "name", "gate", "status", "value", "threshold")}
                for c in criteria
            ],
            "counts": counts,
            "partial": counts["deselected"] > 0,
            "gate_files": gate_files,
            "rootdir": str(self.config.rootpath),
            "pytest_args": [str(a) for a in self.config.invocation_params.args],
            "plugin_version": __version__,
            "git": git,
            "archive_dir": os.path.relpath(final, root),
            "exitstatus": self.exitstatus,
        }
        append_ledger(root / LEDGER_NAME, line)
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary:
            with open(step_summary, "a", encoding="utf-8") as handle:
                handle.write(summary + "\n")


# --------------------------------------------------------------------------- files


def iso_time(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def archive_dir_name(moment: _dt.datetime, verdict: str, uid: str) -> str:
    """``20261125T101500.123456Z-1a2b3c4d-green``: sorts by time, never collides."""
    stamp = moment.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{uid}-{verdict.lower()}"


def write_archive_dir(root: Path, name: str, contents: dict[str, str]) -> Path:
    """Write ``contents`` into a temp dir inside ``root`` and rename it to ``root/name``.

    A reader sees the whole directory or none of it.  Should the name be taken (two
    sessions in the same microsecond with the same suffix), a fresh suffix is tried, as
    pytest's cacheprovider ignores the loser of its rename race."""
    root.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        for filename, text in contents.items():
            with open(temp / filename, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        stem, verdict = name.rsplit("-", 1)
        target = root / name
        for _attempt in range(5):
            try:
                os.rename(temp, target)
                return target
            except OSError:
                if not target.exists():
                    raise
                target = root / f"{stem}{secrets.token_hex(2)}-{verdict}"
        raise FileExistsError(f"{root}: could not find a free archive dir name for {name}")
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def append_ledger(path: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line under a file lock: one ``os.write`` with ``O_APPEND``, fsync.

    If a killed session left a torn last line (no trailing newline), the new line starts
    on a line of its own, so the torn bytes stay one invalid line that readers skip."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(entry, separators=(",", ":"), allow_nan=False) + "\n").encode()
    with FileLock(str(path) + ".lock", timeout=_LOCK_TIMEOUT_S):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and _last_byte(path) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


@dataclass
class Ledger:
    """The sessions read back from a ledger, and the lines that had to be skipped."""

    entries: list[dict[str, Any]]
    skipped: list[str]


def read_ledger(path: Path) -> Ledger:
    """Read every valid line; a torn or invalid line is skipped and reported, never raised."""
    entries: list[dict[str, Any]] = []
    skipped: list[str] = []
    with open(path, "rb") as handle:
        raw = handle.read()
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            skipped.append(f"{path}: line {number} is not valid JSON (a torn write?), skipped")
            continue
        if not isinstance(entry, dict) or entry.get("verdict") not in ("GREEN", "RED"):
            skipped.append(f"{path}: line {number} is not a ledger entry, skipped")
            continue
        entries.append(entry)
    return Ledger(entries, skipped)


def git_state(root: Path) -> dict[str, Any] | None:
    """``{commit, dirty}`` of the code under test, or None outside git (or git missing)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False,
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"commit": commit.stdout.strip(), "dirty": dirty}


# --------------------------------------------------------------------------- formats


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def format_markdown(run: str, verdict: str, criteria: list[dict[str, Any]]) -> str:
    """GitHub-flavoured summary of one run's session (also for $GITHUB_STEP_SUMMARY)."""
    mark = "✅" if verdict == "GREEN" else "❌"
    lines = [
        f"### {mark} mlgates: `{run}` is {verdict}",
        "",
        "| criterion | gate | value | threshold | status |",
        "|---|---|---|---|---|",
    ]
    for c in criteria:
        lines.append(
            "| " + " | ".join(
                _cell(c.get(k)) for k in ("name", "gate", "value", "threshold", "status")
            ) + " |"
        )
    counts = count_statuses(criteria)
    lines += ["", ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "total"), ""]
    return "\n".join(lines)


def junit_xml(
    records: list[CriterionRecord], started: _dt.datetime, finished: _dt.datetime
) -> str:
    """A JUnit XML document (pytest's xunit1 shape) for one run's items, with the
    ``mlgates.*`` values as properties."""
    suite = ET.Element("testsuite", name="mlgates")
    counts = {"failures": 0, "errors": 0, "skipped": 0}
    for record in records:
        parts = record.id.split("::")
        module = parts[0]
        for suffix in (".py", ".yaml", ".yml", ".md"):
            if module.endswith(suffix):
                module = module[: -len(suffix)]
                break
        classname = ".".join([module.replace("/", ".")] + parts[1:-1])
        case = ET.SubElement(
            suite, "testcase", classname=classname, name=parts[-1],
            time=f"{record.duration:.3f}",
        )
        properties = ET.SubElement(case, "properties")
        for key, value in record.props.items():
            ET.SubElement(properties, "property", name=PROP + key, value=str(value))
        message = str(record.as_dict()["message"] or "")
        if record.outcome == "failed":
            counts["failures"] += 1
            ET.SubElement(case, "failure", message=message).text = record.detail or message
        elif record.outcome == "error":
            counts["errors"] += 1
            ET.SubElement(case, "error", message=message).text = record.detail or message
        elif record.outcome == "skipped":
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", type="pytest.skip", message=message)
    suite.set("errors", str(counts["errors"]))
    suite.set("failures", str(counts["failures"]))
    suite.set("skipped", str(counts["skipped"]))
    suite.set("tests", str(len(records)))
    suite.set("time", f"{(finished - started).total_seconds():.3f}")
    suite.set("timestamp", started.astimezone().isoformat(timespec="seconds"))
    suite.set("hostname", os.uname().nodename if hasattr(os, "uname") else "")
    root = ET.Element("testsuites")
    root.append(suite)
    return '<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(root, encoding="unicode") + "\n"
