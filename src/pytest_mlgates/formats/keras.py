"""A Keras 3 run: a ``CSVLogger`` file and the ``.keras`` / ``.weights.h5`` files of its
``ModelCheckpoint``s, and its ``mlgates prove`` mutations.  Keras is never imported.

The ``CSVLogger`` file name is the user's (``training.log``, ``history.csv``...), so a
folder is a Keras run when it holds a CSV whose header starts with ``epoch`` *and* a
``.keras`` or ``.weights.h5`` file (at the top or one folder down); or when a gate file
says so::

    run: {format: keras, log: logs/history.csv, best: "ckpt/best_{metric}.keras",
          tracked: [{metric: val_loss, mode: min}]}

What the file holds (keras/src/callbacks/csv_logger.py): ``epoch`` (from 0) and the sorted
log keys; a key missing in an epoch is written ``NA`` (an empty cell here, not a NaN);
without validation data it adds ``val_<key>`` columns of ``NA`` only, and some versions
write ``nan`` there instead (keras-team/keras#21173). A ``val_*`` column empty or NaN in
*every* epoch is therefore read as "no validation ran" and left out -- not a NaN fault;
a gate that needs it says the column is missing.

Checkpoints: a ``.keras`` file is a zip of ``metadata.json``, ``config.json`` and
``model.weights.h5``; a ``.weights.h5`` file is HDF5. Only the weight arrays are read
(with h5py: the ``keras`` extra is not needed, ``pip install h5py`` is); ``config.json``,
which may name a ``Lambda`` layer's code, is never deserialized.  Neither file records the
epoch or the monitor it was saved for, so ``best_checkpoints`` checks the best file of
each tracked metric (the ``run:`` section's ``best:`` pattern, else ``best.keras``) is there.
"""

from __future__ import annotations

import fnmatch
import zipfile
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import _mutations as m
from pytest_mlgates.formats._tables import StrippedRowsEditor, csv_rows, table_log
from pytest_mlgates.gates.rebuild import checkpoint_name
from pytest_mlgates.rundir import BestRecord, Run, is_checkpoint_alias
from pytest_mlgates.runfiles import read_text_file
from pytest_mlgates.runlog import Log

__all__ = ["IDENTIFIED_BY", "KerasRun", "Mutations", "detect", "keras_weights", "read"]

IDENTIFIED_BY = "a CSVLogger file (header 'epoch,...') beside a .keras or .weights.h5 file"
#: What a gate file's run: section may say for a Keras run (collect.py).
SECTION_KEYS = ("log", "checkpoints", "best", "tracked")
_LOG_SUFFIXES = (".csv", ".log", ".tsv", ".txt")
_WEIGHT_SUFFIXES = (".keras", ".weights.h5")
_HEAD_BYTES = 512
#: Uncompressed weights larger than this are refused (a zip bomb in a .keras file).
MAX_WEIGHTS_BYTES = 2 * 1024 ** 3
_WEIGHTS_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def _head(path: Path) -> str:
    """The first line of a small regular file ("" for anything else), never blocking."""
    import os
    import stat

    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return ""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            data = os.read(fd, _HEAD_BYTES)
        finally:
            os.close(fd)
    except OSError:
        return ""
    return data.decode("utf-8", "replace").splitlines()[0] if data else ""


def _delimiter(header: str) -> str | None:
    """The CSVLogger separator when ``header`` is one: ``epoch`` then a separator."""
    if header.startswith("epoch") and len(header) > 5 and header[5] in ",;\t|":
        return header[5]
    return None


def _logs(path: Path) -> list[Path]:
    try:
        files = sorted(p for p in path.iterdir() if p.name.lower().endswith(_LOG_SUFFIXES))
    except OSError:
        return []
    return [p for p in files if _delimiter(_head(p))]


