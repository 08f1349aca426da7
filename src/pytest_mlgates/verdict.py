"""The verdict on a run dir, from its ledger: ACCEPTED, REJECTED, STALE or UNCHECKED.

The rules, in the order they are applied (each fails closed):

1. A run stopped by an in-flight gate (``mlgates_inflight.json``, ``aborted_by_gate``) is
   REJECTED, naming the criterion and the epoch, whatever its ledger says.
2. The ledger is read as a stream (``ledger.py``).  With ``MLGATES_LEDGER_KEY`` set (or
   ``--require-signed``), lines without a valid signature are ignored and counted.
3. The verdict rests on the newest *counted* session: the newest readable line that is
   not a partial GREEN one.  A later partial GREEN session is passed over (it proves only
   the criteria it ran); an *unreadable* line is never passed over: if one is newer than
   the session the verdict would rest on, the verdict is UNCHECKED.
4. That session RED (or void: its run changed under it) -> REJECTED.
5. GREEN, but a gate file that must have run did not run in it -> UNCHECKED.  Which gate
   files must have run: those named with ``--gates PATH...``; by default every gate file
   any archived session ran for this run that still exists, so running one gate file of
   several cannot stand in for the others.
6. GREEN, but the plugin's version, the run's files, the gate files or the code a key link
   points to changed since -> STALE, naming what changed.  The run's files are
   fingerprinted with the algorithm the session used (``fingerprint_hash``; SHA-256 for
   lines that do not say); one this interpreter cannot compute -> UNCHECKED.  Digests in
   the fingerprint cache are reused for files whose size, mtime, ctime, inode and device
   are unchanged (``fingerprint_cache.py``), unless ``rehash``.
7. Otherwise ACCEPTED.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Lines of unreadable-older-line warnings printed before "and N more".
WARN_CAP = 5
_GATE_SUFFIXES = (".gates.yaml", ".gates.yml")
_PLAN_SUFFIX = "-PLAN.md"
_SKIP_DIRS = {".git", ".hg", ".svn", ".tox", ".nox", "venv", ".venv", "node_modules",
              "__pycache__", "build", "dist"}
_FRONT_MATTER = re.compile(rb"\A---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


class VerdictInputError(Exception):
    """Bad input for a verdict (unsafe archive, missing ``--gates`` path, empty key)."""


@dataclass
class Scan:
    """One pass over a ledger: the session the verdict rests on and what came after it."""

    counted: dict[str, Any] | None = None
    counted_line: int = 0
    #: (kind, line number, problem) of lines newer than ``counted``: 'partial' or 'unreadable'
    newer: list[tuple[str, int, str]] = field(default_factory=list)
    sessions: int = 0
    unsigned: int = 0
    unreadable: list[tuple[int, str]] = field(default_factory=list)
    #: every gate file some counted-for-signature session ran: real path -> (rel, sha256)
    gate_files_seen: dict[str, tuple[str, str]] = field(default_factory=dict)


def scan_ledger(lines: Iterable[Any], key: bytes | None) -> Scan:
    """Walk the ledger's lines once, keeping one entry in memory (see the module doc)."""
    from pytest_mlgates.ledger import signature_state

    scan = Scan()
    for line in lines:
        if line.entry is None:
            scan.unreadable.append((line.number, str(line.problem)))
            scan.newer.append(("unreadable", line.number, str(line.problem)))
            continue
        entry = line.entry
        if key is not None and signature_state(entry, key) != "valid":
            scan.unsigned += 1
            continue
        scan.sessions += 1
        root = str(entry.get("rootdir") or ".")
        for rel, sha in entry["gate_files"].items():
            scan.gate_files_seen[os.path.realpath(os.path.join(root, rel))] = (rel, sha)
        if entry["verdict"] == "GREEN" and entry["partial"]:
            scan.newer.append(("partial", line.number, ""))
            continue
        scan.counted, scan.counted_line, scan.newer = entry, line.number, []
    return scan


