"""Checkpoints that survive a SIGKILL and open without running code.

Two promises, both learnt from other trainers' bug trackers (and one writer thread,
:class:`BackgroundWriter`, so the training thread does not wait for the disk):

* **Atomic**: every file is written to a temp file in the same directory, flushed,
  fsync'd, then ``os.replace``'d over the target, and the directory is fsync'd. A kill at
  any instant leaves either the old file or the new one, never half of one (Lightning lost
  checkpoints to exactly this, its issues 688 and 19970).
* **Safe to open**: :func:`load_checkpoint` uses ``torch.load(..., weights_only=True)``, so
  a checkpoint from a stranger cannot execute code. Everything we store is therefore plain
  builtins and tensors -- RNG states included (numpy's state becomes a list, not an
  ``ndarray``).

Example::

    >>> save_checkpoint({"format": CHECKPOINT_FORMAT, "epoch": 3}, "runs/x/checkpoints/last.pt")
    >>> load_checkpoint("runs/x/checkpoints/last.pt")["epoch"]
    3
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# /2: ``monitor`` maps every tracked metric the checkpoint is the best for to its mode and
# value (one epoch's checkpoint is written once, to last.pt and to each best_<metric>.pt);
# /1 had one ``{"metric", "mode", "value"}`` per best file. Readers accept both.
CHECKPOINT_FORMAT = "model-checkpoint/2"

# Test-only hook: seconds to sleep between writing the temp file and renaming it over the
# target, so a test can SIGKILL the process in the middle of a checkpoint write.
SLOW_SAVE_ENV = "MODEL_TEST_SLOW_SAVE"


class CheckpointError(Exception):
    """A checkpoint that cannot be read, explained in one line naming the file."""


# --------------------------------------------------------------------------- atomic writes


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX only; a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_temp_counter = itertools.count()


def _with_filename(exc: OSError, path: Path) -> OSError:
    """`exc` naming `path` (a failed ``write()`` or ``fsync()`` on an fd names no file)."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror, str(path))  # the errno's subclass, as raised


def _write_temp(fd: int, data: bytes | dict[str, Any], path: Path) -> None:
    """`data` into the open temp file `fd`: bytes as they are, a checkpoint dict with
    ``torch.save`` (straight into the file: no copy of the checkpoint in memory). An
    ``OSError`` (a full disk) names `path`, the target, not the temp file."""
    fh = os.fdopen(fd, "wb", closefd=False)
    try:
        if isinstance(data, dict):
            _torch_save(data, fh)
        else:
            fh.write(data)
        fh.flush()
    except OSError as exc:
        raise _with_filename(exc, path) from None
    finally:
        with contextlib.suppress(OSError):  # after a failed write close() fails the same way
            fh.close()


def _torch_save(obj: dict[str, Any], fh: Any) -> None:
    import torch

    try:
        torch.save(obj, fh)
    except RuntimeError as exc:
        # torch reports a failed write of its own as "unexpected pos ..."; the OSError the
        # file raised (ENOSPC, EFBIG, EDQUOT) is the context of that error: raise it
        if isinstance(exc.__context__, OSError):
            raise exc.__context__ from None
        raise


def write_files_atomically(files: Sequence[tuple[str | Path, bytes | dict[str, Any]]]) -> None:
    """Replace each path with its data so that a kill at any instant leaves it old or new.

    Data is bytes, or a checkpoint dict that ``torch.save`` writes into the temp file. The
    batch is one pass: every temp file (``.<name>.<pid>-<n>.tmp`` next to its target,
    created exclusively, mode 0600) is written, then each is fsync'd, then they are renamed
    over their targets in list order, then each directory is fsync'd once. So a failure while
    writing (a full disk) changes no target at all, and a kill between two renames has
    renamed a prefix of the list: the engine lists an epoch's best checkpoints, then
    ``last.pt``, then the logs, and the logs never run ahead of ``last.pt``. (A SIGKILL
    needs no fsync -- ``os.replace`` is atomic either way; fsync is for a power cut.) The
    same object may be given for several paths (the engine writes one epoch's checkpoint
    to ``last.pt`` and each ``best_<metric>.pt`` it is the best for): it is written once,
    and the other paths are hard links to that file (a copy where the filesystem has no
    hard links). A later rename over one of those paths replaces that name only, so
    ``best_x.pt`` keeps its bytes when ``last.pt`` moves on.

    ``MODEL_TEST_SLOW_SAVE`` (tests only) sleeps before each ``.pt`` rename, so a test can
    SIGKILL the process while a checkpoint is written but not yet in place.
    """
    staged: list[tuple[str, Path]] = []
    try:
        fds: list[tuple[int, Path]] = []
        written: dict[int, str] = {}  # id(data) -> the temp file that holds it
        try:
            for target, data in files:
                path = Path(target)
                tmp = os.path.join(path.parent, f".{path.name}.{os.getpid()}-{next(_temp_counter)}.tmp")
                same = written.get(id(data))
                if same is not None and os.path.dirname(same) == os.path.dirname(tmp):
                    try:  # the same data again: one more name for the file just written
                        os.link(same, tmp)
                        staged.append((tmp, path))
                        continue
                    except OSError:  # no hard links here (some network or FAT mounts)
                        pass
                try:
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
                except OSError as exc:  # named by its target, not by the temp file's name
                    raise OSError(exc.errno, exc.strerror, str(path)) from None
                fds.append((fd, path))
                staged.append((tmp, path))
                written[id(data)] = tmp
                _write_temp(fd, data, path)
            for fd, path in fds:  # one fsync pass: the journal commits once for the batch
                try:
                    os.fsync(fd)
                except OSError as exc:
                    raise _with_filename(exc, path) from None
        finally:
            for fd, _ in fds:
                os.close(fd)
        slow = os.environ.get(SLOW_SAVE_ENV)
        while staged:
            tmp, path = staged[0]
            if slow and path.suffix == ".pt":
                time.sleep(float(slow))
            os.replace(tmp, path)
            staged.pop(0)
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
    for directory in sorted({Path(target).parent for target, _ in files}):
        _fsync_dir(directory)


