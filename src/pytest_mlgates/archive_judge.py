"""Each run dir of a session judged once, before anything is written: a RunOutcome.

What a session's evidence is worth for one run: *void* when the run changed during the
session (its end fingerprint differs from the one taken before the first item, or it holds
what is not a regular file) or a gate file changed under it; *partial* when fewer criteria
ran than its gate files hold (``-k``, ``-m``, ``--deselect``, a node id); and the gate
files and key-linked code it vouches for (``scope.py``).  The verdict follows
(``archive_records.session_verdict``).  :class:`GateFilePatterns` says which node ids are
gate files or phase plans.  Nothing is written here; ``archive_write.py`` writes what
:func:`judge_run` decided, and the terminal line says the same.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from pytest_mlgates.archive_contents import archive_dir_name
from pytest_mlgates.archive_records import CriterionRecord, RunOutcome, named, session_verdict
from pytest_mlgates.fingerprint import KnownDigests, Snapshot, describe, diff_files

__all__ = ["GateFilePatterns", "changed_during_session", "judge_run"]


@dataclass(frozen=True)
class GateFilePatterns:
    """The file name patterns of gate files and phase plans (the defaults and the ini's)."""

    gates: tuple[str, ...] = ("*.gates.yaml", "*.gates.yml")
    plans: tuple[str, ...] = ("*-PLAN.md",)

    @classmethod
    def of(cls, config: Any) -> GateFilePatterns:
        """The patterns of this session (``mlgates_gate_patterns``, ``mlgates_plan_patterns``)."""
        def ini(name: str) -> tuple[str, ...]:
            try:
                return tuple(config.getini(name))
            except (ValueError, KeyError):  # archive loaded without plugin.py
                return ()

        return cls((*cls.gates, *ini("mlgates_gate_patterns")), (*cls.plans, *ini("mlgates_plan_patterns")))

    @staticmethod
    def _name(nodeid: str) -> str:
        return nodeid.split("::", 1)[0].rsplit("/", 1)[-1]

    def is_gate_file(self, nodeid: str) -> bool:
        name = self._name(nodeid)
        return any(fnmatch(name, pattern) for pattern in (*self.gates, *self.plans))

    def is_plan(self, nodeid: str) -> bool:
        name = self._name(nodeid)
        return not any(fnmatch(name, p) for p in self.gates) and any(fnmatch(name, p) for p in self.plans)


def judge_run(run: str, records: list[CriterionRecord], *, path: Path, before: Snapshot | str | None,
              snapshot: Callable[[Path, KnownDigests | None], Snapshot | str], deselected: int,
              node_ids: list[str], root: Path, patterns: GateFilePatterns, complete: bool,
              now: _dt.datetime, uid: str, scopes: dict[str, Any]) -> RunOutcome:
    """The outcome of run ``run`` (at ``path``) from its criteria's records.

    ``before`` is its fingerprint before the first item (or why there is none);
    ``snapshot(path, known)`` takes the end fingerprint; ``deselected`` counts its criteria
    that ``-k``/``-m``/``--deselect`` left out; ``node_ids`` are the node ids the session
    was started with; ``scopes`` caches each gate file's scope across the session's runs.
    """
    from pytest_mlgates.scope import code_digest, read_gate_file

    records = sorted(records, key=lambda r: r.id)
    void: list[str] = []
    partial: list[str] = []
    if deselected:
        partial.append(f"{deselected} criteria deselected (-k, -m or --deselect)")
    if node_ids:
        partial.append(f"selected by node id ({named(node_ids)})")
    gate_files: dict[str, str] = {}
    code_files: dict[str, str] = {}
    by_file: dict[str, list[CriterionRecord]] = {}
    for record in records:
        rel = record.id.split("::", 1)[0]
        if patterns.is_gate_file(rel):
            by_file.setdefault(rel, []).append(record)
    for rel, file_records in sorted(by_file.items()):
        if rel not in scopes:
            scopes[rel] = read_gate_file(root, rel, plan=patterns.is_plan(rel))
        scope = scopes[rel]
        if scope.sha256:
            gate_files[rel] = scope.sha256
        if scope.problem:
            void.append(f"{rel} {scope.problem}")
            continue
        ran = {r.criterion for r in file_records}
        gone = sorted(ran - set(scope.criteria))
        if gone:
            void.append(f"{rel} changed during the session ({named(gone)} no longer in it)")
        missing = [name for name in scope.criteria if name not in ran]
        if missing:
            partial.append(f"{rel}: {len(scope.criteria) - len(missing)} of "
                           f"{len(scope.criteria)} criteria ran (not run: {named(missing)})")
        for target in scope.key_link_targets:
            code_files[target] = code_digest(root, target)
    # digests of the first fingerprint stand for files whose key has not moved since
    after = snapshot(path, before.known if isinstance(before, Snapshot) else None)
    void += changed_during_session(before, after)
    criteria = [r.as_dict() for r in records]
    verdict = session_verdict(criteria, complete=complete and not void)
    return RunOutcome(
        run=run, path=path, records=records, verdict=verdict,
        dir_name=archive_dir_name(now, verdict, uid),
        snapshot=after if isinstance(after, Snapshot) else None,
        void="; ".join(void) or None, partial_reasons=partial, deselected=deselected,
        gate_files=gate_files, code_files=code_files)


def changed_during_session(before: Snapshot | str | None, after: Snapshot | str) -> list[str]:
    """Why the session's evidence is void for this run, if it is."""
    if isinstance(after, str):
        return [after]
    reasons = []
    if before is None:
        reasons.append("the run was not fingerprinted before the first item (name it "
                       "with --run-dir)")
    elif isinstance(before, str):
        reasons.append(before)
    else:
        changes = diff_files(before.files, after.files)
        changed = [f"{rel} {kind}" for kind in ("added", "removed", "changed")
                   for rel in changes[kind]]
        if changed:
            reasons.append(f"the run changed during the session: {named(changed)}")
        elif before.stamp != after.stamp:
            reasons.append("files of the run were rewritten during the session (inode or "
                           "ctime changed), though their content is the same at its end")
    unsafe = sorted(set(after.unsafe) | set(getattr(before, "unsafe", {}) or {}))
    if unsafe:
        kinds = {**(getattr(before, "unsafe", {}) or {}), **after.unsafe}
        reasons.append("only regular files are read, and the run holds "
                       + named([f"{rel} ({describe(kinds[rel])})" for rel in unsafe]))
    return reasons
