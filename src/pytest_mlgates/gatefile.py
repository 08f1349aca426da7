"""A gate file as the plugin holds it: its bytes, read safely, and what it says.

:func:`read_capped` is the one way a gate file (or a phase plan) is read: a regular file
of at most 16 MB, so a FIFO named ``default.gates.yaml`` is refused, never waited on.
``collect.py`` parses the text into a :class:`GateDocument` of :class:`Criterion`; the
items judge them, and the archive re-reads the same bytes for the file's digest
(``scope.py``).  A criterion keeps the line it came from, for messages and reports::

    >>> document = parse_gate_file(Path("acceptance/default.gates.yaml"), plan=False)  # collect.py
    >>> [(c.name, c.kind, c.line) for c in document.criteria][:1]
    [('val_loss_decreases', 'check', 4)]

Nothing here imports PyYAML or pytest: the data classes are shared by the parser, the
pytest items and the archive, and none of those is imported back.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlgates.fingerprint import NotRegularFile, kind_of

__all__ = ["GATE_FILE_CAP", "Criterion", "GateDocument", "read_capped"]

#: A gate file is a reviewed text file; a bigger one is not re-read.
GATE_FILE_CAP = 16 << 20


def read_capped(path: Path, cap: int = GATE_FILE_CAP) -> bytes:
    """The bytes of a regular file, refusing FIFOs, devices and files over ``cap``."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(
        os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{path}: a {kind_of(st.st_mode)}, not a regular file")
        if st.st_size > cap:
            raise OSError(f"{path}: {st.st_size} bytes, over the {cap}-byte cap")
        chunks = []
        left = cap + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > cap:
            raise OSError(f"{path}: over the {cap}-byte cap")
        return data
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Criterion:
    """One exit criterion of a gate file: becomes one item per run dir.

    ``kind`` is ``"check"`` (a ``check:`` expression, compiled in ``check``), ``"gate"``
    (a built-in gate ``gate`` with ``params``) or ``"truth"`` (plain text, UNVERIFIED).
    ``line`` is 1-based, in the file the user edits (front matter lines counted in a plan).
    """

    name: str
    kind: str
    line: int
    gate: str | None = None
    source: str | None = None
    text: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    stage: str = "acceptance"
    check: Any = None
    column: int = 1
    #: ``across_runs: {at_least: K}``: one item for all run dirs, GREEN when K of them pass
    across_runs: int | None = None

    @property
    def gate_label(self) -> str:
        """What ``mlgates.gate`` says: the gate's name, ``check`` or ``truth``."""
        return self.gate if self.kind == "gate" and self.gate else self.kind


@dataclass(frozen=True)
class GateDocument:
    """A parsed gate file.  ``preflight`` is the raw ``preflight:`` section, kept for the
    preflight suite; acceptance collection ignores it.  ``run`` is the ``run:`` section as a
    :class:`pytest_mlgates.rundir.RunSection` (None when the file has none): how the run
    dirs are read for this file's criteria."""

    path: Path
    title: str | None
    metric_aliases: dict[str, str]
    criteria: list[Criterion]
    preflight: Any = None
    run: Any = None

    def acceptance_criteria(self) -> list[Criterion]:
        """Criteria that run against a finished run (``stage: preflight`` ones do not)."""
        return [c for c in self.criteria if c.stage != "preflight"]
