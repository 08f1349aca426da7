"""The parsed run dir: what every gate and the ``run`` fixture read, whatever wrote it.

This module holds the :class:`Run` base class every run format shares, built on
``runfiles.RunFiles`` (a run dir's files by relative path, read once); the gate file's
``run:`` section is ``runsection.RunSection``, a best checkpoint ``runbest.BestRecord``.
Each format (the engine, Lightning, the HF Trainer, MLflow, TensorBoard, a plain loop) is
one module of ``pytest_mlgates.formats`` holding its reader (a :class:`Run` subclass), its
detection and its ``mlgates prove`` mutations; ``pytest_mlgates.formats.open_run`` finds
the format and opens the run::

    >>> run = open_run("runs/x")            # the format is detected, or forced
    >>> run.format, run.final.val_loss, run.best_epoch
    ('engine', 0.31, 9)

A run dir comes from a stranger as often as from a colleague, so every reader is
defensive: a missing file, a ragged CSV row, a non-numeric cell, truncated JSON or a
checkpoint that wants to unpickle a class each give one :class:`RunDirError` line naming
the file and what was wrong -- never another exception and never executed code.  The
pieces a reader is built from are modules of their own: ``runfiles`` (a run dir's files,
opened safely), ``runvalues`` (cells and rows), ``runlog`` (the log as columns) and
``checkpoint_io`` (checkpoints, loaded with ``weights_only=True`` once per process).

Readers are lazy and cached: opening a run only finds the format from file names, and a
gate that needs only the log never opens a checkpoint.

Epoch numbers are the log's own everywhere: Lightning's count from 0, the engine's and
most hand-written loops' from 1 (``Log.first_epoch``); a checkpoint's epoch is compared
in the log's numbering (``BestRecord.epoch``, ``Run.resume_state``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pytest_mlgates.checkpoint_io import load_checkpoint_file, resume_kinds
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.runbest import BestRecord, best_index, default_mode, is_checkpoint_alias
from pytest_mlgates.runfiles import RunFiles
from pytest_mlgates.runlog import Log
from pytest_mlgates.runsection import RunSection
from pytest_mlgates.runvalues import Row, is_epoch_number

__all__ = ["BestRecord", "Run", "RunSection", "best_index", "default_mode", "is_checkpoint_alias"]


class Run(RunFiles):
    """A run dir, parsed lazily: what every format shares.  See the module docstring.

    One subclass per format (``pytest_mlgates.formats.<name>``) says where the log, the
    tracked metrics and the checkpoints are: ``_read_log``, ``tracked``, ``monitor``,
    ``best_checkpoint``, ``checkpoint_path``, ``default_checkpoint``, ``resume_state``,
    and optionally ``results``, ``config``, ``class_names``, ``splits_file``."""

    #: which trainer wrote the run dir (a name of ``pytest_mlgates.formats.FORMATS``)
    format = "?"
    #: the YAML file in the run dir that records its hyper-parameters, if the trainer writes one
    config_file: str | None = None

    def __init__(self, path: Path, section: RunSection | None = None) -> None:
        self.path = path
        self.section = section
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def results(self) -> dict[str, Any] | None:
        """The trainer's own summary of the run (the engine's training_results.json)."""
        return None

    @property
    def provenance(self) -> dict[str, Any] | None:
        return None

    def stopped_early(self) -> str | None:
        """One line when the trainer's own files say training stopped before its end
        (``log_complete`` reports it), else None; a format that cannot tell returns None."""
        return None

    @property
    def config(self) -> dict[str, Any] | None:
        """The run's hyper-parameters as the trainer recorded them, if it did: by default
        the YAML mapping :attr:`config_file` names."""
        name = self.config_file
        if name is None:
            return None
        return self._cached("config", lambda: self._optional_yaml_mapping(name))  # type: ignore[no-any-return]

    @property
    def splits_file(self) -> str:
        """The JSON of named index lists (``split_integrity``'s default ``path:``)."""
        return self.section.splits if self.section is not None and self.section.splits else "splits.json"

    @property
    def splits(self) -> dict[str, Any] | None:
        return self._cached("splits", lambda: self._optional_object(self.splits_file))

    @property
    def log(self) -> Log:
        return self._cached("log", self._read_log)

    def _read_log(self) -> Log:
        raise RunDirError(f"{self.shown(self.path)}: a {self.format} run has no log reader")

    def metric_history(self) -> Log | None:
        """A second copy of the log to compare with (the engine's metric_history.json)."""
        return None

    # -- rows ------------------------------------------------------------------------

    def row_at(self, index: int, label: str) -> Row:
        log = self.log
        if len(log) == 0:
            raise RunDirError(f"{self.shown(log.source)}: no rows (header only)")
        return Row({c: float(log.array(c)[index]) for c in log.names}, self.shown(log.source), label)

    def _row_of_step(self, row: int, label: str) -> Row:
        """A row of a log of steps: each column's value in the last row of that step that
        holds it (NaN when none does); the rows of one step are its training and
        evaluation rows."""
        import numpy as np

        log = self.log
        same = np.flatnonzero(log.labels == log.labels[row])
        values: dict[str, float] = {}
        for name in log.names:
            mask = log.held(name)
            rows = same if mask is None else same[mask[same]]
            values[name] = float(log.array(name)[rows[-1]]) if len(rows) else math.nan
        return Row(values, self.shown(log.source), label)

    @property
    def final(self) -> Row:
        """The last row; in a log of steps each column's last logged value (``final.<col>``)."""
        log = self.log
        if not log.sparse:
            return self.row_at(-1, "final")
        if len(log) == 0:
            raise RunDirError(f"{self.shown(log.source)}: no rows (header only)")
        values = {}
        for name in log.names:
            last = log.last_row(name)
            values[name] = math.nan if last is None else float(log.array(name)[last])
        return Row(values, self.shown(log.source), "final")

    @property
    def monitor(self) -> tuple[str, str]:
        """(metric, mode) that defines "best": the first :attr:`tracked` metric, else
        ``val_loss``, unless the format knows better."""
        tracked = self.tracked
        return tracked[0] if tracked else ("val_loss", "min")

    def _best_row(self) -> int | None:
        """Position of the row where the monitor metric is best (its first best value)."""
        metric, mode = self.monitor
        log = self.log
        if metric not in log:
            return None
        values, _ = log.series(metric)
        index = best_index(values, mode)
        return None if index is None else int(log.rows_of(metric)[index])

    @property
    def best_epoch(self) -> int | None:
        """The number of the best row: its epoch, or its step in a log of steps."""
        def make() -> int | None:
            row = self._best_row()
            return None if row is None else int(self.log.labels[row])

        return self._cached("best_epoch", make)  # type: ignore[no-any-return]

    @property
    def best(self) -> Row:
        metric, _mode = self.monitor
        log = self.log
        if metric not in log:
            raise RunDirError(f"{self.shown(log.source)}: monitor metric '{metric}' is not a logged column")
        row = self._best_row()
        if row is None:
            raise RunDirError(f"{self.shown(log.source)}: '{metric}' has no finite value, so no best epoch")
        if log.sparse:
            return self._row_of_step(row, f"best {metric}")
        return self.row_at(row, f"best {metric}")

    # -- what the run is about -----------------------------------------------------------

    @property
    def recorded_class_names(self) -> list[str] | None:
        """The name of each label, in label order, where the run records them (formats that
        do override this); None where it does not."""
        return None

    @property
    def class_names(self) -> list[str]:
        """Class names: those the run records (:attr:`recorded_class_names`), else the log's
        ``val_recall_<class>`` columns -- whose order says nothing about the labels."""
        recorded = self.recorded_class_names
        if recorded:
            return recorded
        try:
            return [c[len("val_recall_"):] for c in self.log.columns if c.startswith("val_recall_")]
        except RunDirError:
            return []

    @property
    def tracked(self) -> list[tuple[str, str]]:
        """(metric, mode) of every metric the run keeps a best checkpoint of."""
        return []

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint_path(self, name: str) -> Path:
        """A checkpoint by name (``best``, ``best_<metric>``, ``final``, ``last`` where the
        format knows them) or by its path relative to the run dir."""
        return self.resolve(name)

    def checkpoint(self, name: str) -> dict[str, Any]:
        """The checkpoint dict, loaded safely and once per process (see load_checkpoint_file)."""
        path = self.checkpoint_path(name)  # resolved inside the run dir
        return load_checkpoint_file(path, self.checkpoint_shown(name), root=self.path)

    def checkpoint_shown(self, name: str) -> str:
        """How checkpoint ``name`` is named in messages: ``runs/x/checkpoints/best_val_loss.pt``."""
        path = self.checkpoint_path(name)
        root = self.path.resolve()
        return self.shown(self.path / path.relative_to(root)) if path.is_relative_to(root) else str(path)

    def default_checkpoint(self) -> str:
        """The checkpoint a gate opens when the gate file names none."""
        raise RunDirError(f"{self.shown(self.path)}: a {self.format} run names no checkpoint to load; "
                          "give checkpoint: in the gate file")

    def resume_state(self) -> tuple[str, int | None, list[str], list[str]]:
        """The run's resume point: (shown name, epoch in the log's numbering, the kinds of
        state it holds, the kinds a resume needs that it lacks)."""
        raise RunDirError(f"{self.shown(self.path)}: a {self.format} run has no resume point the gate can read")

    def last_checkpoint_resume_state(self) -> tuple[str, int | None, list[str], list[str]]:
        """``resume_state`` of a format whose resume point is its ``last`` checkpoint, a
        dict: model and optimizer state needed, scheduler and RNG state named when there."""
        shown = self.checkpoint_shown("last")
        ckpt = self.checkpoint("last")
        kinds = resume_kinds(ckpt, shown)
        missing = [k for k in ("model", "optimizer") if k not in kinds]
        return shown, self.log_epoch_of(ckpt), kinds, missing

    def resume_hint(self, epoch: int | None, last_epoch: int) -> str:
        """Why the resume point is at ``epoch`` rather than the log's ``last_epoch``, when the
        format knows a trainer behaviour that explains it, with the fix ("" otherwise)."""
        return ""

    def resume_path(self) -> Path:
        """The file (or folder) ``resume_state`` reads: what ``mlgates prove`` corrupts."""
        raise RunDirError(f"{self.shown(self.path)}: a {self.format} run has no resume point the gate can read")

    def locate_best(self, metric: str, rel: str) -> BestRecord | tuple[str, Path]:
        """The best checkpoint of ``metric`` at ``rel``: ``(shown, resolved path)``, or a
        :class:`BestRecord` whose problem says that ``rel`` leads outside the run dir."""
        shown = self.shown(self.path / rel)
        try:
            return shown, self.resolve(rel)
        except RunDirError as exc:
            return BestRecord(metric, shown, problem=str(exc))

    def alias_metric(self, name: str) -> str:
        """The metric a checkpoint alias is the best of: :attr:`monitor`'s for ``best``,
        ``<metric>`` for ``best_<metric>``."""
        return self.monitor[0] if name == "best" else name[len("best_"):]

    def load_best(self, metric: str, rel: str, missing: str) -> BestRecord | tuple[str, Path, dict[str, Any]]:
        """The best checkpoint of ``metric`` at ``rel``, loaded: ``(shown, path, checkpoint)``;
        or a :class:`BestRecord` with the one-line problem -- outside the run dir, not found
        (``missing`` says what the trainer should have written), not loadable.  What each
        format's ``best_checkpoint`` does before it reads the recorded epoch and value."""
        found = self.locate_best(metric, rel)
        if isinstance(found, BestRecord):
            return found
        shown, path = found
        if not path.exists():
            return BestRecord(metric, shown, problem=f"{shown}: not found; {missing}")
        try:
            return shown, path, self.checkpoint(rel)
        except RunDirError as exc:
            return BestRecord(metric, shown, problem=str(exc), path=path)

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        """Where the best checkpoint of ``metric`` is, and the epoch and value it records."""
        shown = self.shown(self.path)
        return BestRecord(metric, shown, problem=f"{shown}: a {self.format} run keeps no best checkpoint "
                                                 f"the gate can read for {metric}")

    def log_epoch_of(self, ckpt: Any) -> int | None:
        """The epoch a checkpoint was saved at, in the log's numbering (its ``epoch``)."""
        epoch = ckpt.get("epoch") if isinstance(ckpt, dict) else None
        return epoch if is_epoch_number(epoch) else None

    # -- expressions ---------------------------------------------------------------------

    def eval_env(self, metric_aliases: dict[str, str] | None = None) -> Any:
        """The columns a ``check:`` sees (an ``expr.EvalEnv`` over the log's arrays), with
        the gate file's ``metrics:`` renames applied."""
        from pytest_mlgates.expr import EvalEnv

        # lazily: a check that never says best. must not open a checkpoint to find it
        return EvalEnv.from_log(self.log, lambda: self.best_epoch, metric_aliases)

    def real_column(self, name: str, metric_aliases: dict[str, str] | None = None) -> str:
        """The log's name of a column the gate file calls ``name`` (aliases applied), or a
        RunDirError naming the log."""
        log = self.log
        real = (metric_aliases or {}).get(name, name)
        if real in log:
            return real
        if name in log:
            return name
        raise RunDirError(
            f"{self.shown(log.source)}: no column '{real}' (columns: {', '.join(log.columns)[:200]})"
        )

    def column(self, name: str, metric_aliases: dict[str, str] | None = None) -> list[float]:
        """A logged column by its spec name (aliases applied), or a RunDirError naming the log."""
        return self.log.columns[self.real_column(name, metric_aliases)]

    def series(self, name: str, metric_aliases: dict[str, str] | None = None) -> tuple[Any, Any]:
        """(values, row positions) of a logged column by its spec name: every row of a log
        of epochs, the rows that hold it in a log of steps (``Log.series``)."""
        real = self.real_column(name, metric_aliases)
        values, _ = self.log.series(real)
        return values, self.log.rows_of(real)
