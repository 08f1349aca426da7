"""``mlgates prove``: proof that the gates can fail.

A gate that cannot fail proves nothing.  For every criterion of the gate files, ``prove``
takes a temporary copy of the run, applies a mutation aimed at that criterion (NaN into
the log for ``finite_log``, a class's recall to 0 for ``class_recall``, a deleted
``best_*.pt`` for ``best_checkpoints``, ...), runs the gate files on the copy in a pytest
subprocess, and checks that the criterion turned RED.  The subprocess loads
``pytest_mlgates.prove_results``, which writes each gate item's status to a JSON file when
the session ends; nothing is parsed back out of JUnit XML or the terminal.  A criterion that stays GREEN under
every mutation aimed at it is a defect; the exit code says so.

Each gate declares the mutations aimed at it beside its function (``gates/*.py``); they
edit a run through its format's ``pytest_mlgates.formats.<name>.Mutations``, which knows
the files (the engine's ``training_log.csv``, Lightning's ``metrics.csv`` and ``.ckpt``
files, the HF Trainer's ``trainer_state.json`` and ``checkpoint-N/``, an MLflow store,
TensorBoard event files, a plain loop's log and best files) and replaces a gate's
mutations where its files differ.  This module plans and runs them.  Where a
criterion has no mutation (a truth, ``shortcut``, an engine-only gate on another trainer's
run), the report says why in one line; a mutation that cannot be applied is reported as
such, never counted as a gate that stayed GREEN.

Mutations come in tiers: when the first one leaves a criterion GREEN, the next one is
tried (a ``check:`` first gets its columns set to NaN, then to 0, then to +/-1e6).  One
mutated copy serves every criterion that asks for the same mutation.

Example::

    $ mlgates prove runs/default --gates acceptance/
    RED  finite_log       no_nan            NaN written into val_loss (last epoch)
    ...
    proof: 17 of 18 criteria turned RED under their mutation; 0 stayed GREEN (defects); 1 with no mutation; ...

The proof is written to ``<run>/acceptance/proof-<UTC>.json`` beside the verdicts.
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mlgates.fingerprint import ARCHIVE_DIRNAME
from pytest_mlgates.formats import _mutations

GATE_PATTERNS = ("*.gates.yaml", "*.gates.yml", "*-PLAN.md")


class ProveError(Exception):
    """A one-line reason ``prove`` cannot start (bad gate file, baseline run not GREEN...)."""


# --------------------------------------------------------------------------- planning

#: kept here for callers of ``prove.Mutation``: one change to a run copy
Mutation = _mutations.Mutation


@dataclass
class Target:
    """One criterion to prove, the file it came from, and its mutations in tiers."""

    name: str
    gate: str
    file: str
    tiers: list[Mutation]
    note: str = ""


def gate_files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            for pattern in GATE_PATTERNS:
                found.extend(path.rglob(pattern))
        else:
            found.append(path)
    return sorted(set(found))


def plan_targets(run: Path, files: list[Path], run_format: str | None = None) -> list[Target]:
    """Every acceptance criterion of the gate files, with the mutations the run's format
    aims at it (``pytest_mlgates.formats.<name>.Mutations``)."""
    from pytest_mlgates.collect import parse_gate_file
    from pytest_mlgates.errors import MlgatesError
    from pytest_mlgates.formats import format_module, open_run

    targets: list[Target] = []
    opened: dict[Any, Any] = {}
    for path in files:
        try:
            document = parse_gate_file(path, plan=path.name.endswith("-PLAN.md"))
        except MlgatesError as err:
            raise ProveError(str(err)) from None
        if document is None:
            continue
        if document.run not in opened:  # one reader per run: section, as the gate session has
            try:
                opened[document.run] = open_run(run, run_format, document.run)
            except MlgatesError as err:
                raise ProveError(str(err)) from None
        reader = opened[document.run]
        mutations = format_module(reader.format).Mutations(reader, dict(document.metric_aliases or {}))
        for criterion in document.acceptance_criteria():
            gate = criterion.gate_label
            columns = None
            if criterion.kind == "check" and criterion.check is not None:
                columns = sorted(criterion.check.names)
            tiers, note = mutations.for_criterion(gate, dict(criterion.params), columns)
            inner = reader.path.resolve().relative_to(run) if reader.path.resolve() != run else Path()
            tiers = [_inside(t, inner) for t in tiers]
            targets.append(Target(criterion.name, gate, str(path), tiers, note))
    return targets


def _inside(mutation: Mutation, inner: Path) -> Mutation:
    """A mutation of the run dir, applied to a copy of the folder given (the run dir may be
    a folder inside it: a Lightning ``save_dir``'s ``version_N``)."""
    if inner == Path():
        return mutation
    return Mutation(mutation.key, mutation.description, lambda copy: mutation.apply(copy / inner))


# --------------------------------------------------------------------------- running


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, symlinks=True,
                    ignore=lambda d, names: [ARCHIVE_DIRNAME] if Path(d) == run else [])
    return dest


