"""In-flight gates: after every epoch, is the run already doomed?

One class serves every training loop.  A hand-written loop calls it after the epoch's log
row and checkpoints are on disk; the Lightning and Hugging Face callbacks
(``pytest_mlgates.lightning`` / ``.huggingface``) and the bundled engine call the same::

    >>> from pytest_mlgates.inflight import Gates
    >>> gates = Gates("acceptance/inflight.gates.yaml", run_dir="runs/x")
    >>> verdict = gates.check(epoch)
    >>> if verdict.red:
    ...     print(verdict.reason)      # criterion inflight_min_recall: val_recall_3 = 0.000 ...
    ...     break

A RED verdict is also recorded in ``<run>/mlgates_inflight.json`` (``status:
aborted_by_gate``, the criterion, its one-line reason, the epoch), which acceptance gates
and ``mlgates verdict`` see.

Criteria are parsed by the same ``collect.parse_gate_file`` and judged by the same
``expr``/``gates`` code as ``pytest acceptance/``: an in-flight verdict and the later
acceptance verdict cannot disagree about what a criterion means.

Which criteria run in flight: those that say ``stage: inflight``; when none in the file
does, every criterion of the file except ``stage: preflight`` ones and plain truths (a
file handed to ``Gates`` is an in-flight file).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["INFLIGHT_FILE", "Gates", "InflightGateWarning", "Verdict", "inflight_criteria", "read_inflight_stop"]

#: Where a gated stop is recorded, in the run dir the gates read.
INFLIGHT_FILE = "mlgates_inflight.json"


class InflightGateWarning(UserWarning):
    """A criterion that could not be judged this epoch (it does not stop the run)."""


@dataclass(frozen=True)
class Verdict:
    """What :meth:`Gates.check` found after one epoch.

    ``red`` is True when a criterion failed: ``criterion`` names it and ``reason`` is its
    one line (``criterion inflight_min_recall: val_recall_3 = 0.000 at epoch 4 (final);
    needs > 0``).  ``checked`` is False when the epoch came before ``after_epoch``.
    ``bool(verdict)`` is True for a run that may go on.
    """

    red: bool
    epoch: int
    reason: str | None = None
    criterion: str | None = None
    checked: bool = True

    def __bool__(self) -> bool:
        return not self.red


def inflight_criteria(document: Any) -> list[Any]:
    """The criteria of a parsed gate file that are judged during training.  An
    ``across_runs`` criterion is not: it judges the seeds together, and one seed may fail
    it while the set passes, so stopping that seed's training would be wrong."""
    criteria = [c for c in document.criteria if getattr(c, "across_runs", None) is None]
    marked = [c for c in criteria if c.stage == "inflight"]
    if marked:
        return marked
    return [c for c in criteria if c.stage != "preflight" and c.kind != "truth"]