def signing_key(require_signed: bool, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key lines must be signed with, or None when signatures are not required."""
    from pytest_mlgates.ledger import KEY_ENV, LedgerKeyError, ledger_key

    try:
        key = ledger_key(environ)
    except LedgerKeyError as err:
        raise VerdictInputError(str(err)) from None
    if require_signed and key is None:
        raise VerdictInputError(f"--require-signed needs the signing key in {KEY_ENV}")
    return key


def compute_verdict(
    run: Path,
    archive: str | None = None,
    *,
    gates: list[Path] | None = None,
    require_signed: bool = False,
    environ: Mapping[str, str] | None = None,
    warnings: list[str] | None = None,
    rehash: bool = False,
) -> dict[str, Any]:
    """The verdict as a plain dict (what ``--json`` prints): ``verdict``, ``reason`` and the
    evidence behind it.  Notes about older unreadable lines go to ``warnings``.  With
    ``rehash``, every file is read (the fingerprint cache is not consulted, then rewritten)."""
    from pytest_mlgates.archive_fs import ArchiveDir, ArchiveError, archive_location
    from pytest_mlgates.inflight import read_inflight_stop
    from pytest_mlgates.ledger import LEDGER_NAME, iter_lines

    base, name = archive_location(Path(os.path.abspath(run)), archive)
    result: dict[str, Any] = {"run": str(run), "ledger": str(base / name / LEDGER_NAME)}
    required = discover_gate_files(gates) if gates else None
    key = signing_key(require_signed, environ)
    stop = read_inflight_stop(run)
    if stop is not None:
        return {**result, "verdict": "REJECTED", "inflight": _inflight_view(stop),
                "reason": "training was stopped by an in-flight gate: criterion "
                          f"{_short(stop.get('criterion'))} at epoch {_short(stop.get('epoch'))}"
                          f" ({_short(stop.get('reason'), 200)})"}
    try:
        handle = ArchiveDir.open_file(base, name, LEDGER_NAME)
    except ArchiveError as err:
        raise VerdictInputError(str(err)) from None
    if handle is None:
        return {**result, "sessions": 0, "verdict": "UNCHECKED",
                "reason": f"no acceptance session archived ({result['ledger']} missing)"}
    with handle:
        try:
            scan = scan_ledger(iter_lines(handle), key)
        except OSError as err:
            raise VerdictInputError(f"{result['ledger']}: cannot read the ledger "
                                    f"({err.strerror or err})") from None
    cache = _CacheUse(base, name, key, rehash)
    return _judge(run, scan, result, key, required, warnings, cache)


@dataclass
class _CacheUse:
    """Where the run's fingerprint cache is, the key it must be signed with, and whether
    to ignore it (``--rehash``)."""

    base: Path
    name: str
    key: bytes | None
    rehash: bool


def _judge(run: Path, scan: Scan, result: dict[str, Any], key: bytes | None,
           required: list[Path] | None, warnings: list[str] | None,
           cache: _CacheUse | None = None) -> dict[str, Any]:
    result["sessions"] = scan.sessions
    ignored = ""
    if key is not None:
        result["ignored_unsigned"] = scan.unsigned
        if scan.unsigned:
            ignored = (f" ({scan.unsigned} unsigned or badly signed line"
                       f"{'s' if scan.unsigned != 1 else ''} ignored)")
    bad = [(n, p) for kind, n, p in scan.newer if kind == "unreadable"]
    if warnings is not None:
        older = [item for item in scan.unreadable if item not in bad]
        warnings += [f"line {n} is unreadable ({p}); older than the session the verdict "
                     "rests on" for n, p in older[:WARN_CAP]]
        if len(older) > WARN_CAP:
            warnings.append(f"... and {len(older) - WARN_CAP} more unreadable lines")
    if bad:
        number, problem = bad[-1]
        return {**result, "verdict": "UNCHECKED", "unreadable_line": number,
                "reason": f"line {number} of the ledger is unreadable ({problem}); no older "
                          f"session stands in for it{ignored}"}
    newest = scan.counted
    if newest is None:
        if scan.newer:
            reason = ("only partial sessions archived (a selection left criteria out); run "
                      "every criterion once")
        elif scan.unsigned:
            reason = "no validly signed session archived"
        else:
            reason = "no acceptance session archived (the ledger is empty)"
        return {**result, "verdict": "UNCHECKED", "reason": reason + ignored}
    later = len(scan.newer)
    if later:
        result["skipped_partial"] = later
    result["session"] = {k: newest.get(k) for k in ("time", "verdict", "fingerprint",
                                                    "archive_dir", "counts", "git",
                                                    "plugin_version", "partial_reasons",
                                                    "void")}
    criteria = newest["criteria"]
    not_green = [c for c in criteria if c.get("status") != "GREEN"]
    result["not_green"] = not_green
    if newest["verdict"] != "GREEN" or not_green or not criteria:
        if newest.get("void"):
            reason = f"the newest session is void: {newest['void']}"
        elif newest["verdict"] != "GREEN":
            reason = "the newest session is RED"
        else:
            reason = "the newest session has criteria that are not GREEN"
        if newest["partial"]:
            reason += f" (a partial session: {'; '.join(newest['partial_reasons'])})"
        return {**result, "verdict": "REJECTED", "reason": reason + ignored}
    uncovered = _not_run(newest, scan, required)
    if uncovered:
        result["not_run"] = uncovered
        which = "named with --gates" if required is not None else "run against this run before"
        return {**result, "verdict": "UNCHECKED",
                "reason": f"gate files {which} were not run whole by the newest GREEN session: "
                          f"{_named(uncovered)}"}
    stale = _staleness(run, newest, cache)
    if stale is not None:
        return {**result, "verdict": "STALE", **stale, "reason": stale["reason"] + ignored}
    tail = f" ({later} later partial GREEN session{'s' if later != 1 else ''} not counted)" \
        if later else ""
    return {**result, "verdict": "ACCEPTED",
            "reason": f"GREEN session of {newest['time']} matches the files now{tail}{ignored}"}


def _staleness(run: Path, newest: dict[str, Any],
               cache: _CacheUse | None = None) -> dict[str, Any] | None:
    """Why a GREEN session no longer describes the run (STALE), or None.  A fingerprint
    this interpreter cannot check makes it ``"verdict": "UNCHECKED"`` instead."""
    import pytest_mlgates
    from pytest_mlgates.fingerprint import available, describe, diff_files

    version = str(pytest_mlgates.__version__)
    if newest["plugin_version"] != version:
        return {"changes": {"plugin": [f"{newest['plugin_version']} -> {version}"]},
                "reason": f"the GREEN session was judged by pytest-mlgates "
                          f"{_short(newest['plugin_version'])}; this is {version}: run the "
                          "gates again"}
    algorithm = newest.get("fingerprint_hash") or "sha256"
    if not available(algorithm):
        return {"verdict": "UNCHECKED", "fingerprint_hash": algorithm,
                "reason": f"the GREEN session fingerprinted the run with {_short(algorithm)}, "
                          "which this interpreter cannot compute"
                          + (" (pip install blake3)" if algorithm == "blake3" else "")}
    now = _fingerprint_now(run, algorithm, cache)
    if now.digest != newest["fingerprint"]:
        recorded = newest.get("files")
        changes = diff_files(recorded, now.files) if isinstance(recorded, dict) else {
            "changed": ["(the session did not keep per-file digests)"]}
        reason = "files of the run changed since the newest GREEN session"
        if now.unsafe:
            reason += "; only regular files are read, and it now holds " + _named(
                [f"{rel} ({describe(kind)})" for rel, kind in sorted(now.unsafe.items())])
        return {"changes": changes, "reason": reason}
    edited = changed_gate_files(newest)
    if edited:
        return {"changes": {"gate file": edited},
                "reason": "gate files changed since the newest GREEN session: the criteria it "
                          "passed are not the ones there now"}
    code = changed_code_files(newest)
    if code:
        return {"changes": {"code": code},
                "reason": "code a key link points to changed since the newest GREEN session"}
    return None


def _fingerprint_now(run: Path, algorithm: str, cache: _CacheUse | None) -> Any:
    """The run's snapshot now, reusing the cache's digests where sound, and the cache
    written back when anything had to be read."""
    from pytest_mlgates import fingerprint_cache
    from pytest_mlgates.fingerprint import snapshot

    known = None
    if cache is not None and not cache.rehash:
        known = fingerprint_cache.load(cache.base, cache.name, run, algorithm, cache.key)
    try:
        now = snapshot(run, algorithm=algorithm, known=known)
    except OSError as err:
        raise VerdictInputError(f"{run}: cannot fingerprint the run "
                                f"({err.strerror or err})") from None
    if cache is not None and now.hashed:
        fingerprint_cache.save(cache.base, cache.name, run, now, cache.key)
    return now


def _not_run(newest: dict[str, Any], scan: Scan, required: list[Path] | None) -> list[str]:
    """Gate files that had to run whole but did not in ``newest`` (as the user names them)."""
    root = str(newest.get("rootdir") or ".")
    ran_paths = {os.path.realpath(os.path.join(root, rel)) for rel in newest["gate_files"]}
    ran_content = {(Path(rel).name, sha) for rel, sha in newest["gate_files"].items()}
    missing: list[str] = []
    if required is not None:
        from pytest_mlgates.scope import gate_file_digest

        for path in required:
            real = os.path.realpath(path)
            if real in ran_paths:
                continue
            if (path.name, gate_file_digest(path)) in ran_content:
                continue  # the same file in another checkout
            missing.append(str(path))
        return missing
    for real, (rel, sha) in sorted(scan.gate_files_seen.items()):
        if real in ran_paths or (Path(rel).name, sha) in ran_content:
            continue
        if os.path.isfile(real):
            missing.append(rel)
    return missing


def changed_gate_files(session: dict[str, Any]) -> list[str]:
    """Gate files of a session whose content differs now (rootdir-relative). A file that is
    no longer there (the verdict runs in another checkout) cannot be compared and is not
    counted."""
    from pytest_mlgates.scope import gate_file_digest

    root = Path(str(session.get("rootdir") or "."))
    edited = []
    for rel, sha in sorted(session["gate_files"].items()):
        now = gate_file_digest(root / rel)
        if now is not None and now != sha:
            edited.append(rel)
    return edited


def changed_code_files(session: dict[str, Any]) -> list[str]:
    """Key-link targets whose content differs now.  Compared only where the session's
    rootdir exists (the checkout the session ran in); there, a deleted target is a change."""
    from pytest_mlgates.scope import code_digest

    root = Path(str(session.get("rootdir") or "."))
    if not root.is_dir():
        return []
    return [rel for rel, sha in sorted(session["code_files"].items())
            if code_digest(root, rel) != sha]


def discover_gate_files(paths: list[Path]) -> list[Path]:
    """The gate files under ``paths`` (files or dirs), as pytest would collect them with the
    default patterns: ``*.gates.yaml``, ``*.gates.yml``, and ``*-PLAN.md`` with
    ``must_haves:`` in its front matter."""
    found: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_file():
            found.append(path)
            continue
        if not path.is_dir():
            raise VerdictInputError(f"{given}: no such gate file or directory (--gates)")
        for current, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS
                                 and not d.startswith("."))
            for filename in sorted(filenames):
                candidate = Path(current) / filename
                if filename.endswith(_GATE_SUFFIXES) or (
                        filename.endswith(_PLAN_SUFFIX) and _plan_has_must_haves(candidate)):
                    found.append(candidate)
    if not found:
        raise VerdictInputError(f"no gate files under {', '.join(str(p) for p in paths)} "
                                "(--gates)")
    return found


def _plan_has_must_haves(path: Path) -> bool:
    from pytest_mlgates.gatefile import read_capped

    try:
        match = _FRONT_MATTER.match(read_capped(path))
    except OSError:
        return True  # unreadable: required, and so not covered -- never silently dropped
    return bool(match and re.search(rb"^must_haves\s*:", match.group(1) or b"", re.MULTILINE))


def _inflight_view(stop: dict[str, Any]) -> dict[str, str]:
    return {k: _short(stop.get(k), 300) for k in ("criterion", "epoch", "reason")}


def _short(value: Any, cap: int = 120) -> str:
    """A value from a file, on one line and capped: messages never walk a huge value."""
    text = value if isinstance(value, str) else repr(value) if isinstance(
        value, (int, float, type(None))) else type(value).__name__
    text = " ".join(text[: cap * 4].split())
    return text if len(text) <= cap else text[: cap - 3] + "..."


def _named(items: list[str], cap: int = WARN_CAP) -> str:
    shown = ", ".join(_short(i, 200) for i in items[:cap])
    return shown + (f" and {len(items) - cap} more" if len(items) > cap else "")
