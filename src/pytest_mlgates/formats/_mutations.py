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

This module is the gate map (:class:`Mutations`: which mutations each gate gets); the log
editors are ``_log_editors.py``, the file mutations ``_file_mutations.py``, the mutation
type ``_mutation_base.py``.  All of their names are importable from here as well.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlgates.errors import MlgatesError
from pytest_mlgates.formats._file_mutations import (
    append_text,
    drop_state,
    leak_split,
    nan_checkpoint_file,
    nan_weights,
    remove,
    truncate,
)
from pytest_mlgates.formats._log_editors import (
    LogEditor,
    RowsEditor,
    blank_last,
    cell_float,
    edit_log,
)
from pytest_mlgates.formats._mutation_base import Mutation, MutationError, combine

if TYPE_CHECKING:
    from pytest_mlgates.rundir import Run

__all__ = ["LogEditor", "Mutation", "MutationError", "Mutations", "RowsEditor", "append_text", "as_names",
           "blank_last", "cell_float", "combine", "drop_state", "edit_log", "leak_split", "nan_checkpoint_file",
           "nan_weights", "remove", "truncate"]


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