@dataclass
class Job:
    """Some criteria of the gate files against one run copy (unchanged or mutated)."""

    label: str                   # the copy's path, as passed to --run-dir
    targets: list[Target]


def _nodeid(target: Target, label: str) -> str:
    return f"{target.file}::{target.name}[{label}]"


def run_jobs(jobs: list[Job], *, baseline: Path, timeout_s: float, workers: int,
             work: Path, run_format: str | None = None) -> dict[tuple[str, str], str]:
    """Run every job's items in at most ``workers`` pytest subprocesses (several run
    copies per session: pytest and torch start once, not once per mutation)."""
    groups: list[list[Job]] = [[] for _ in range(max(1, min(workers, 2, len(jobs))))]
    for index, job in enumerate(sorted(jobs, key=lambda j: -len(j.targets))):
        groups[index % len(groups)].append(job)
    stamp = len(list(work.glob("batch-*.json")))

    def one(item: tuple[int, list[Job]]) -> dict[tuple[str, str], str]:
        number, group = item
        return run_gates(group, work / f"batch-{stamp + number}.json", baseline=baseline,
                         timeout_s=timeout_s, run_format=run_format)

    statuses: dict[tuple[str, str], str] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(groups)) as pool:
        for part in pool.map(one, enumerate(groups)):
            statuses.update(part)
    return statuses


