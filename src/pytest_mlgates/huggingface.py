"""Hugging Face ``Trainer``: in-flight gates as a callback.

Importing this module imports transformers; nothing else in the plugin does::

    from pytest_mlgates.huggingface import GatesCallback

    trainer = Trainer(..., args=TrainingArguments(..., eval_strategy="epoch", save_strategy="epoch"),
                      callbacks=[GatesCallback("acceptance/inflight.gates.yaml", after_epoch=1)])

When the callback judges, and why (transformers 5.x, read from ``Trainer._run_epoch`` and
``_maybe_log_save_evaluate``):

* At the end of an epoch the Trainer calls ``on_epoch_end``, then logs, evaluates
  (``on_evaluate``) and saves: ``checkpoint-N/`` with the weights, optimizer, scheduler, RNG
  state and ``trainer_state.json`` -- whose ``log_history`` is the run's log until
  ``save_state()`` writes one at the top -- then ``on_save``.  Nothing of the epoch is on
  disk before the save, and everything is after it.
* So the callback judges in ``on_save`` (on the world's process zero, the verdict then sent
  to every rank), once ``after_epoch`` epochs are complete.  A RED verdict sets
  ``control.should_training_stop``: the Trainer leaves its loop right after that save, and
  the newest ``checkpoint-N/`` (the resume point) holds the same epochs as the log.
* With ``save_strategy="steps"`` every save is judged (the epoch in the record is the
  completed epochs so far); with ``"no"`` nothing reaches the disk while training, and the
  callback says so once.

The run dir is ``args.output_dir``; a RED verdict is recorded there in
``mlgates_inflight.json``. 
``PreflightSubject.from_hf_trainer`` (``pytest_mlgates.subject_hf``) builds the preflight
subject of a trainer.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

from pytest_mlgates.inflight import Gates, InflightGateWarning, Verdict

try:
    from transformers import TrainerCallback
except ImportError:
    raise ImportError("pytest_mlgates.huggingface needs transformers: pip install transformers accelerate") from None

__all__ = ["GatesCallback"]

log = logging.getLogger("pytest_mlgates.huggingface")


def _strategy(value: Any) -> str:
    return str(getattr(value, "value", value))


class GatesCallback(TrainerCallback):  # type: ignore[misc]
    """In-flight gates for a Hugging Face ``Trainer``: a doomed run stops, on record.

    ``gate_file`` is parsed here, so a broken file fails when the callback is made, before
    any training, with the one-line :class:`~pytest_mlgates.errors.GateFileError`.
    ``after_epoch`` is the first completed epoch (counted from 1) that is judged.
    ``run_format`` forces a reader (default: the gate file's ``run:`` section, else
    ``huggingface``).

    The run is judged in ``on_save``, when the epoch's ``checkpoint-N/`` (and its
    ``trainer_state.json``, the log) is on disk; a RED verdict sets
    ``control.should_training_stop``, is recorded in ``<output_dir>/mlgates_inflight.json``
    and kept in :attr:`verdict`.  A criterion that cannot be judged yet is an
    :class:`~pytest_mlgates.inflight.InflightGateWarning`, and the run goes on.  Under DDP
    only process zero reads the output dir; every rank gets its verdict.
    """

    def __init__(self, gate_file: str | os.PathLike[str], after_epoch: int = 1,
                 run_format: str | None = None) -> None:
        self.gate_file = gate_file
        self.after_epoch = after_epoch
        self.run_format = run_format
        # parsed now: a broken gate file stops the script before the Trainer starts
        self.gates = Gates(gate_file, run_dir=os.curdir, after_epoch=after_epoch, run_format=run_format)
        #: The RED verdict that stopped the run.
        self.verdict: Verdict | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.gates.run_dir = Path(args.output_dir)
        self.gates.run_format = self.run_format
        if self.run_format is None and self.gates.named_format is None:
            self.gates.run_format = "huggingface"
        self.verdict = None
        if _strategy(args.save_strategy) == "no" and state.is_world_process_zero:
            warnings.warn(f"in-flight gates: save_strategy='no': the Trainer writes no log or checkpoint to "
                          f"{args.output_dir} while it trains, so {self.gate_file} is never judged; "
                          "use save_strategy='epoch'", InflightGateWarning, stacklevel=2)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        completed = math.floor(state.epoch + 1e-6) if state.epoch is not None else 0
        if self.verdict is not None or completed < self.after_epoch:
            return
        verdict = self.gates.check_or_warn(completed) if state.is_world_process_zero else None
        verdict = _broadcast(verdict)
        if verdict is not None and verdict.red:
            self.verdict = verdict
            control.should_training_stop = True
            if state.is_world_process_zero:
                log.warning("in-flight gate RED after epoch %d: %s; recorded in %s", completed, verdict.reason,
                            self.gates.run_dir / "mlgates_inflight.json")



def _broadcast(verdict: Verdict | None) -> Verdict | None:
    """Process zero's verdict on every rank (torch.distributed, when it is running)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return verdict
    box = [verdict]
    dist.broadcast_object_list(box, src=0)
    return box[0]
