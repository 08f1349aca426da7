"""Checkpoints that survive a SIGKILL and open without running code.

Two promises, both learnt from other trainers' bug trackers:

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
import io
import itertools
import os
import queue
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHECKPOINT_FORMAT = "model-checkpoint/1"

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

# Directories whose fsync is deferred to the end of a `batched_dir_fsync()` block.
_deferred_dirs: list[set[Path]] = []


@contextlib.contextmanager
def batched_dir_fsync() -> Iterator[None]:
    """Fsync each directory once at the end of the block instead of after every rename.

    The engine writes ~6 files per epoch into two directories; one directory fsync each
    keeps the durability and halves the fsyncs. (A SIGKILL needs no fsync at all --
    ``os.replace`` is atomic either way; fsync is for a power cut.)
    """
    _deferred_dirs.append(set())
    try:
        yield
    finally:
        for directory in sorted(_deferred_dirs.pop()):
            _fsync_dir(directory)


def atomic_write_bytes(path: str | Path, data: bytes, *, slow_ok: bool = False) -> None:
    """Write `data` to `path` so that a kill at any instant leaves the old or the new file.

    `slow_ok` lets the test-only ``MODEL_TEST_SLOW_SAVE`` delay apply (checkpoints only).
    """
    path = Path(path)
    # ``.<name>.<pid>-<n>.tmp``, created exclusively, mode 0600 (as tempfile.mkstemp would,
    # minus its Python-level name search: this runs on the writer thread, and every
    # Python step there is time it holds the GIL the training thread needs)
    tmp = os.path.join(path.parent, f".{path.name}.{os.getpid()}-{next(_temp_counter)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if slow_ok and os.environ.get(SLOW_SAVE_ENV):
            time.sleep(float(os.environ[SLOW_SAVE_ENV]))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if _deferred_dirs:
        _deferred_dirs[-1].add(path.parent)
    else:
        _fsync_dir(path.parent)


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


def write_files_atomically(files: list[tuple[Path, bytes]]) -> None:
    """Atomically write each (path, data) in order, fsyncing each directory once."""
    with batched_dir_fsync():
        for path, data in files:
            atomic_write_bytes(path, data, slow_ok=path.suffix == ".pt")


class BackgroundWriter:
    """One thread that performs the epoch's atomic writes, in order, while training goes on.

    fsync and rename wait on the disk, not the CPU, and cost more than a small model's
    epoch; on this thread they overlap the next epoch instead of adding to it. The main
    thread hands over finished bytes (tensors are already serialized), so nothing written
    can change underneath. :meth:`flush` waits for every queued write -- the engine calls
    it before anything reads the run dir (the in-flight hook, the end of the run) -- and
    re-raises a write error there.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[list[tuple[Path, bytes]] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="model-writer", daemon=True)
        self._thread.start()

    def submit(self, files: list[tuple[Path, bytes]]) -> None:
        self._raise_pending()
        self._queue.put(files)

    def flush(self) -> None:
        self._queue.join()
        self._raise_pending()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise_pending()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            files = self._queue.get()
            try:
                if files is None:
                    return
                if self._error is None:
                    write_files_atomically(files)
            except BaseException as exc:  # noqa: BLE001 -- surfaced on the main thread by flush/submit
                self._error = exc
            finally:
                self._queue.task_done()


# --------------------------------------------------------------------------- save / load


def checkpoint_bytes(obj: dict[str, Any]) -> bytes:
    """`obj` serialized by torch.save (copies tensor data: later training can't change it)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """Serialize `obj` with torch.save into memory, then write it atomically to `path`."""
    atomic_write_bytes(path, checkpoint_bytes(obj), slow_ok=True)


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


# --------------------------------------------------------------------------- RNG state


def capture_rng() -> dict[str, Any]:
    """Every RNG the loop can touch, as plain lists and tensors (``weights_only`` safe)."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
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
