"""What ``mlgates prove`` does to a copy of a run to turn each gate RED, format by format.

A gate that cannot fail proves nothing.  Each format module has a ``Mutations`` class
(a subclass of :class:`Mutations` here) that knows how to edit its own files: the log
through a :class:`LogEditor` (``training_log.csv``, Lightning's ``metrics.csv``, the HF
Trainer's ``trainer_state.json``, an MLflow store, TensorBoard event files, a plain loop's
CSV or JSONL), and its checkpoints (a best file removed, weights set to NaN, a resume
point without optimizer state).  Each gate declares the mutations aimed at it beside its
function (``@gate(mutations=...)`` in ``gates/*.py``), written with the editors and file
mutations of this module; a format whose files differ overrides them with a
``gate_<name>`` method, and says in one line where a gate has no mutation::

    >>> Mutations.for_run(run).for_criterion("finite_log", {}, None)
    ([Mutation('finite_log:val_loss', 'NaN written into val_loss (last epoch)', ...)], '')

A mutation that cannot change anything (the column is not in the log, the file is gone)
raises :class:`MutationError`: ``prove`` reports it, and never counts it as a gate that
stayed GREEN.  Mutations are given the path of the copy's run dir and write only there.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlgates.errors import MlgatesError

if TYPE_CHECKING:
    from pytest_mlgates.rundir import Run

__all__ = ["LogEditor", "Mutation", "MutationError", "Mutations", "RowsEditor"]


class MutationError(Exception):
    """A mutation that could not be applied to the copy: reported, never a defect."""


@dataclass(frozen=True)
class Mutation:
    """One change to a run copy; ``key`` identifies it so one mutated copy serves every
    criterion that asks for the same change."""

    key: str
    description: str
    apply: Callable[[Path], None] = field(compare=False, hash=False)


# --------------------------------------------------------------------------- log editors


class LogEditor:
    """A run copy's log, editable cell by cell in the log's own terms.

    ``cells(column)`` gives handles of the cells that hold a value of ``column``, in log
    order (one per epoch for most formats, one per logged point for MLflow/TensorBoard);
    ``get``/``set``/``blank`` read, write and empty one; ``save`` writes the files back."""

    def columns(self) -> list[str]:
        raise NotImplementedError

    def cells(self, column: str) -> list[Any]:
        raise NotImplementedError

    def get(self, column: str, handle: Any) -> float:
        raise NotImplementedError

    def set(self, column: str, handle: Any, value: float) -> None:
        raise NotImplementedError

    def blank(self, column: str, handle: Any) -> None:
        raise NotImplementedError

    def save(self) -> None:
        raise NotImplementedError


def cell_float(cell: Any) -> float:
    try:
        return float(cell)
    except (TypeError, ValueError):
        return float("nan")


class RowsEditor(LogEditor):
    """A table of rows (CSV or JSONL) whose ``key`` column numbers the epoch (or step);
    several rows may share one epoch (Lightning's train and val rows)."""

    def __init__(self, path: Path, key: str = "epoch", jsonl: bool = False) -> None:
        self.path = path
        self.key = key
        self.jsonl = jsonl
        text = path.read_text(encoding="utf-8")
        if jsonl:
            self.rows: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines() if line.strip()]
            self.header: list[str] = list(dict.fromkeys(k for row in self.rows for k in row))
        else:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            self.header = list(reader.fieldnames or [])
            self.rows = list(reader)

    def columns(self) -> list[str]:
        return [c for c in self.header if c != self.key]

    def _filled(self, row: dict[str, Any], column: str) -> bool:
        cell = row.get(column)
        return cell is not None and str(cell).strip() != ""

    def cells(self, column: str) -> list[Any]:
        seen: dict[str, None] = {}
        for row in self.rows:
            if self._filled(row, column) and self._filled(row, self.key):
                seen.setdefault(str(row[self.key]).strip(), None)
        return list(seen)

    def _rows_of(self, handle: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows if self._filled(r, self.key) and str(r[self.key]).strip() == handle]

    def get(self, column: str, handle: Any) -> float:
        values = [r[column] for r in self._rows_of(handle) if self._filled(r, column)]
        return cell_float(values[-1]) if values else float("nan")

    def set(self, column: str, handle: Any, value: float) -> None:
        for row in self._rows_of(handle):
            if self._filled(row, column):
                row[column] = float(value) if self.jsonl else repr(float(value))

    def blank(self, column: str, handle: Any) -> None:
        for row in self._rows_of(handle):
            if self.jsonl:
                row.pop(column, None)
            else:
                row[column] = ""

    def drop_last(self) -> None:
        """Drop every row of the last epoch."""
        keys = [str(r[self.key]).strip() for r in self.rows if self._filled(r, self.key)]
        if not keys:
            raise MutationError(f"{self.path.name}: no row to drop")
        self.rows = [r for r in self.rows if str(r.get(self.key, "")).strip() != keys[-1]]

    def text(self) -> str:
        if self.jsonl:
            return "".join(json.dumps(row) + "\n" for row in self.rows)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    def save(self) -> None:
        self.path.write_text(self.text(), encoding="utf-8")