class Gates:
    """The in-flight criteria of ``gate_file``, judged on ``run_dir`` after each epoch.

    The gate file is parsed here, before training, so a broken file stops the launch with
    one line naming file, line and column (a :class:`~pytest_mlgates.errors.GateFileError`).
    ``after_epoch`` is the first epoch judged, counted in completed epochs from 1 whatever
    the trainer (earlier epochs give a GREEN verdict with ``checked=False``).
    ``run_format`` forces a reader, as ``--run-format`` does; by default the gate file's
    ``run:`` section, else detection, says how ``run_dir`` is read.  ``rootdir`` is where a
    key link's ``to`` is looked up (default: the working directory).
    """

    def __init__(self, gate_file: str | os.PathLike[str], run_dir: str | os.PathLike[str], *,
                 after_epoch: int = 1, run_format: str | None = None,
                 rootdir: str | os.PathLike[str] | None = None) -> None:
        from pytest_mlgates.collect import parse_gate_file
        from pytest_mlgates.errors import GateFileError

        if isinstance(after_epoch, bool) or not isinstance(after_epoch, int) or after_epoch < 1:
            raise GateFileError(f"after_epoch must be a whole number of epochs >= 1, got {after_epoch!r}")
        path = Path(gate_file)
        if not path.is_file():
            raise GateFileError(f"{gate_file}: in-flight gate file not found")
        document = parse_gate_file(path, plan=path.name.endswith("-PLAN.md"), display=str(gate_file))
        if document is None:
            raise GateFileError(f"{gate_file}: a plan without must_haves front matter has no criteria")
        self.gate_file = path
        self.document = document
        self.criteria = inflight_criteria(document)
        self.run_dir = Path(run_dir)
        self.after_epoch = after_epoch
        self.run_format = run_format
        self.rootdir = Path(rootdir) if rootdir is not None else Path.cwd()
        self._noted: set[tuple[str, str]] = set()
        if not self.criteria:
            warnings.warn(f"{gate_file}: no criteria to judge during training", InflightGateWarning, stacklevel=2)

    @property
    def named_format(self) -> str | None:
        """The format the gate file's ``run:`` section names, if any: a trainer's callback
        forces its own reader only when the gate file names none."""
        section = getattr(self.document, "run", None)
        if isinstance(section, Mapping):
            return section.get("format")
        return getattr(section, "format", None)

    def check(self, epoch: int) -> Verdict:
        """Judge the run as it is on disk after ``epoch`` completed epochs (from 1).

        The first RED criterion decides; it is recorded in ``mlgates_inflight.json``.  A
        criterion that cannot be judged yet (a file not written so far) does not stop the
        run: it is named once in an :class:`InflightGateWarning`, and acceptance judges it
        after training.
        """
        if epoch < self.after_epoch:
            return Verdict(red=False, epoch=epoch, checked=False)
        from pytest_mlgates.errors import MlgatesError
        from pytest_mlgates.formats import open_run

        try:
            run = open_run(self.run_dir, self.run_format, getattr(self.document, "run", None))
        except MlgatesError as err:
            self._note("run", f"after epoch {epoch}: {err}")
            return Verdict(red=False, epoch=epoch)
        for criterion in self.criteria:
            try:
                passed, message = self._judge(criterion, run)
            except MlgatesError as err:
                self._note(criterion.name, f"after epoch {epoch}: criterion {criterion.name} not judged: {err}")
                continue
            if not passed:
                reason = f"criterion {criterion.name}: {' '.join(str(message).split())}"
                verdict = Verdict(red=True, epoch=epoch, reason=reason, criterion=criterion.name)
                self._record(run.path, verdict)
                return verdict
        return Verdict(red=False, epoch=epoch)

    def check_or_warn(self, epoch: int) -> Verdict:
        """:meth:`check` for a trainer's callback: a failure of the plugin itself warns (an
        :class:`InflightGateWarning`) instead of killing the user's run; acceptance judges
        the run after training."""
        try:
            return self.check(epoch)
        except Exception as exc:  # noqa: BLE001 - training goes on; acceptance judges later
            text = " ".join(str(exc).split()) or type(exc).__name__
            warnings.warn(f"in-flight gates: after epoch {epoch}: not judged ({type(exc).__name__}: {text[:200]})",
                          InflightGateWarning, stacklevel=3)
            return Verdict(red=False, epoch=epoch, checked=False)

    def _judge(self, criterion: Any, run: Any) -> tuple[bool, str]:
        aliases = dict(self.document.metric_aliases)
        if criterion.kind == "check":
            outcome = criterion.check.evaluate(run.eval_env(aliases))
            return bool(outcome.passed), outcome.text
        from pytest_mlgates import gates

        ctx = gates.GateContext(rootdir=self.rootdir, metric_aliases=aliases)
        result = gates.get_gate(criterion.gate).fn(run, dict(criterion.params), ctx)
        return bool(result.passed), result.message

    def _record(self, run_path: Path, verdict: Verdict) -> None:
        """``mlgates_inflight.json`` in the run dir, written atomically."""
        record = {
            "status": "aborted_by_gate",
            "criterion": verdict.criterion,
            "reason": verdict.reason,
            "epoch": verdict.epoch,
            "gate_file": str(self.gate_file),
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            fd, tmp = tempfile.mkstemp(prefix=".mlgates_inflight.", dir=run_path)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, run_path / INFLIGHT_FILE)
        except OSError as exc:
            self._note("record", f"cannot write {run_path / INFLIGHT_FILE} ({exc.strerror or exc})")

    def _note(self, key: str, message: str) -> None:
        if (key, message) not in self._noted:
            self._noted.add((key, message))
            warnings.warn(f"in-flight gates: {message}", InflightGateWarning, stacklevel=3)


def read_inflight_stop(run_dir: Path) -> dict[str, Any] | None:
    """The gated stop recorded in ``run_dir`` (None when the run was never stopped by a gate
    or the record is unreadable: acceptance gates judge the files either way).  The file is
    opened without following a symlink and without blocking, and read only when it is a
    regular file of at most 1 MiB: a FIFO in its place never hangs a verdict."""
    import stat

    path = Path(run_dir) / INFLIGHT_FILE
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 1 << 20:
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = json.loads(fh.read(1 << 20).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) and data.get("status") == "aborted_by_gate" else None
