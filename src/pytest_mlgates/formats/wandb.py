"""A Weights & Biases offline run (``wandb/offline-run-<time>-<id>/``), read without the
``wandb`` package, and its ``mlgates prove`` mutations.

What ``wandb.init(mode="offline")`` leaves (W&B 0.31)::

    wandb/offline-run-20261207_102717-ut2p1c1n/
      run-ut2p1c1n.wandb   every record of the run: config, history rows, summary, exit
      files/               config.yaml, wandb-summary.json, output.log -- often missing offline
      logs/                debug.log ...; debug-core.log is an absolute symlink OUT of the
                           run dir: never followed (nothing under logs/ is read)

``run-<id>.wandb`` is the one reliable source: W&B 0.31 writes metrics only there. It is a
LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks
of records ``crc32 (uint32) | length (uint16) | type (FULL/FIRST/MIDDLE/LAST) | data``,
each checksum a zlib CRC-32 of the type byte and the data; a record's data is a ``Record``
protobuf. This module reads the blocks itself and decodes the few protobuf fields it needs
(history rows, config, the exit record) with a minimal wire-format decoder: no ``wandb``
and no ``protobuf`` import, nothing executed. A run still in progress ends in a cut-off
record: everything before it is read (``results`` says ``running``); a checksum that does
not match a complete record is corruption, and one line says where.

The log has one row per history step (``_step``); columns are the keys as logged
(``train/loss``; a nested key ``{"a": {"b": 1}}`` is ``a.b``); W&B's own ``_runtime``,
``_timestamp`` are left out. A key logged as ``epoch`` groups the rows by epoch, as for
MLflow. W&B keeps no checkpoints locally: a gate file's ``run:`` section says where they
are (``checkpoints:``, ``best:``, ``tracked:``), as for a plain run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.formats._wandb_log import (
    _HIST_ITEM,
    _ITEM_JSON,
    _ITEM_NESTED,
    _REC_HISTORY,
    WandbFile,
    _field,
    _item,
    _payload,
    _raw_fields,
    read_records,
    read_wandb_file,
    write_records,
)
from pytest_mlgates.formats.plain import PlainRun
from pytest_mlgates.rundir import RunSection
from pytest_mlgates.runlog import Log
from pytest_mlgates.runlog_regroup import regroup_by_logged_epoch

__all__ = ["IDENTIFIED_BY", "Mutations", "WandbRun", "detect", "locate", "read", "read_records", "read_wandb_file",
           "write_records"]

IDENTIFIED_BY = "run-<id>.wandb (an offline run folder wandb/offline-run-*/)"
SECTION_KEYS = ("checkpoints", "best", "tracked")


# --------------------------------------------------------------------------- detection


def _record_logs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.name.startswith("run-") and p.name.endswith(".wandb"))
    except OSError:
        return []


def detect(path: Path) -> list[str]:
    return [p.name for p in _record_logs(Path(path))][:1]


def locate(path: Path) -> Path | None:
    """The one offline run below a project folder (``wandb/offline-run-*/``) or a ``wandb/``
    folder; symlinked folders (``latest-run``) are not followed."""
    for folder in (Path(path) / "wandb", Path(path)):
        try:
            runs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()
                          and p.name.startswith(("offline-run-", "run-")) and _record_logs(p))
        except OSError:
            continue
        if len(runs) == 1:
            return runs[0]
        if len(runs) > 1:
            raise RunDirError(f"{path}: {len(runs)} W&B runs ({', '.join(p.name for p in runs[:4])}); "
                              "--run-dir takes one run folder")
    return None


def read(path: Path, section: RunSection | None = None) -> WandbRun:
    return WandbRun(path, section or RunSection(format="wandb"))


class WandbRun(PlainRun):
    """A W&B offline run: history from ``run-<id>.wandb``; checkpoints where the ``run:``
    section says (``files/`` holds what ``wandb.save`` copied)."""

    format = "wandb"

    @property
    def record_log(self) -> Path:
        logs = _record_logs(self.path)
        if not logs:
            raise RunDirError(f"{self.shown(self.path)}: no run-<id>.wandb record log")
        if len(logs) > 1:
            raise RunDirError(f"{self.shown(self.path)}: {len(logs)} record logs ({', '.join(p.name for p in logs[:3])})")
        self.resolve(logs[0].name)  # a symlink out of the run dir is refused
        return logs[0]

    @property
    def log_file(self) -> str:
        return self.record_log.name

    @property
    def contents(self) -> WandbFile:
        return self._cached("wandb", lambda: read_wandb_file(self.record_log, self.shown(self.record_log), root=self.path))  # type: ignore[no-any-return]

    def _read_log(self) -> Log:
        data = self.contents
        shown = self.shown(self.record_log)
        if not data.rows:
            raise RunDirError(f"{shown}: no history rows (nothing logged with wandb.log yet)")
        steps = sorted(data.rows)
        names: list[str] = []
        for step in steps:
            names += [k for k in data.rows[step] if k not in names]
        columns: dict[str, list[float]] = {"epoch": [float(s) for s in steps]}
        empty: dict[str, list[int]] = {}
        for name in names:
            column = "logged_epoch" if name == "epoch" else name
            columns[column] = [data.rows[s].get(name, math.nan) for s in steps]
            missing = [s for s in steps if name not in data.rows[s]]
            if missing:
                empty[column] = missing
        log = Log(columns=columns, source=self.record_log, empty=empty, kind="wandb", first_epoch=steps[0])
        return regroup_by_logged_epoch(log)

    @property
    def config(self) -> dict[str, Any] | None:
        try:
            return {k: v for k, v in self.contents.config.items() if not k.startswith("_")}
        except RunDirError:
            return None

    @property
    def results(self) -> dict[str, Any] | None:
        data = self.contents
        if data.exit_code is None:
            return {"status": "running"}
        return {"status": "completed" if data.exit_code == 0 else "failed", "exit_code": data.exit_code}


class WandbLogEditor(m.LogEditor):
    """A copy's ``run-<id>.wandb``, cell by cell (a cell is one key of one history step):
    the edited HistoryItems are encoded again, every other byte of every record is kept,
    and the record log is framed again with its checksums."""

    def __init__(self, path: Path) -> None:
        self.path = path
        records, _ = read_records(path, str(path))
        #: per record: its top-level fields; a history field as its list of item fields
        self.records: list[list[Any]] = []
        #: column -> [(record index, top field index, item index, key)] in step order
        self.cells_of: dict[str, list[tuple[int, int, int, str]]] = {}
        for r, data in enumerate(records):
            fields: list[Any] = []
            for f, (number, wire, raw) in enumerate(_raw_fields(data)):
                if number == _REC_HISTORY and wire == 2:
                    items: list[list[Any]] = [list(x) for x in _raw_fields(_payload(raw))]
                    for i, (n, w, item) in enumerate(items):
                        if n == _HIST_ITEM and w == 2:
                            key, value = _item(_payload(item))
                            if key and not key.startswith("_") and value is not None:
                                column = "logged_epoch" if key == "epoch" else key
                                self.cells_of.setdefault(column, []).append((r, f, i, key))
                    fields.append(items)
                else:
                    fields.append(raw)
            self.records.append(fields)

    def columns(self) -> list[str]:
        return list(self.cells_of)

    def cells(self, column: str) -> list[Any]:
        return list(range(len(self.cells_of.get(column, []))))

    def _at(self, column: str, handle: Any) -> tuple[list[Any], int, str]:
        r, f, i, key = self.cells_of[column][handle]
        return self.records[r][f], i, key

    def get(self, column: str, handle: Any) -> float:
        items, i, _ = self._at(column, handle)
        value = _item(_payload(items[i][2]))[1]
        return math.nan if value is None else value

    def set(self, column: str, handle: Any, value: float) -> None:
        items, i, key = self._at(column, handle)
        text = json.dumps(float(value)).encode()  # NaN, Infinity as W&B writes them
        items[i][2] = _field(_HIST_ITEM, _field(_ITEM_NESTED, key.encode()) + _field(_ITEM_JSON, text))

    def blank(self, column: str, handle: Any) -> None:
        items, i, _ = self._at(column, handle)
        items[i][2] = b""

    def save(self) -> None:
        out = []
        for fields in self.records:
            parts = [f if isinstance(f, bytes) else _field(_REC_HISTORY, b"".join(x[2] for x in f)) for f in fields]
            out.append(b"".join(parts))
        write_records(self.path, out)




class Mutations(m.Mutations):
    """A W&B offline run: the history values in its ``run-<id>.wandb`` (re-framed with
    their checksums); checkpoints as a plain run's (the ``run:`` section's)."""

    def open_log(self, run: Path) -> m.LogEditor:
        rel = self.rel(self.run.record_log)  # type: ignore[attr-defined]
        if rel is None:
            raise m.MutationError("the record log lies outside the run dir")
        return WandbLogEditor(run / rel)