def _weight_files(path: Path) -> list[Path]:
    found: list[Path] = []
    try:
        for p in sorted(path.iterdir()):
            if p.name.endswith(_WEIGHT_SUFFIXES) and p.is_file():
                found.append(p)
            elif p.is_dir() and not p.is_symlink() and not p.name.startswith("."):
                found += sorted(q for q in p.iterdir() if q.name.endswith(_WEIGHT_SUFFIXES) and q.is_file())
    except OSError:
        pass
    return found


def detect(path: Path) -> list[str]:
    path = Path(path)
    logs = _logs(path)
    weights = _weight_files(path) if logs else []
    if not logs or not weights:
        return []
    return [logs[0].name, str(weights[0].relative_to(path))]


# --------------------------------------------------------------------------- weights


def _h5_arrays(handle: Any, shown: str) -> dict[str, Any]:
    """Every dataset of an HDF5 file as a torch tensor, by its path in the file."""
    import numpy as np
    import torch

    out: dict[str, Any] = {}

    def visit(name: str, obj: Any) -> None:
        if hasattr(obj, "dtype") and hasattr(obj, "shape"):
            if obj.dtype.kind not in "fiub":
                return
            out[name] = torch.from_numpy(np.array(obj[()]))

    try:
        handle.visititems(visit)
    except Exception as exc:  # noqa: BLE001 - a corrupt HDF5 file raises many types
        raise RunDirError(f"{shown}: unreadable HDF5 weights ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    return out


def keras_weights(path: Path, shown: str, *, root: Path | None = None) -> dict[str, Any]:
    """The weight arrays of a ``.keras`` zip or a ``.weights.h5`` file, as tensors keyed by
    their HDF5 path (``layers/dense/vars/0``); nothing else of the file is read."""
    from pytest_mlgates.errors import require_extra
    from pytest_mlgates.runfiles import run_file

    # inside the run, a regular file: a FIFO is never handed to zipfile or h5py (they would wait)
    path = run_file(root if root is not None else path.parent, path, shown)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key in _WEIGHTS_CACHE:
        return _WEIGHTS_CACHE[key]
    h5py = require_extra("h5py", f"reading {shown}")
    if path.name.endswith(".keras"):
        import io

        try:
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("model.weights.h5")
                if info.file_size > MAX_WEIGHTS_BYTES:
                    raise RunDirError(f"{shown}: model.weights.h5 is {info.file_size} bytes uncompressed, "
                                      f"more than the {MAX_WEIGHTS_BYTES} allowed")
                data = archive.read(info)
        except KeyError:
            raise RunDirError(f"{shown}: a .keras file without model.weights.h5") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise RunDirError(f"{shown}: not a .keras zip (truncated or corrupt: {exc})") from None
        source: Any = io.BytesIO(data)
    else:
        source = str(path)
    try:
        with h5py.File(source, "r") as handle:
            arrays = _h5_arrays(handle, shown)
    except RunDirError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError and others on garbage
        raise RunDirError(f"{shown}: not an HDF5 weights file ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    _WEIGHTS_CACHE[key] = arrays
    return arrays


# --------------------------------------------------------------------------- the reader


class KerasRun(Run):
    format = "keras"

    @property
    def log_file(self) -> str:
        if self.section is not None and self.section.log:
            return self.section.log
        logs = _logs(self.path)
        if not logs:
            raise RunDirError(f"{self.shown(self.path)}: no CSVLogger file (a CSV whose header starts with 'epoch'); "
                              "name it: run: {format: keras, log: training.log}")
        if len(logs) > 1:
            raise RunDirError(f"{self.shown(self.path)}: {len(logs)} CSVLogger files ({', '.join(p.name for p in logs[:4])}); "
                              "name one: run: {format: keras, log: NAME}")
        return logs[0].name

    def _read_log(self) -> Log:
        rel = self.log_file
        path = self.resolve(rel)
        shown = self.shown(self.path / rel)
        text = read_text_file(path, shown, root=self.path)  # inside the run, a regular file, size-capped
        first = text.splitlines()[0] if text else ""
        header, table = csv_rows(text, shown, _delimiter(first) or ",")
        # val_* never measured (no validation data): NA or nan in every epoch -- not a NaN fault
        never = {c for c in header if c.startswith("val_") and all(_unmeasured(row.get(c)) for _, row in table)}
        return table_log([c for c in header if c not in never], table, shown, "keras", first_epoch=0,
                         missing=("NA",))

    # -- checkpoints ---------------------------------------------------------------------

    @property
    def tracked(self) -> list[tuple[str, str]]:
        return list(self.section.tracked) if self.section is not None else []

    def checkpoint_files(self) -> list[Path]:
        pattern = self.section.checkpoints if self.section is not None else None
        files = _weight_files(self.path)
        if pattern:
            files = [p for p in files if fnmatch.fnmatchcase(str(p.relative_to(self.path)), pattern)]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def best_file(self, metric: str) -> str:
        best = self.section.best if self.section is not None else None
        return best.replace("{metric}", metric) if best else "best.keras"

    def checkpoint_path(self, name: str) -> Path:
        """``best`` / ``best_<metric>`` (the ``best:`` pattern, else ``best.keras``),
        ``last`` / ``final`` (the newest weights file), or a relative path."""
        if is_checkpoint_alias(name):
            if name.startswith("best"):
                return self.resolve(self.best_file(self.alias_metric(name)))
            files = self.checkpoint_files()
            if not files:
                raise RunDirError(f"{self.shown(self.path)}: no .keras or .weights.h5 file")
            return self.resolve(str(files[-1].relative_to(self.path)))
        return self.resolve(name)

    def checkpoint(self, name: str) -> dict[str, Any]:
        path = self.checkpoint_path(name)
        shown = self.checkpoint_shown(name)
        if not path.exists():
            raise RunDirError(f"{shown}: not found")
        if path.name.endswith(_WEIGHT_SUFFIXES):
            return {"state_dict": keras_weights(path, shown, root=self.path)}
        from pytest_mlgates.checkpoint_io import load_checkpoint_file

        return load_checkpoint_file(path, shown, root=self.path)

    def default_checkpoint(self) -> str:
        return "best" if (self.path / self.best_file(self.monitor[0])).is_file() else "last"

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        found = self.locate_best(metric, self.best_file(metric))
        if isinstance(found, BestRecord):
            return found
        shown, path = found
        if not path.is_file():
            return BestRecord(metric, shown, problem=(
                f"{shown}: not found; needs the best checkpoint of {metric} (ModelCheckpoint(save_best_only=True, "
                f"monitor='{metric}'); name its file with run: best: \"...{{metric}}...\")"))
        return BestRecord(metric, shown, path=path, unread="a Keras file records no epoch or monitor value")


class Mutations(m.Mutations):
    """A Keras run: the cells of the CSVLogger file; the best file deleted."""

    def open_log(self, run: Path) -> m.LogEditor:
        rel = self.run.log_file  # type: ignore[attr-defined]
        head = _head(run / rel)
        return StrippedRowsEditor(run / rel, delimiter=_delimiter(head) or ",")

    def gate_checkpoint_softmax(self, params: dict[str, Any]) -> tuple[list[m.Mutation], str]:
        name = checkpoint_name(self, params)
        rel = self.rel(self.run.checkpoint_path(name))
        if rel is None:
            return [], f"no mutation: checkpoint {name} lies outside the run dir"
        return [m.Mutation(f"truncate:{rel}", f"{rel} truncated to half", m.truncate(rel, lambda size: size // 2))], ""


def _unmeasured(cell: object) -> bool:
    """A CSVLogger cell of a metric never measured: empty, ``NA`` or ``nan``."""
    return cell is None or str(cell).strip().lower() in ("", "na", "nan")


#: the reader: the run class itself
read = KerasRun
