"""``mlgates prove``: proof that the gates can fail.

A gate that cannot fail proves nothing.  For every criterion of the gate files, ``prove``
takes a temporary copy of the run, applies a mutation aimed at that criterion (NaN into
the log for ``finite_log``, a class's recall to 0 for ``class_recall``, a deleted
``best_*.pt`` for ``best_checkpoints``, ...), runs the gate files on the copy in a pytest
subprocess, and checks that the criterion turned RED.  A criterion that stays GREEN under
every mutation aimed at it is a defect; the exit code says so.

Mutations come in tiers: when the first one leaves a criterion GREEN, the next one is
tried (a ``check:`` first gets its columns set to NaN, then to 0, then to +/-1e6).  One
mutated copy serves every criterion that asks for the same mutation.

Example::

    $ mlgates prove runs/default --gates acceptance/
    RED  finite_log       no_nan            NaN written into val_loss (last row)
    ...
    proof: 17 of 17 criteria turned RED under their mutation; 1 with no mutation (shortcut)

The proof is written to ``<run>/acceptance/proof-<UTC>.json`` beside the verdicts.
"""

from __future__ import annotations

import concurrent.futures
import csv
import datetime as _dt
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlgates.fingerprint import ARCHIVE_DIRNAME

GATE_PATTERNS = ("*.gates.yaml", "*.gates.yml", "*-PLAN.md")
LOG_CSV = "training_log.csv"
HISTORY_JSON = "metric_history.json"


class ProveError(Exception):
    """A one-line reason ``prove`` cannot start (bad gate file, baseline run not GREEN...)."""


# --------------------------------------------------------------------------- mutations


@dataclass(frozen=True)
class Mutation:
    """One change to a run copy; ``key`` identifies it so copies are shared."""

    key: str
    description: str
    apply: Callable[[Path], None] = field(compare=False, hash=False)


