"""PyTorch Lightning: in-flight gates as a callback.

Importing this module imports Lightning (``lightning.pytorch``, else the older
``pytorch_lightning`` package); nothing else in the plugin does::

    from pytest_mlgates.lightning import GatesCallback

    trainer = L.Trainer(callbacks=[ModelCheckpoint(monitor="val_loss", save_last=True),
                                   GatesCallback("acceptance/inflight.gates.yaml", after_epoch=1)])
    trainer.fit(module, datamodule)

When the callback judges, and why (Lightning 2.x, read from its fit loop):

* At the end of epoch *k* Lightning runs validation (the CSVLogger writes the ``val_*`` row),
  then ``on_train_epoch_end``: other callbacks first, the module's hook, then the
  monitoring callbacks -- where ``ModelCheckpoint`` saves the epoch's top-k files and
  ``last.ckpt`` when validation runs once per epoch -- and only after that the epoch's
  ``train_*`` row is logged.  A callback's own ``on_train_epoch_end`` therefore sees
  ``last.ckpt`` one epoch behind the log.
* The first hook at which epoch *k* is wholly on disk is ``on_train_epoch_start`` of epoch
  *k + 1* (or ``on_train_end`` after the last epoch).  The callback judges there, on rank 0,
  after flushing the loggers, and broadcasts the verdict to every rank.
* A RED verdict stops the run the way Lightning's ``Timer`` does: ``trainer.should_stop``
  is set after the next optimizer step, so Lightning validates, ``ModelCheckpoint`` saves
  and the epoch is logged.  (Set at the epoch's start, ``should_stop`` would run an empty
  epoch whose hooks can log a row no checkpoint matches.)
* Since Lightning 2.6 ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only in an
  epoch that saved a top-k file, and a run a gate stops has usually stopped improving; so
  the callback writes the stopping epoch's ``last.ckpt`` itself: ``last.ckpt`` and
  ``metrics.csv`` end at the same epoch, and the run resumes where it stopped.

The run dir the gates read is the CSVLogger's version dir (``lightning_logs/version_N``),
else ``trainer.log_dir``; a RED verdict is recorded there in ``mlgates_inflight.json``.

``PreflightSubject.from_lightning`` (``pytest_mlgates.subject_lightning``) builds the
preflight subject of a module.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pytest_mlgates.inflight import Gates, Verdict

try:
    import lightning.pytorch as pl
except ImportError:  # the package's older name
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError:
        raise ImportError("pytest_mlgates.lightning needs PyTorch Lightning: pip install lightning") from None

from pytest_mlgates.subject_lightning import (  # after the one-line message above
    lightning_classes,
    run_dir_of,
)

__all__ = ["GatesCallback"]

log = logging.getLogger("pytest_mlgates.lightning")

def _has_csv_logger(trainer: Any) -> bool:
    csv_loggers = lightning_classes("CSVLogger")
    return bool(csv_loggers) and any(isinstance(lg, csv_loggers) for lg in getattr(trainer, "loggers", []) or [])


class GatesCallback(pl.Callback):
    """In-flight gates for a Lightning ``Trainer``: a doomed run stops, on record.

    ``gate_file`` is parsed here, so a broken file fails when the callback is made, before
    any training, with the one-line :class:`~pytest_mlgates.errors.GateFileError`.
    ``after_epoch`` is the first completed epoch (counted from 1) that is judged.
    ``run_format`` forces a reader (default: the gate file's ``run:`` section, else
    ``lightning`` when a CSVLogger writes the run dir, else detection).

    Epoch *k* is judged at the start of epoch *k + 1* (when its log rows and checkpoints are
    all on disk) and the last epoch at ``on_train_end``; a RED verdict stops the run after
    the next optimizer step (see the module docstring), is recorded in
    ``<run dir>/mlgates_inflight.json`` and kept in :attr:`verdict`.  A criterion that
    cannot be judged yet is an :class:`~pytest_mlgates.inflight.InflightGateWarning`, and
    the run goes on.  Under DDP only rank 0 reads the run dir; every rank gets its verdict.
    """

    def __init__(self, gate_file: str | os.PathLike[str], after_epoch: int = 1,
                 run_format: str | None = None) -> None:
        super().__init__()
        self.gate_file = gate_file
        self.after_epoch = after_epoch
        self.run_format = run_format
        # parsed now: a broken gate file stops the script before the Trainer starts
        self.gates = Gates(gate_file, run_dir=os.curdir, after_epoch=after_epoch, run_format=run_format)
        #: The RED verdict that stopped (or, after the last epoch, condemned) the run.
        self.verdict: Verdict | None = None
        self._judged = 0
        self._stop_pending = False
        self._stopped = False
        self._step_at_epoch_start = 0

    # -- hooks ---------------------------------------------------------------------------

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.gates.run_dir = run_dir_of(trainer)
        self.gates.run_format = self.run_format
        if self.run_format is None and self.gates.named_format is None and _has_csv_logger(trainer):
            self.gates.run_format = "lightning"
        self.verdict = None
        self._judged = 0
        self._stop_pending = self._stopped = False

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._step_at_epoch_start = trainer.global_step
        completed = int(trainer.current_epoch)
        if self.verdict is None and completed >= self.after_epoch and completed > self._judged:
            verdict = self._judge(trainer, completed, broadcast=True)
            if verdict is not None and verdict.red:
                self._stop_pending = True

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # after an optimizer step: ModelCheckpoint skips a save when global_step has not moved
        if self._stop_pending and trainer.global_step > self._step_at_epoch_start:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._stop_pending:  # an epoch without an optimizer step: stop at its end
            self._stop(trainer)
        if self._stopped:  # every epoch end after the stop (min_epochs can keep a run going)
            _write_last_checkpoints(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        completed = int(trainer.current_epoch)
        if self.verdict is None and completed >= self.after_epoch and completed > self._judged:
            self._judge(trainer, completed, broadcast=False)  # nothing left to stop: recorded only

    # -- work ------------------------------------------------------------------------------

    def _judge(self, trainer: Any, completed: int, *, broadcast: bool) -> Verdict | None:
        verdict: Verdict | None = None
        if trainer.is_global_zero:
            for logger in trainer.loggers:  # Lightning saves after each log call; direct calls buffer
                logger.save()
            verdict = self.gates.check_or_warn(completed)
        if broadcast:
            verdict = trainer.strategy.broadcast(verdict, src=0)
        self._judged = completed
        if verdict is not None and verdict.red:
            self.verdict = verdict
            if trainer.is_global_zero:
                log.warning("in-flight gate RED after epoch %d: %s; recorded in %s", completed, verdict.reason,
                            self.gates.run_dir / "mlgates_inflight.json")
        return verdict

    def _stop(self, trainer: Any) -> None:
        self._stop_pending = False
        self._stopped = True
        trainer.should_stop = True


def _write_last_checkpoints(trainer: Any) -> None:
    """``last.ckpt`` of the stopping epoch, for every ``ModelCheckpoint(save_last=...)``.

    Since Lightning 2.6 ``save_last`` rewrites ``last.ckpt`` only in an epoch that saved a
    top-k file -- one whose monitor improved -- and a run stopped by a gate has usually
    stopped improving: its ``last.ckpt`` would lag its log, and the run could not be resumed
    where it stopped.  Written here, in ``on_train_epoch_end`` of the stopping epoch, with
    ``trainer.save_checkpoint`` (every rank calls it, rank 0 writes), before
    ``ModelCheckpoint``'s own save (which overwrites it when the epoch did improve).
    """
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, lightning_classes("ModelCheckpoint")) or not callback.save_last \
                or not callback.dirpath:
            continue
        path = callback.last_model_path or callback.format_checkpoint_name(
            {"epoch": trainer.current_epoch, "step": trainer.global_step}, callback.CHECKPOINT_NAME_LAST)
        if trainer.is_global_zero and os.path.islink(path):  # save_last="link": never write through it
            os.unlink(path)
        trainer.save_checkpoint(path, weights_only=callback.save_weights_only)