class BackgroundWriter:
    """An epoch's files written on one background thread while the next epoch trains.

    :meth:`submit` takes the checkpoint's snapshot on the calling thread -- ``torch.save``
    into memory, since the next epoch changes the tensors in place -- and hands the batch
    to the thread, which does the atomic, fsync'd writes of
    :func:`write_files_atomically`. One batch is in flight at a time, so batches land in
    order. :meth:`wait` blocks until it is on disk and raises its error (a full disk,
    naming the file) on the training thread; the engine waits before anything reads or
    replaces the run dir's files (the in-flight gates, the end of the run). A SIGKILL
    leaves every file old or new, as inline writes would: the renames are atomic either way.

    Why a thread (``bench/engine_overhead.py --inline-writes``): on a busy machine a
    file write or fsync can wait tens of ms for the disk, and the training thread need
    not; the snapshot is ~2 ms on the default config.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: Any = None

    def submit(self, files: Sequence[tuple[str | Path, bytes | dict[str, Any]]],
               then: Callable[[], None] | None = None) -> None:
        """Write `files` as one batch, then call `then` (on the writer thread: the engine
        hands the epoch's metrics to the trackers once its files are on disk)."""
        self.wait()  # the previous epoch's batch: long done, or its error raised here
        batch = snapshot(files)

        def write() -> None:
            write_files_atomically(batch)
            if then is not None:
                then()

        self._pending = self._pool.submit(write)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def snapshot(files: Sequence[tuple[str | Path, bytes | dict[str, Any]]]) -> list[tuple[str | Path, bytes]]:
    """`files` with each checkpoint dict ``torch.save``'d into bytes, once per dict (the
    same bytes object for each of its paths, so they are still written once and linked)."""
    import io

    import torch

    serialized: dict[int, bytes] = {}
    out: list[tuple[str | Path, bytes]] = []
    for path, data in files:
        if isinstance(data, dict):
            if id(data) not in serialized:
                buffer = io.BytesIO()
                torch.save(data, buffer)
                serialized[id(data)] = buffer.getvalue()
            data = serialized[id(data)]
        out.append((path, data))
    return out


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that a kill at any instant leaves the old or the new file."""
    write_files_atomically([(path, data)])


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temp_files(directory: str | Path) -> None:
    """Delete ``.<name>.*.tmp`` files a killed writer left behind (never the targets)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for tmp in directory.glob(".*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


# --------------------------------------------------------------------------- save / load


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` `obj` to a temp file beside `path`, fsync, ``os.replace`` over it."""
    write_files_atomically([(path, obj)])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Open a checkpoint with ``weights_only=True`` on the CPU; one-line error if unreadable."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- truncated zip, unsafe globals, garbage bytes ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({exc.__class__.__name__}: {first[:160]})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint dict (got {type(obj).__name__})")
    return obj


# --------------------------------------------------------------------------- history


def pack_history(rows: list[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    """The log rows as ``{"columns", "rows": float64 tensor (epochs, columns), "int_columns"}``.

    torch.save calls a Python hook for every object it pickles, so rows kept as dicts made
    every checkpoint cost O(epochs) (1.3 ms a save at 12 epochs of history, 4.3 ms at 300);
    one tensor costs the same at any epoch. Every float round-trips bit for bit; ints up to
    2**53 too (``int_columns`` says which columns to give back as ints). Rows that are not
    all ints and floats under the same keys are kept as they are (a list of dicts).
    """
    import numpy as np
    import torch

    keys = rows[0].keys() if rows else {}.keys()
    columns = list(keys)
    if any(r.keys() != keys for r in rows):
        return [dict(r) for r in rows]
    ints = []
    for c in columns:
        kinds = {type(r[c]) for r in rows}
        if kinds == {int} and all(abs(r[c]) <= 2**53 for r in rows):
            ints.append(c)
        elif kinds != {float}:  # None, bools, text, ints beyond a float64, ints and floats mixed
            return [dict(r) for r in rows]
    values = np.array([[r[c] for c in columns] for r in rows], dtype=np.float64).reshape(len(rows), len(columns))
    return {"columns": columns, "rows": torch.from_numpy(values), "int_columns": ints}


def unpack_history(history: Any) -> list[dict[str, Any]]:
    """Inverse of :func:`pack_history`; also takes the rows of a model-checkpoint/1 file."""
    if isinstance(history, dict):
        columns, ints = list(history["columns"]), set(history.get("int_columns") or [])
        return [{c: int(v) if c in ints else v for c, v in zip(columns, values)}
                for values in history["rows"].tolist()]
    return [dict(r) for r in history or []]


# --------------------------------------------------------------------------- RNG state


def capture_rng() -> dict[str, Any]:
    """Every RNG the loop can touch, as plain lists and tensors (``weights_only`` safe)."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.from_numpy(np.array(internal, dtype=np.int64)), gauss],
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys).astype(np.int64)),  # astype copies
                  int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(internal.tolist()), gauss))  # tolist(): Python ints
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (what :func:`capture_rng` captures)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