def run_gates(group: list[Job], out_json: Path, *, baseline: Path,
              timeout_s: float, run_format: str | None = None) -> dict[tuple[str, str], str]:
    """One pytest subprocess: ``{(run label, criterion): status}``, read from the JSON
    its ``pytest_mlgates.prove_results`` plugin writes when the session ends."""
    command = [sys.executable, "-m", "pytest"]
    for job in group:
        command += [_nodeid(t, job.label) for t in job.targets]
    for job in group:
        command += ["--run-dir", job.label]
    if run_format:
        command += ["--run-format", run_format]
    command += [
        "--baseline-run", str(baseline), "-p", "no:cacheprovider", "-p", "no:xdist",
        "-p", "pytest_mlgates.archive", "--mlgates-archive=off", "-q",
        "-p", "pytest_mlgates.prove_results", f"--mlgates-prove-results={out_json}",
    ]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        raise ProveError(f"pytest on the gate files took more than {timeout_s:.0f} s") from None
    try:
        records = json.loads(out_json.read_text(encoding="utf-8"))
        return {(str(r["run"]), str(r["criterion"])): str(r["status"]) for r in records}
    except FileNotFoundError:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        raise ProveError(f"pytest on the gate files wrote no result (exit {proc.returncode}):"
                         f" {tail[0]}") from None
    except (OSError, ValueError, TypeError, KeyError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ProveError(f"pytest on the gate files wrote an unreadable result {out_json}: "
                         f"{type(err).__name__}: {reason}") from None


def prove(run: Path, gates: list[Path], *, jobs: int = 2, timeout_s: float = 300.0,
          baseline: Path | None = None, write: bool = True, run_format: str | None = None) -> dict[str, Any]:
    """Apply every criterion's mutations to copies of ``run``; report what stayed GREEN.

    Tier 0 runs the unchanged copy (every criterion) and every criterion's first
    mutation in one go; each later tier retries, with the next mutation, only the
    criteria that stayed GREEN."""
    run = run.resolve()
    from pytest_mlgates.checkpoint_io import require_safe_torch
    from pytest_mlgates.errors import RunDirError

    try:  # the checkpoint mutations open the run's checkpoints (weights_only=True)
        require_safe_torch()
    except RunDirError as err:
        raise ProveError(str(err)) from None
    files = [p.resolve() for p in gate_files(gates)]
    if not files:
        raise ProveError(f"no gate files (*.gates.yaml, *-PLAN.md) in "
                         f"{', '.join(map(str, gates))}")
    targets = plan_targets(run, files, run_format)
    if not targets:
        raise ProveError(f"no acceptance criteria in {', '.join(map(str, gates))}")
    baseline = (baseline or run).resolve()
    work = Path(tempfile.mkdtemp(prefix="mlgates-prove-"))
    results: dict[str, dict[str, Any]] = {t.name: {"criterion": t.name, "gate": t.gate, "file": t.file, "before": None,
                        "after": None, "mutation": None, "tried": [], "outcome": None,
                        "note": t.note} for t in targets}
    try:
        unchanged = str(copy_run(run, work / "unchanged"))
        pending = list(targets)
        tier = 0
        while pending:
            planned: dict[str, tuple[Mutation, list[Target]]] = {}
            for target in pending:
                if tier < len(target.tiers):
                    mutation = target.tiers[tier]
                    planned.setdefault(mutation.key, (mutation, []))[1].append(target)
            batch = [Job(unchanged, list(targets))] if tier == 0 else []
            labels: dict[str, str] = {}
            for number, (key, (mutation, aimed)) in enumerate(sorted(planned.items())):
                copy = copy_run(run, work / f"t{tier}-m{number}")
                labels[key] = str(copy)
                try:
                    mutation.apply(copy)
                except Exception as err:  # noqa: BLE001 -- reported per criterion, never raised
                    labels[key] = f"mutation failed: {type(err).__name__}: {err}"
                    continue
                batch.append(Job(str(copy), aimed))
            if not batch:
                break
            statuses = run_jobs(batch, baseline=baseline, timeout_s=timeout_s,
                                workers=jobs, work=work, run_format=run_format)
            still = []
            for target in pending:
                entry = results[target.name]
                if tier == 0:
                    entry["before"] = statuses.get((unchanged, target.name), "MISSING")
                    if entry["before"] != "GREEN":
                        entry["outcome"] = "not GREEN before mutation"
                        continue
                    if not target.tiers:
                        entry["outcome"] = "no mutation"
                        continue
                if tier >= len(target.tiers):
                    continue
                mutation = target.tiers[tier]
                label = labels[mutation.key]
                if label.startswith("mutation failed"):
                    entry["tried"].append({"mutation": mutation.description, "error": label})
                    still.append(target)
                    continue
                after = statuses.get((label, target.name), "MISSING")
                entry["tried"].append({"mutation": mutation.description, "status": after})
                entry["after"] = after
                if after in ("RED", "ERROR"):
                    entry.update(mutation=mutation.description, outcome="RED")
                else:
                    still.append(target)
            pending = still
            tier += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for entry in results.values():
        if entry["outcome"] is None:
            # a mutation that could not be applied proves nothing either way: not a defect
            applied = [t for t in entry["tried"] if "status" in t]
            entry["outcome"] = "stayed GREEN" if applied else "mutation failed"
            if not applied and entry["tried"]:
                entry["note"] = entry["tried"][-1]["error"]
    criteria = list(results.values())
    report = {
        "time": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "run": str(run),
        "gate_files": [str(f) for f in files],
        "criteria": criteria,
        "defects": [c["criterion"] for c in criteria if c["outcome"] == "stayed GREEN"],
        "proven": [c["criterion"] for c in criteria if c["outcome"] == "RED"],
        "no_mutation": [c["criterion"] for c in criteria if c["outcome"] == "no mutation"],
        "mutation_failed": [c["criterion"] for c in criteria if c["outcome"] == "mutation failed"],
        "not_green_before": [c["criterion"] for c in criteria
                             if c["outcome"] == "not GREEN before mutation"],
    }
    if write:
        report["proof_file"] = str(write_proof(run, report))
    return report


def write_proof(run: Path, report: dict[str, Any]) -> Path:
    """``<run>/acceptance/proof-<UTC>.json``, written whole through the archive's checks
    (no symlinked ``acceptance/``, temp file, fsync, rename): never outside the run."""
    from pytest_mlgates.archive_fs import ArchiveDir, ArchiveError

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    name = f"proof-{stamp}.json"
    try:
        folder = ArchiveDir.open(Path(run), ARCHIVE_DIRNAME, create=True)
        assert folder is not None  # create=True: made or an error
        with folder:
            folder.write_file(name, json.dumps(report, indent=2))
    except ArchiveError as err:
        raise ProveError(f"proof not written: {err}") from None
    return Path(run) / ARCHIVE_DIRNAME / name


def print_report(report: dict[str, Any]) -> None:
    for entry in report["criteria"]:
        outcome = entry["outcome"]
        label = {"RED": "RED", "stayed GREEN": "DEFECT", "no mutation": "NONE",
                 "not GREEN before mutation": "SKIP", "mutation failed": "FAILED"}.get(outcome, outcome)
        detail = entry["mutation"] or entry["note"] or (
            f"was {entry['before']} before any mutation" if outcome.startswith("not GREEN")
            else "; ".join(t["mutation"] for t in entry["tried"]))
        print(f"{label:<7} {entry['gate']:<22} {entry['criterion']:<40} {detail}")
    total = len(report["criteria"])
    print(f"proof: {len(report['proven'])} of {total} criteria turned RED under their mutation; "
          f"{len(report['defects'])} stayed GREEN (defects); "
          f"{len(report['no_mutation'])} with no mutation; "
          + (f"{len(report['mutation_failed'])} whose mutation could not be applied; "
             if report.get("mutation_failed") else "")
          + f"{len(report['not_green_before'])} not GREEN before mutation")
    if report["defects"]:
        print("defects (gates that cannot fail): " + ", ".join(report["defects"]))
    if report.get("proof_file"):
        print(f"proof written to {report['proof_file']}")
