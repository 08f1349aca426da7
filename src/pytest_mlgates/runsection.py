"""A gate file's ``run:`` section, as the readers get it: how to read a run that has no
layout of its own (where its log, checkpoints and splits are, which metrics it tracks).

``gatefile_run.py`` builds it from the gate file; ``rundir.py`` and every format's reader
take it.  A plain frozen dataclass, so it imports nothing of either side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RunSection"]


@dataclass(frozen=True)
class RunSection:
    """A gate file's ``run:`` section: how to read a run that has no layout of its own.

    Parsed and validated by ``collect.py`` (``GateDocument.run``); paths are relative to the
    run dir, ``best`` holds ``{metric}``, ``tracked`` is ``((metric, mode), ...)``::

        run:
          format: plain
          log: logs/metrics.csv          # CSV or JSONL
          epochs_from: 1
          checkpoints: "ckpt/*.pt"
          best: "ckpt/best_{metric}.pt"
          tracked: [{metric: val_loss, mode: min}]
          splits: splits.json
    """

    format: str | None = None
    log: str | None = None
    epochs_from: int | None = None
    checkpoints: str | None = None
    best: str | None = None
    tracked: tuple[tuple[str, str], ...] = ()
    splits: str | None = None
    #: where the section is, for messages: ``acceptance/plain.gates.yaml:3`` (two gate files
    #: that say the same thing are the same section: one reader, one parse of the log)
    origin: str = field(default="", compare=False)

    def forced_format(self) -> str | None:
        """The format the section names, or ``plain`` when it says where the log is."""
        return self.format or ("plain" if self.log else None)