def edit_log(open_log: Callable[[Path], LogEditor], columns: Iterable[str],
             value: Callable[[int, float], float], rows: str = "all") -> Callable[[Path], None]:
    """A mutation that rewrites log columns: ``value(index, old) -> new`` for every cell of
    each column (``rows="all"``) or its last one (``"last"``)."""
    wanted = list(columns)

    def apply(run: Path) -> None:
        editor = open_log(run)
        present = editor.columns()
        changed = 0
        for column in wanted:
            if column not in present:
                continue
            handles = editor.cells(column)
            chosen = handles if rows == "all" else handles[-1:]
            for index, handle in enumerate(handles):
                if handle in chosen:
                    editor.set(column, handle, value(index, editor.get(column, handle)))
                    changed += 1
        if not changed:
            raise MutationError(f"no cell of {', '.join(wanted)} in the log to change")
        editor.save()

    return apply


def blank_last(open_log: Callable[[Path], LogEditor], column: str) -> Callable[[Path], None]:
    """A mutation that empties ``column`` at the last epoch that logged it."""
    def apply(run: Path) -> None:
        editor = open_log(run)
        handles = editor.cells(column) if column in editor.columns() else []
        if not handles:
            raise MutationError(f"no cell of {column} in the log to empty")
        editor.blank(column, handles[-1])
        editor.save()

    return apply