def _read_log(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    text = (run / LOG_CSV).read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


def _write_log(run: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Rewrite training_log.csv and metric_history.json (same numbers) so both agree."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (run / LOG_CSV).write_text(out.getvalue(), encoding="utf-8")
    if (run / HISTORY_JSON).exists():
        history_rows = [{c: _json_number(row.get(c, "")) for c in columns} for row in rows]
        (run / HISTORY_JSON).write_text(
            json.dumps({"columns": columns, "rows": history_rows}), encoding="utf-8")


def _json_number(cell: str) -> Any:
    try:
        value = float(cell)
    except ValueError:
        return cell
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return int(value) if value.is_integer() and "." not in cell and "e" not in cell else value


def _sync_results(run: Path, rows: list[dict[str, str]]) -> None:
    """training_results.json's ``final`` is the last log row: keep it in step."""
    path = run / "training_results.json"
    if not path.exists() or not rows:
        return
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return
    if isinstance(results, dict) and isinstance(results.get("final"), dict):
        for column, cell in rows[-1].items():
            if column in results["final"]:
                number = _json_number(cell)
                results["final"][column] = number if not isinstance(number, str) else None
        path.write_text(json.dumps(results, indent=2), encoding="utf-8")


def set_columns(columns_to_set: Iterable[str], value: Callable[[int, float], float],
                rows_: str = "all") -> Callable[[Path], None]:
    """A mutation that rewrites some log columns: ``value(row_index, old) -> new``."""
    wanted = list(columns_to_set)

    def apply(run: Path) -> None:
        columns, rows = _read_log(run)
        targets = range(len(rows)) if rows_ == "all" else [len(rows) - 1]
        for column in wanted:
            if column not in columns:
                continue
            for index in targets:
                try:
                    old = float(rows[index][column])
                except (TypeError, ValueError):
                    old = float("nan")
                rows[index][column] = repr(float(value(index, old)))
        _write_log(run, columns, rows)
        _sync_results(run, rows)

    return apply


def drop_last_row(run: Path) -> None:
    """Only the CSV loses its row: the log is incomplete and disagrees with the JSON."""
    columns, rows = _read_log(run)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[:-1])
    (run / LOG_CSV).write_text(out.getvalue(), encoding="utf-8")


def remove(rel: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        target = run / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()

    return apply


def truncate(rel: str, keep: Callable[[int], int]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        target = run / rel
        data = target.read_bytes()
        target.write_bytes(data[: keep(len(data))])

    return apply


def append_text(rel: str, text: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        with open(run / rel, "a", encoding="utf-8") as handle:
            handle.write(text)

    return apply


def _checkpoints(run: Path, names: Iterable[str] | None = None) -> list[Path]:
    folder = run / "checkpoints"
    if names:
        return [folder / n if n.endswith((".pt", ".ckpt")) else folder / f"{n}.pt" for n in names]
    return sorted(p for p in folder.glob("*.pt"))


def nan_weights(names: Iterable[str] | None = None) -> Callable[[Path], None]:
    """Every floating tensor of the model (and EMA) state set to NaN, saved back."""
    chosen = list(names) if names else None

    def apply(run: Path) -> None:
        import torch

        for path in _checkpoints(run, chosen):
            if not path.exists():
                continue
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            states = [ckpt.get(k) for k in ("model", "ema", "state_dict")] \
                if isinstance(ckpt, dict) else []
            if isinstance(ckpt, dict) and not any(isinstance(s, dict) for s in states):
                states = [ckpt]  # a bare state dict
            for state in states:
                if isinstance(state, dict):
                    for key, tensor in state.items():
                        if torch.is_tensor(tensor) and tensor.is_floating_point():
                            state[key] = torch.full_like(tensor, float("nan"))
            torch.save(ckpt, path)

    return apply


def _own_monitor(ckpt: Any, path: Path) -> tuple[str, dict[str, Any] | None]:
    """The metric ``best_<metric>.pt`` is named for, and its (mutable) monitor record in the
    checkpoint: ``monitor[metric]`` (model-checkpoint/2) or ``monitor`` itself (/1)."""
    from pytest_mlgates.rundir import checkpoint_monitors

    monitors = checkpoint_monitors(ckpt)
    for metric, record in monitors.items():
        if record.get("metric") == metric:  # model-checkpoint/1: the one record names its metric
            return metric, record
    metric = path.stem[len("best_"):] if path.stem.startswith("best_") else ""
    return metric, monitors.get(metric)


def perturb_monitor(names: Iterable[str] | None = None) -> Callable[[Path], None]:
    """The value a best checkpoint says it was best at moves by 0.5 (log untouched)."""
    chosen = list(names) if names else None

    def apply(run: Path) -> None:
        import torch

        paths = _checkpoints(run, chosen) if chosen else sorted(
            (run / "checkpoints").glob("best_*.pt"))
        for path in paths:
            if not path.exists():
                continue
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            metric, record = _own_monitor(ckpt, path)
            if record is not None and isinstance(record.get("value"), (int, float)):
                record["value"] = float(record["value"]) + 0.5
                metrics = ckpt.get("metrics")
                if isinstance(metrics, dict) and metric in metrics:
                    metrics[metric] = float(metrics[metric]) + 0.5
            torch.save(ckpt, path)

    return apply


def perturb_logged_best(names: Iterable[str] | None = None) -> Callable[[Path], None]:
    """The log's value of each best checkpoint's metric, at that checkpoint's epoch, moves
    by 0.5: re-evaluating the checkpoint no longer reproduces what was logged."""
    chosen = list(names) if names else None

    def apply(run: Path) -> None:
        import torch

        paths = _checkpoints(run, chosen) if chosen else sorted(
            (run / "checkpoints").glob("best_*.pt"))
        changes: list[tuple[str, int]] = []
        for path in paths:
            if not path.exists():
                continue
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            metric, record = _own_monitor(ckpt, path)
            if record is not None and isinstance(ckpt.get("epoch"), int):
                changes.append((metric, int(ckpt["epoch"])))
        columns, rows = _read_log(run)
        for metric, epoch in changes:
            for row in rows:
                if metric in row and row.get("epoch") and float(row["epoch"]) == epoch:
                    row[metric] = repr(float(row[metric]) + 0.5)
        _write_log(run, columns, rows)

    return apply


def leak_split(rel: str, groups_key: str) -> Callable[[Path], None]:
    """The first train index (and its group id) also appears in val."""

    def apply(run: Path) -> None:
        path = run / rel
        splits = json.loads(path.read_text(encoding="utf-8"))
        names = [k for k, v in splits.items() if isinstance(v, list) and k != groups_key]
        source = "train" if "train" in names else names[0]
        target = "val" if "val" in names else next(n for n in names if n != source)
        splits[target].append(splits[source][0])
        groups = splits.get(groups_key)
        if isinstance(groups, dict) and isinstance(groups.get(source), list) and groups[source]:
            groups.setdefault(target, []).append(groups[source][0])
        path.write_text(json.dumps(splits), encoding="utf-8")

    return apply


def _combine(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        for step in steps:
            step(run)

    return apply


# --------------------------------------------------------------------------- planning


@dataclass
class Target:
    """One criterion to prove, the file it came from, and its mutations in tiers."""

    name: str
    gate: str
    file: str
    tiers: list[Mutation]
    note: str = ""


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v.get("metric")) if isinstance(v, dict) else str(v) for v in value]


def _log_columns(run: Path) -> list[str]:
    try:
        return _read_log(run)[0]
    except (OSError, ValueError):
        return []


def _tracked(run: Path, params: dict[str, Any]) -> list[tuple[str, str]]:
    given = params.get("metrics")
    if given:
        out = []
        for entry in given if isinstance(given, list) else [given]:
            if isinstance(entry, dict):
                out.append((str(entry.get("metric")), str(entry.get("mode") or "min")))
            else:
                out.append((str(entry), "min" if "loss" in str(entry) else "max"))
        return out
    try:
        import yaml

        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
        tracked = config.get("checkpoint", {}).get("tracked", [])
        return [(str(t["metric"]), str(t.get("mode", "min"))) for t in tracked]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError):
        return []
    except Exception:  # noqa: BLE001 -- yaml.YAMLError; unknown tracked metrics is no error
        return []


def _check_tiers(columns: list[str]) -> list[Mutation]:
    label = ",".join(columns)
    return [
        Mutation(f"check:nan:{label}", f"{label} set to NaN in every row",
                 set_columns(columns, lambda i, v: float("nan"))),
        Mutation(f"check:zero:{label}", f"{label} set to 0 in every row",
                 set_columns(columns, lambda i, v: 0.0)),
        Mutation(f"check:big:{label}", f"{label} set to 1e6 in every row",
                 set_columns(columns, lambda i, v: 1e6)),
        Mutation(f"check:neg:{label}", f"{label} set to -1e6 in every row",
                 set_columns(columns, lambda i, v: -1e6)),
    ]


def mutations_for(gate: str, params: dict[str, Any], run: Path,
                  check_columns: list[str] | None = None) -> tuple[list[Mutation], str]:
    """The mutations aimed at one criterion, in the order to try them, or a note why
    there is none (``shortcut`` needs a retrained model, a truth has no check)."""
    log_cols = _log_columns(run)
    numeric = [c for c in log_cols if c != "epoch"]
    if gate == "check":
        named = list(check_columns or [])
        # ``epoch`` only counts rows (``len(epoch) < 2 or ...``): mutate the metrics.
        cols = [c for c in named if c != "epoch" and (c in log_cols or not log_cols)] or named
        return _check_tiers(cols), ""
    if gate == "truth":
        return [], "a truth without a check is UNVERIFIED: there is nothing to turn RED"
    if gate == "finite_log":
        cols = _as_list(params.get("columns")) or (["val_loss"] if "val_loss" in log_cols
                                                   else numeric[:1])
        if not cols:
            return [], f"{LOG_CSV} has no numeric column to write a NaN into"
        return [Mutation(f"finite_log:{cols[0]}", f"NaN written into {cols[0]} (last row)",
                         set_columns(cols[:1], lambda i, v: float("nan"), rows_="last"))], ""
    if gate == "log_complete":
        return [Mutation("log_complete", f"last row of {LOG_CSV} dropped", drop_last_row)], ""
    if gate == "converged":
        metric = str(params.get("metric") or "val_loss")

        def flat(run_copy: Path) -> None:
            _, rows = _read_log(run_copy)
            first = rows[0][metric]
            set_columns([metric], lambda i, v: float(first))(run_copy)

        return [Mutation(f"converged:{metric}", f"{metric} made flat (every epoch = epoch 1)",
                         flat)], ""
    if gate == "class_recall":
        classes = _as_list(params.get("classes"))
        cols = [f"val_recall_{c}" for c in classes] if classes else \
            [c for c in log_cols if c.startswith("val_recall_")]
        if not cols:
            return [], "no val_recall_* column in the log"
        return [Mutation(f"class_recall:{cols[0]}", f"{cols[0]} set to 0 in every row",
                         set_columns(cols[:1], lambda i, v: 0.0))], ""
    if gate == "generalization_gap":
        train = str(params.get("train") or "train_accuracy")
        val = str(params.get("val") or "val_accuracy")
        return [Mutation(f"gap:{train}:{val}", f"{train} raised to 1, {val} lowered to 0",
                         _combine(set_columns([train], lambda i, v: 1.0),
                                  set_columns([val], lambda i, v: 0.0)))], ""
    if gate == "memorization":
        names = {k: str(params.get(k) or k) for k in
                 ("train_loss", "val_loss", "train_accuracy", "val_accuracy")}
        return [Mutation("memorization:" + ",".join(names.values()),
                         "train loss to ~0 and train accuracy to 1 while val loss climbs and "
                         "val accuracy falls",
                         _combine(set_columns([names["train_loss"]], lambda i, v: 1e-4),
                                  set_columns([names["train_accuracy"]], lambda i, v: 1.0),
                                  set_columns([names["val_loss"]], lambda i, v: 1.0 + 2.0 * i),
                                  set_columns([names["val_accuracy"]], lambda i, v: 0.1)))], ""
    if gate == "suspicious_perfection":
        defaults = [str(c) for c in ("val_accuracy", "val_auroc", "val_macro_f1")
                    if c in log_cols][:1]
        cols = _as_list(params.get("metrics")) or defaults
        if not cols:
            return [], "no val accuracy/AUROC/F1 column in the log"
        at = float(params.get("at", 1.0))
        return [Mutation(f"perfection:{cols[0]}:{at}", f"{cols[0]} set to {at} in every row",
                         set_columns(cols[:1], lambda i, v: at))], ""
    if gate == "baseline":
        metrics = params.get("metrics") or {"val_loss": {"mode": "min"}}
        worse = []
        for name, rule in metrics.items():
            mode = (rule or {}).get("mode", "min") if isinstance(rule, dict) else "min"
            worse.append(set_columns([name], (lambda i, v: abs(v) * 10 + 1) if mode == "min"
                                     else (lambda i, v: v - abs(v) - 1)))
        return [Mutation("baseline:" + ",".join(metrics), "every baseline metric made worse "
                         "than the baseline run", _combine(*worse))], ""
    if gate == "best_checkpoints":
        tracked = _tracked(run, params)
        if tracked:
            rel = f"checkpoints/best_{tracked[0][0]}.pt"
        else:
            found = sorted((run / "checkpoints").glob("best_*.pt"))
            if not found:
                return [], "no best_*.pt in the run to delete"
            rel = found[0].relative_to(run).as_posix()
        return [Mutation(f"remove:{rel}", f"{rel} deleted", remove(rel))], ""
    if gate == "checkpoint_softmax":
        chosen = _as_list(params.get("checkpoint")) or None
        return [Mutation(f"nan_weights:{chosen}", "model weights of "
                         f"{', '.join(chosen) if chosen else 'every checkpoint'} set to NaN",
                         nan_weights(chosen))], ""
    if gate == "reproduces":
        chosen = _as_list(params.get("checkpoint")) or None
        return [Mutation(f"logged_best:{chosen}", "the logged value of each best checkpoint's "
                         "metric at its epoch moved by 0.5", perturb_logged_best(chosen)),
                Mutation(f"monitor:{chosen}", "the stored monitor value of the best "
                         "checkpoint(s) moved by 0.5", perturb_monitor(chosen)),
                Mutation(f"nan_weights:{chosen}", "weights set to NaN", nan_weights(chosen))], ""
    if gate == "plots":
        files = _as_list(params.get("files")) or ["plots/loss_curve.png"]
        return [Mutation(f"truncate:{files[0]}", f"{files[0]} truncated to 40 bytes",
                         truncate(files[0], lambda size: min(size, 40))),
                Mutation(f"remove:{files[0]}", f"{files[0]} deleted", remove(files[0]))], ""
    if gate == "provenance":
        return [Mutation("edit:config.yaml", "config.yaml edited after the run",
                         append_text("config.yaml", "\n# edited after the run\nedited: 1\n"))], ""
    if gate == "split_integrity":
        rel = str(params.get("path") or "splits.json")
        groups = str(params.get("groups") or "groups")
        return [Mutation(f"leak:{rel}", f"a train index copied into val in {rel}",
                         leak_split(rel, groups))], ""
    if gate == "resume_point":
        rel = str(params.get("path") or "checkpoints/last.pt")
        return [Mutation(f"truncate:{rel}", f"{rel} truncated to half",
                         truncate(rel, lambda size: size // 2)),
                Mutation(f"remove:{rel}", f"{rel} deleted", remove(rel))], ""
    if gate == "artifact":
        rel = str(params.get("path"))
        tiers = [Mutation(f"remove:{rel}", f"{rel} deleted", remove(rel))]
        return tiers, ""
    if gate == "key_link":
        rel = str(params.get("from"))
        return [Mutation(f"remove:{rel}", f"{rel} deleted", remove(rel))], ""
    if gate == "shortcut":
        return [], ("no mutation: a shortcut lives in the trained weights; prove it by "
                    "training with data.faults: [shortcut] instead")
    return [], f"no mutation known for gate {gate!r}"


def gate_files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            for pattern in GATE_PATTERNS:
                found.extend(path.rglob(pattern))
        else:
            found.append(path)
    return sorted(set(found))


def plan_targets(run: Path, files: list[Path]) -> list[Target]:
    """Every acceptance criterion of the gate files, with its mutations."""
    from pytest_mlgates.collect import parse_gate_file
    from pytest_mlgates.errors import MlgatesError

    targets: list[Target] = []
    for path in files:
        try:
            document = parse_gate_file(path, plan=path.name.endswith("-PLAN.md"))
        except MlgatesError as err:
            raise ProveError(str(err)) from None
        if document is None:
            continue
        aliases = dict(document.metric_aliases or {})
        for criterion in document.acceptance_criteria():
            gate = criterion.gate_label
            columns = None
            if criterion.kind == "check" and criterion.check is not None:
                columns = sorted(aliases.get(n, n) for n in criterion.check.names)
            tiers, note = mutations_for(gate, dict(criterion.params), run, columns)
            targets.append(Target(criterion.name, gate, str(path), tiers, note))
    return targets


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
             work: Path) -> dict[tuple[str, str], str]:
    """Run every job's items in at most ``workers`` pytest subprocesses (several run
    copies per session: pytest and torch start once, not once per mutation)."""
    groups: list[list[Job]] = [[] for _ in range(max(1, min(workers, 2, len(jobs))))]
    for index, job in enumerate(sorted(jobs, key=lambda j: -len(j.targets))):
        groups[index % len(groups)].append(job)
    stamp = len(list(work.glob("batch-*.xml")))

    def one(item: tuple[int, list[Job]]) -> dict[tuple[str, str], str]:
        number, group = item
        return run_gates(group, work / f"batch-{stamp + number}.xml", baseline=baseline,
                         timeout_s=timeout_s)

    statuses: dict[tuple[str, str], str] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(groups)) as pool:
        for part in pool.map(one, enumerate(groups)):
            statuses.update(part)
    return statuses


def run_gates(group: list[Job], out_xml: Path, *, baseline: Path,
              timeout_s: float) -> dict[tuple[str, str], str]:
    """One pytest subprocess: ``{(run label, criterion): status}``."""
    command = [sys.executable, "-m", "pytest"]
    for job in group:
        command += [_nodeid(t, job.label) for t in job.targets]
    for job in group:
        command += ["--run-dir", job.label]
    command += [
        "--baseline-run", str(baseline), "-p", "no:cacheprovider", "-p", "no:xdist",
        "-p", "pytest_mlgates.archive", "--mlgates-archive=off", "-q",
        f"--junitxml={out_xml}", "-o", "junit_family=xunit1",
    ]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        raise ProveError(f"pytest on the gate files took more than {timeout_s:.0f} s") from None
    if not out_xml.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        raise ProveError(f"pytest on the gate files wrote no result (exit {proc.returncode}):"
                         f" {tail[0]}")
    return parse_junit(out_xml)


def parse_junit(path: Path) -> dict[tuple[str, str], str]:
    statuses: dict[tuple[str, str], str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        name = props.get("mlgates.criterion")
        run = props.get("mlgates.run")
        if not name or not run:
            continue
        status = props.get("mlgates.status")
        if case.find("failure") is not None:
            status = status if status in ("RED", "ERROR", "UNVERIFIED") else "RED"
        elif case.find("error") is not None:
            status = "ERROR"
        elif case.find("skipped") is not None:
            status = status if status == "UNVERIFIED" else "SKIPPED"
        statuses[(str(run), str(name))] = status or "GREEN"
    return statuses


def prove(run: Path, gates: list[Path], *, jobs: int = 2, timeout_s: float = 300.0,
          baseline: Path | None = None, write: bool = True) -> dict[str, Any]:
    """Apply every criterion's mutations to copies of ``run``; report what stayed GREEN.

    Tier 0 runs the unchanged copy (every criterion) and every criterion's first
    mutation in one go; each later tier retries, with the next mutation, only the
    criteria that stayed GREEN."""
    run = run.resolve()
    from pytest_mlgates.errors import RunDirError
    from pytest_mlgates.formats import detect
    from pytest_mlgates.rundir import _require_safe_torch

    try:  # the checkpoint mutations open the run's checkpoints (weights_only=True)
        _require_safe_torch()
    except RunDirError as err:
        raise ProveError(str(err)) from None
    fmt = detect(run) if run.is_dir() else None
    if fmt not in (None, "engine"):
        raise ProveError(f"{run}: a {fmt} run; mlgates prove mutates this engine's run-dir files "
                         "(training_log.csv, checkpoints/*.pt) and cannot yet mutate another trainer's run")
    files = [p.resolve() for p in gate_files(gates)]
    if not files:
        raise ProveError(f"no gate files (*.gates.yaml, *-PLAN.md) in "
                         f"{', '.join(map(str, gates))}")
    targets = plan_targets(run, files)
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
                                workers=jobs, work=work)
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
            entry["outcome"] = "stayed GREEN"
    criteria = list(results.values())
    report = {
        "time": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "run": str(run),
        "gate_files": [str(f) for f in files],
        "criteria": criteria,
        "defects": [c["criterion"] for c in criteria if c["outcome"] == "stayed GREEN"],
        "proven": [c["criterion"] for c in criteria if c["outcome"] == "RED"],
        "no_mutation": [c["criterion"] for c in criteria if c["outcome"] == "no mutation"],
        "not_green_before": [c["criterion"] for c in criteria
                             if c["outcome"] == "not GREEN before mutation"],
    }
    if write:
        report["proof_file"] = str(write_proof(run, report))
    return report


def write_proof(run: Path, report: dict[str, Any]) -> Path:
    """``<run>/acceptance/proof-<UTC>.json``, written whole (temp file, rename)."""
    folder = run / ARCHIVE_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = folder / f"proof-{stamp}.json"
    fd, temp = tempfile.mkstemp(prefix=".tmp-proof-", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, target)
    return target


def print_report(report: dict[str, Any]) -> None:
    for entry in report["criteria"]:
        outcome = entry["outcome"]
        label = {"RED": "RED", "stayed GREEN": "DEFECT", "no mutation": "NONE",
                 "not GREEN before mutation": "SKIP"}.get(outcome, outcome)
        detail = entry["mutation"] or entry["note"] or (
            f"was {entry['before']} before any mutation" if outcome.startswith("not GREEN")
            else "; ".join(t["mutation"] for t in entry["tried"]))
        print(f"{label:<7} {entry['gate']:<22} {entry['criterion']:<40} {detail}")
    total = len(report["criteria"])
    print(f"proof: {len(report['proven'])} of {total} criteria turned RED under their mutation; "
          f"{len(report['defects'])} stayed GREEN (defects); "
          f"{len(report['no_mutation'])} with no mutation; "
          f"{len(report['not_green_before'])} not GREEN before mutation")
    if report["defects"]:
        print("defects (gates that cannot fail): " + ", ".join(report["defects"]))
    if report.get("proof_file"):
        print(f"proof written to {report['proof_file']}")
