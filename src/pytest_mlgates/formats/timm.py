"""A timm ``train.py`` output folder (``output/train/<date>-<model>-<img>/``), and its
``mlgates prove`` mutations.

What timm writes (``timm.utils.update_summary`` and ``timm.utils.CheckpointSaver``)::

    <date>-<model>-<img>/
      args.yaml              the training arguments (yaml.safe_load): eval_metric says
                             which metric model_best follows (top1 unless told otherwise)
      summary.csv            one row per epoch, from 0: epoch, train_loss, eval_loss,
                             eval_top1, eval_top5 (percentages, 0-100), lr
      model_best.pth.tar     {epoch, arch, state_dict, optimizer, version, args, metric, saver}
      last.pth.tar           the same, every epoch: the resume point
      checkpoint-<E>.pth.tar the best max_history epochs

The checkpoints hold ``args`` as an ``argparse.Namespace``, which ``weights_only=True``
refuses; it is loaded with exactly that type allowed (``checkpoint_io.HARMLESS_GLOBALS``), as timm
itself loads them, never with a blanket fallback.  ``model_best``'s ``epoch`` is in
``summary.csv``'s numbering and its ``metric`` the value of ``eval_<eval_metric>``; timm
replaces the best only on a strictly better value, so a tie keeps the first epoch.
"""

from __future__ import annotations

from pathlib import Path

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.formats._tables import CsvFileRun, StrippedRowsEditor, table_evidence
from pytest_mlgates.rundir import BestRecord, is_checkpoint_alias
from pytest_mlgates.runvalues import float_or_none

__all__ = ["IDENTIFIED_BY", "Mutations", "TimmRun", "detect", "read"]

IDENTIFIED_BY = "summary.csv beside args.yaml or *.pth.tar"
_EXT = ".pth.tar"


def detect(path: Path) -> list[str]:
    return table_evidence(path, "summary.csv", ("args.yaml", "*" + _EXT))


class TimmRun(CsvFileRun):
    format = "timm"
    config_file = "args.yaml"
    log_file = "summary.csv"
    first_epoch = 0  # timm's summary.csv counts from 0

    @property
    def tracked(self) -> list[tuple[str, str]]:
        """``eval_<eval_metric>`` of args.yaml (``top1`` by default): min for ``loss``."""
        try:
            config = self.config or {}
        except RunDirError:
            config = {}
        metric = config.get("eval_metric")
        metric = metric if isinstance(metric, str) and metric else "top1"
        return [(f"eval_{metric}", "min" if metric == "loss" else "max")]

    def checkpoint_path(self, name: str) -> Path:
        """``best`` / ``best_<metric>`` (model_best.pth.tar), ``last`` / ``final``
        (last.pth.tar), or a path relative to the run dir."""
        if is_checkpoint_alias(name):
            return self.resolve(("model_best" if name.startswith("best") else "last") + _EXT)
        return self.resolve(name)

    def default_checkpoint(self) -> str:
        return "best" if (self.path / f"model_best{_EXT}").is_file() else "last"

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        rel = f"model_best{_EXT}"
        shown = self.shown(self.path / rel)
        followed = self.tracked[0][0]
        if metric != followed:
            return BestRecord(metric, shown, problem=(
                f"{shown}: timm keeps one best checkpoint, of '{followed}' (eval_metric in args.yaml), not '{metric}'"))
        found = self.load_best(metric, rel, f"timm's CheckpointSaver writes it whenever {metric} improves "
                                            "(needs one best checkpoint)")
        if isinstance(found, BestRecord):
            return found
        shown, path, ckpt = found
        value = float_or_none(ckpt.get("metric"))
        if value is None:
            return BestRecord(metric, shown, problem=f"{shown}: no 'metric' recorded (saved without eval?)", path=path)
        return BestRecord(metric, shown, epoch=self.log_epoch_of(ckpt), value=value, path=path)

    def resume_state(self) -> tuple[str, int | None, list[str], list[str]]:
        """``last.pth.tar``: model and optimizer state needed (timm keeps no scheduler or RNG
        state: a resume recomputes the schedule from the epoch and is not bit-exact)."""
        return self.last_checkpoint_resume_state()

    def resume_path(self) -> Path:
        return self.checkpoint_path("last")


class Mutations(m.Mutations):
    """A timm run: the cells of ``summary.csv``; ``model_best.pth.tar`` deleted; weights
    of the ``.pth.tar`` files set to NaN (saved back with their ``args``)."""

    def open_log(self, run: Path) -> m.LogEditor:
        return StrippedRowsEditor(run / "summary.csv")


#: the reader: the run class itself
read = TimmRun