def combine(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        for step in steps:
            step(run)

    return apply


# --------------------------------------------------------------------------- file mutations


def remove(rel: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        target = run / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        else:
            raise MutationError(f"{rel}: not in the run to delete")

    return apply


def truncate(rel: str, keep: Callable[[int], int]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        target = run / rel
        if not target.is_file():
            raise MutationError(f"{rel}: not a file to truncate")
        data = target.read_bytes()
        target.write_bytes(data[: keep(len(data))])

    return apply


def append_text(rel: str, text: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        if not (run / rel).is_file():
            raise MutationError(f"{rel}: not a file to edit")
        with open(run / rel, "a", encoding="utf-8") as handle:
            handle.write(text)

    return apply


def leak_split(rel: str, groups_key: str) -> Callable[[Path], None]:
    """The first train index (and its group id) also appears in val."""

    def apply(run: Path) -> None:
        path = run / rel
        if not path.is_file():
            raise MutationError(f"{rel}: no splits file to leak")
        splits = json.loads(path.read_text(encoding="utf-8"))
        names = [k for k, v in splits.items() if isinstance(v, list) and k != groups_key and v]
        if len(names) < 2:
            raise MutationError(f"{rel}: fewer than two non-empty splits")
        source = "train" if "train" in names else names[0]
        target = "val" if "val" in names else next(n for n in names if n != source)
        splits[target].append(splits[source][0])
        groups = splits.get(groups_key)
        if isinstance(groups, dict) and isinstance(groups.get(source), list) and groups[source]:
            groups.setdefault(target, []).append(groups[source][0])
        path.write_text(json.dumps(splits), encoding="utf-8")

    return apply


def _nan_state(state: dict[str, Any]) -> int:
    import torch

    changed = 0
    for key, tensor in state.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            state[key] = torch.full_like(tensor, float("nan"))
            changed += 1
    return changed


def nan_checkpoint_file(path: Path, extra_keys: tuple[str, ...] = ()) -> None:
    """Every floating tensor of a checkpoint's weights (``state_dict_of``, and ``extra_keys``
    such as the engine's ``ema``) set to NaN, saved back; a safetensors file likewise."""
    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file, save_file

        tensors = dict(load_file(str(path)))
        if not _nan_state(tensors):
            raise MutationError(f"{path.name}: no floating tensor to set to NaN")
        save_file(tensors, str(path))
        return
    import torch

    from pytest_mlgates.checkpoint_io import safe_torch_load, state_dict_of

    ckpt = safe_torch_load(path, mmap=False)
    try:
        states = [state_dict_of(ckpt, path.name)]
    except MlgatesError as err:
        raise MutationError(str(err)) from None
    states += [ckpt[k] for k in extra_keys if isinstance(ckpt, dict) and isinstance(ckpt.get(k), dict)]
    if not sum(_nan_state(s) for s in states):
        raise MutationError(f"{path.name}: no floating tensor to set to NaN")
    torch.save(ckpt, path)


def nan_weights(rels: list[str], extra_keys: tuple[str, ...] = ()) -> Callable[[Path], None]:
    """The weights of each checkpoint (a file, or a folder of weight files) set to NaN."""
    def apply(run: Path) -> None:
        done = 0
        for rel in rels:
            target = run / rel
            # a folder is an HF checkpoint: its weight files only (its optimizer.pt,
            # rng_state.pth and training_args.bin are pickles that are never opened)
            files = [target] if target.is_file() else sorted(
                p for p in target.glob("*") if (p.name.startswith("model") and p.name.endswith(".safetensors"))
                or (p.name.startswith("pytorch_model") and p.name.endswith(".bin")))
            for file in files:
                nan_checkpoint_file(file, extra_keys)
                done += 1
        if not done:
            raise MutationError(f"{', '.join(rels)}: no checkpoint to set to NaN")

    return apply


def drop_state(rel: str, kind: str) -> Callable[[Path], None]:
    """A checkpoint loses one kind of resume state (``optimizer``...), saved back."""
    def apply(run: Path) -> None:
        from pytest_mlgates.checkpoint_io import RESUME_KEYS

        target = run / rel
        if target.is_dir():
            names = {"optimizer": ("optimizer.pt",), "scheduler": ("scheduler.pt",), "rng": ("rng_state.pth",)}[kind]
            found = [target / n for n in names if (target / n).exists()]
            if not found:
                raise MutationError(f"{rel}: no {kind} state to remove")
            for file in found:
                file.unlink()
            return
        import torch

        from pytest_mlgates.checkpoint_io import safe_torch_load

        ckpt = safe_torch_load(target, mmap=False)
        keys = [k for k in RESUME_KEYS[kind] if isinstance(ckpt, dict) and k in ckpt]
        if not keys:
            raise MutationError(f"{rel}: no {kind} state to remove")
        for key in keys:
            del ckpt[key]
        torch.save(ckpt, target)

    return apply


# --------------------------------------------------------------------------- the gate map


def as_names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v.get("metric")) if isinstance(v, dict) else str(v) for v in value]


class Mutations:
    """The mutations aimed at each gate, for runs of one format.

    A format's subclass sets :meth:`open_log` (how to edit its log) and, with a
    ``gate_<name>`` method, replaces the mutations a gate declares where the format
    writes that gate's files differently.  Paths are relative to the run dir; the copy
    a mutation edits is the run dir of a copied run."""

    def __init__(self, run: Run, aliases: dict[str, str] | None = None) -> None:
        self.run = run
        self.root = run.path.resolve()
        self.aliases = dict(aliases or {})
        try:
            self.log_columns = [c for c in run.log.columns if c != "epoch"]
        except MlgatesError:
            self.log_columns = []

    # -- what a format supplies ---------------------------------------------------------

    def open_log(self, run: Path) -> LogEditor:
        raise MutationError(f"a {self.run.format} run's log cannot be edited")

    @property
    def log_name(self) -> str:
        try:
            return self.run.shown(self.run.log.source).rsplit("/", 1)[-1]
        except MlgatesError:
            return "the log"

    # -- helpers ---------------------------------------------------------------------------

    def real(self, name: str) -> str:
        """The logged column a gate file's name means: the name, else its ``metrics:`` map."""
        if name in self.log_columns:
            return name
        mapped = self.aliases.get(name)
        return mapped if mapped in self.log_columns else name

    def matching(self, pattern: str) -> list[str]:
        real = self.aliases.get(pattern, pattern)
        found = [c for c in self.log_columns if fnmatch.fnmatchcase(c, real)]
        return found or [c for c in self.log_columns if fnmatch.fnmatchcase(c, pattern)]

    def rel(self, path: Path) -> str | None:
        """``path`` (resolved) relative to the run dir, or None when it lies outside."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except (ValueError, OSError):
            return None

    def set_log(self, columns: list[str], value: Callable[[int, float], float], rows: str = "all") -> Callable[[Path], None]:
        return edit_log(self.open_log, columns, value, rows)

    def _check_tiers(self, columns: list[str]) -> list[Mutation]:
        label = ",".join(columns)
        return [
            Mutation(f"check:nan:{label}", f"{label} set to NaN in every epoch",
                     self.set_log(columns, lambda i, v: float("nan"))),
            Mutation(f"check:zero:{label}", f"{label} set to 0 in every epoch", self.set_log(columns, lambda i, v: 0.0)),
            Mutation(f"check:big:{label}", f"{label} set to 1e6 in every epoch", self.set_log(columns, lambda i, v: 1e6)),
            Mutation(f"check:neg:{label}", f"{label} set to -1e6 in every epoch",
                     self.set_log(columns, lambda i, v: -1e6)),
        ]

    # -- the map ---------------------------------------------------------------------------

    def for_criterion(self, gate: str, params: dict[str, Any],
                      check_columns: list[str] | None = None) -> tuple[list[Mutation], str]:
        """The mutations aimed at one criterion, in the order to try them, or a one-line
        note saying why there is none: this format's ``gate_<name>`` where it has one, else
        the mutations the gate declares beside its function (``@gate(mutations=...)``)."""
        if gate == "check":
            return self.check(list(check_columns or []))
        if gate == "truth":
            return [], "a truth without a check is UNVERIFIED: there is nothing to turn RED"
        own = getattr(self, f"gate_{gate}", None)
        try:
            return own(params) if own is not None else self.declared(gate, params)  # type: ignore[no-any-return]
        except MlgatesError as err:  # the run cannot say where the file is: say why, in one line
            return [], f"no mutation: {err}"

    def declared(self, gate: str, params: dict[str, Any]) -> tuple[list[Mutation], str]:
        """The mutations the gate declares (what a format's ``gate_<name>`` may fall back on)."""
        from pytest_mlgates.gates import declaration

        try:
            mutations = declaration(gate).mutations
        except MlgatesError:
            mutations = None
        if mutations is None:
            return [], f"no mutation known for gate {gate!r}"
        return mutations(self, params)

    def check(self, named: list[str]) -> tuple[list[Mutation], str]:
        # ``epoch`` only counts rows (``len(epoch) < 2 or ...``): mutate the metrics.
        cols = [self.real(c) for c in named if c != "epoch"]
        cols = [c for c in cols if c in self.log_columns] or cols
        if not cols:
            return [], "no mutation: the check names no logged column"
        return self._check_tiers(cols), ""
