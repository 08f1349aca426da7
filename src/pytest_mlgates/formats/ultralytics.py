"""An Ultralytics YOLO training run (``runs/<task>/train<N>/``), and its ``mlgates prove`` mutations.

What Ultralytics 8.x writes, and what this reader does with it::

    train/
      results.csv     one row per epoch, from 1: epoch, time, train/loss,
                      metrics/accuracy_top1, metrics/accuracy_top5, val/loss, lr/pg0... (classify);
                      train/box_loss, metrics/mAP50-95(B), val/box_loss... (detect). Older
                      versions pad the header names with spaces: they are stripped.
      args.yaml       the training arguments (``run.config``), read with yaml.safe_load
      weights/best.pt, weights/last.pt, weights/epoch<N>.pt
                      pickles of a whole model (``ema`` is an ``nn.Module``): NEVER opened.

The weights files cannot be loaded without running the code they name (``weights_only``
refuses ``ultralytics.nn.tasks.ClassificationModel``), so every gate that would open one
says so in one line and names the safe export, a ``state_dict`` saved with ``torch.save``.
Ultralytics replaces NaN weights with numbers when it saves (``nan_to_num_``), so a NaN
run shows only in ``results.csv``: ``finite_log`` reads it there.

Ultralytics keeps ``best.pt`` by its fitness (classify: the mean of top-1 and top-5
accuracy; detect: mAP50-95), not a column of ``results.csv``; ``best_checkpoints`` checks
that the file is there and names the best epoch of the metric asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.formats._tables import CsvFileRun, StrippedRowsEditor, table_evidence
from pytest_mlgates.gates.rebuild import checkpoint_name
from pytest_mlgates.rundir import BestRecord, is_checkpoint_alias

__all__ = ["IDENTIFIED_BY", "Mutations", "UltralyticsRun", "detect", "read"]

IDENTIFIED_BY = "results.csv beside args.yaml or weights/"
#: Ultralytics' own loggers write into the run folder when a user turns them on.
CONTAINS = ("tensorboard",)
#: The metric best.pt follows, by task (the first column of these the log has).
_FITNESS_COLUMNS = ("metrics/mAP50-95(B)", "metrics/mAP50-95(M)", "metrics/mAP50-95(P)",
                    "metrics/accuracy_top1", "metrics/mIoU", "metrics/delta1")


def detect(path: Path) -> list[str]:
    return table_evidence(path, "results.csv", ("args.yaml", "weights/"))


def refusal(shown: str, what: str = "weights") -> str:
    """The one line every gate that would open an Ultralytics ``.pt`` file gives."""
    return (f"{shown}: an Ultralytics {what} file pickles the whole model, so it is never opened (loading "
            "it would run the code it names); export a state_dict -- torch.save(YOLO('best.pt').model"
            ".state_dict(), 'best_state_dict.pt') -- and name that file (checkpoint: best_state_dict.pt)")


class UltralyticsRun(CsvFileRun):
    format = "ultralytics"
    config_file = "args.yaml"
    log_file = "results.csv"

    @property
    def tracked(self) -> list[tuple[str, str]]:
        columns = self.log.columns  # an unreadable results.csv says so, not "no tracked metric"
        return [(c, "max") for c in _FITNESS_COLUMNS if c in columns][:1]

    @property
    def monitor(self) -> tuple[str, str]:
        tracked = self.tracked
        return tracked[0] if tracked else ("val/loss", "min")

    # -- checkpoints ---------------------------------------------------------------------

    def _weights(self, name: str) -> Path:
        return self.resolve(f"weights/{name}.pt")

    def checkpoint_path(self, name: str) -> Path:
        """``best`` / ``best_<metric>`` (weights/best.pt), ``last`` / ``final``
        (weights/last.pt), or a path relative to the run dir."""
        if is_checkpoint_alias(name):
            return self._weights("best" if name.startswith("best") else "last")
        return self.resolve(name)

    def checkpoint(self, name: str) -> dict[str, Any]:
        """A state dict the user exported; an Ultralytics weights file is refused unopened."""
        path = self.checkpoint_path(name)
        shown = self.checkpoint_shown(name)
        weights_dir = (self.path / "weights").resolve()
        if path.parent == weights_dir and path.suffix == ".pt":
            if not path.exists():
                raise RunDirError(f"{shown}: not found")
            raise RunDirError(refusal(shown))
        from pytest_mlgates.checkpoint_io import load_checkpoint_file

        return load_checkpoint_file(path, shown, root=self.path)

    def default_checkpoint(self) -> str:
        return "best"

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        found = self.locate_best(metric, "weights/best.pt")
        if isinstance(found, BestRecord):
            return found
        shown, real = found
        if not real.is_file():
            return BestRecord(metric, shown, problem=(
                f"{shown}: not found; Ultralytics writes it whenever its fitness improves (needs one best checkpoint)"))
        return BestRecord(metric, shown, path=real, unread=(
            "it pickles the whole model and is never opened; export a state_dict to check the weights"))

    def resume_state(self) -> tuple[str, int | None, list[str], list[str]]:
        shown = self.shown(self.path / "weights" / "last.pt")
        path = self._weights("last")
        if not path.exists():
            raise RunDirError(f"{shown}: not found; needs a resume point (Ultralytics writes weights/last.pt "
                              "every epoch)")
        raise RunDirError(refusal(shown, "resume"))

    def resume_path(self) -> Path:
        return self._weights("last")

    def stopped_early(self) -> str | None:
        """Ultralytics ends training by stripping ``weights/last.pt``: ``epoch`` set to -1 and
        ``optimizer`` to None (``final_eval`` -> ``strip_optimizer``).  A last.pt that still
        holds an epoch and its optimizer is a run that stopped before its end -- killed, or
        stopped by its own NaN recovery ("Training failed: NaN persisted"), which never
        writes the NaN to results.csv.  The two fields are read from the pickle's opcodes
        (``pickle_peek``); the model it pickles is never built."""
        from pytest_mlgates.pickle_peek import PeekError, checkpoint_fields
        from pytest_mlgates.runfiles import run_file

        path = self.path / "weights" / "last.pt"
        if not path.exists() and not path.is_symlink():
            return None  # nothing to tell from; best_checkpoints / resume_point name it
        shown = self.shown(path)
        try:
            fields = checkpoint_fields(run_file(self.path, path, shown))
        except RunDirError as exc:
            return str(exc)
        except PeekError as exc:
            return f"{shown}: cannot tell whether training finished: {exc}"
        epoch, optimizer = fields.get("epoch"), fields.get("optimizer")
        if epoch == -1 and optimizer is None:
            return None
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0:
            rows = len(self.log)
            plan = (self.config or {}).get("epochs")
            planned = f", args.yaml plans {plan}" if isinstance(plan, int) and not isinstance(plan, bool) else ""
            return (f"{shown}: epoch = {epoch} with its optimizer state, so training stopped before its end "
                    f"(Ultralytics sets epoch = -1 and drops the optimizer when a run finishes; results.csv has "
                    f"{rows} epoch{'s' if rows != 1 else ''}{planned}) -- killed, or stopped by its NaN recovery")
        return (f"{shown}: epoch = {epoch!r}, optimizer {'None' if optimizer is None else 'present'}: not how "
                "Ultralytics leaves last.pt, so whether training finished cannot be told")


class Mutations(m.Mutations):
    """An Ultralytics run: the cells of ``results.csv``, ``weights/best.pt`` deleted; its
    weights files are never opened, so there is no NaN-weights or resume mutation."""

    def open_log(self, run: Path) -> m.LogEditor:
        return StrippedRowsEditor(run / "results.csv")

    def gate_checkpoint_softmax(self, params: dict[str, Any]) -> tuple[list[m.Mutation], str]:
        name = checkpoint_name(self, params)
        path = self.run.checkpoint_path(name)
        if path.parent == (self.root / "weights") and path.suffix == ".pt":
            return [], "no mutation: an Ultralytics weights file pickles the whole model and is never opened"
        return self.declared("checkpoint_softmax", params)

    def gate_resume_point(self, params: dict[str, Any]) -> tuple[list[m.Mutation], str]:
        if params.get("path") in (None, "checkpoints/last.pt"):
            return [], "no mutation: weights/last.pt pickles the whole model and is never opened"
        return self.declared("resume_point", params)


#: the reader: the run class itself
read = UltralyticsRun
