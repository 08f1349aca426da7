"""Where an epoch's checkpoint is serialized and its files written: off the training loop.

Each epoch the engine hands over one job: the checkpoint dict (tensors and plain
builtins), the ``.pt`` paths it goes to (``last.pt`` and every ``best_<metric>.pt`` it is
the best for), and the finished bytes of the log files. The job runs while the next epoch
trains, in order, and :meth:`flush` waits for all of them (the in-flight hook and the end
of the run read the files) and raises a failed write there, naming its file.

Two writers, one contract:

* :class:`ProcessWriter` (Linux, the default): a small child process (``python -I``, no
  torch: ~15 MiB). ``torch.save`` is Python code that holds the GIL for about a
  millisecond per epoch even on a small model, and a writer *thread*'s ~40 syscalls each
  take the GIL back from the training thread; together they cost ~4% of a 100 ms epoch
  (bench/engine_overhead.py). Here the training thread pickles the checkpoint dict in
  one C pass (each tensor becomes a :class:`~model.torchfile.TensorRef`) and pipes each
  storage's bytes straight from the tensor's memory (``os.writev``); the child writes the
  file in torch.save's format with :mod:`model.torchfile` -- ``data.pkl`` byte for byte
  torch's -- and does the atomic, fsync'd writes. Views that shared a storage still share
  one. The child dies with the engine (``PR_SET_PDEATHSIG``), so a SIGKILL leaves the run
  dir as a killed writer thread would: every file old or new. It ignores SIGINT, so a
  Ctrl-C lets the engine flush its last epoch. A tensor it cannot rebuild without torch
  (a dtype torch pickles another way, a subclass) makes the engine run ``torch.save``
  itself for that epoch and send the bytes.
* :class:`ThreadWriter`: ``torch.save`` on the training thread, the writes on a thread;
  used off Linux, or with ``MODEL_WRITER=thread``.
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import pickle
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.checkpoint import CheckpointError, checkpoint_bytes, write_all, write_files_atomically
from model.torchfile import STORAGE_TYPES, TensorRef, serialize_parts

WRITER_ENV = "MODEL_WRITER"  # "process" (the default on Linux) or "thread"

_HEADER = struct.Struct("<QQ")  # pickled length, raw tensor bytes length; (0, 0) = stop
_REPLY = struct.Struct("<Q")
_READY = b"serving\n"  # the child's first words, before any reply
_START_TIMEOUT_S = 60.0

Files = Sequence[tuple[Path, bytes]]


def open_writer() -> ProcessWriter | ThreadWriter:
    """The writer for this platform (see the module docstring)."""
    kind = os.environ.get(WRITER_ENV, "").strip().lower()
    if kind not in ("", "process", "thread"):
        raise CheckpointError(f"{WRITER_ENV}={kind!r}: expected 'process' or 'thread'")
    if kind != "thread" and sys.platform.startswith("linux") and sys.executable:
        try:
            return ProcessWriter()
        except OSError as exc:  # no process to spare (a sandbox, a limit): same files, slower
            logging.getLogger("model").warning(
                "checkpoint writer process could not start (%s); writing from a thread", exc)
    return ThreadWriter()


class ThreadWriter:
    """``torch.save`` on the training thread; the atomic, fsync'd writes on one thread."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Files | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="model-writer", daemon=True)
        self._thread.start()

    def submit(self, ckpt: dict[str, Any], pt_paths: Sequence[Path], files: Files) -> None:
        self._raise_pending()
        data = checkpoint_bytes(ckpt)
        self._queue.put([*((path, data) for path in pt_paths), *files])

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
                if self._error is None:  # after a failure nothing later may land
                    write_files_atomically(files)
            except BaseException as exc:  # noqa: BLE001 -- raised on the main thread
                self._error = exc
            finally:
                self._queue.task_done()


# --------------------------------------------------------------------------- the process writer


class _NotPlain(Exception):
    """A tensor the pipe does not carry (sparse, quantized, a subclass, a rare dtype)."""


class _Payload(pickle.Pickler):
    """Pickles a job in one C-speed pass; each tensor becomes a :class:`TensorRef`.

    ``reducer_override`` is called only for objects that are not builtins (dict, list,
    str, float ... are pickled natively), so the Python cost is per tensor, not per
    object. Each storage is listed once, as torch.save does, with a zero-copy view of its
    bytes for ``os.writev``; a tensor the writer process could not rebuild, or any other
    torch object, raises :class:`_NotPlain`.
    """

    def __init__(self, file: Any) -> None:
        import torch

        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._torch = torch
        self._dtypes = {getattr(torch, name): name for name in STORAGE_TYPES}
        self._index: dict[int, tuple[int, int]] = {}  # storage -> (raw offset, nbytes)
        self.views: list[Any] = []
        self._keep: list[Any] = []  # storages copied off an accelerator, alive until written
        self._position = 0

    def reducer_override(self, obj: Any) -> Any:
        torch = self._torch
        cls = type(obj)
        if cls is torch.Tensor:
            dtype = self._dtypes.get(obj.dtype)
            if dtype is None or obj.layout != torch.strided or obj.is_quantized:
                raise _NotPlain(f"tensor of {obj.dtype}, {obj.layout}")
            device = "cpu" if obj.is_cpu else str(obj.device)
            storage = obj.untyped_storage()
            key = storage._cdata  # one StorageImpl, one record: torch.save's own key
            nbytes = storage.nbytes()
            place = self._index.get(key)
            if place is None:
                if not nbytes:  # no bytes to place: a number of its own, so it stays distinct
                    place = self._index[key] = (-1 - len(self._index), 0)
                else:
                    if not obj.is_cpu:
                        storage = storage.cpu()
                        self._keep.append(storage)
                    place = self._index[key] = (self._position, nbytes)
                    self._position += nbytes
                    self.views.append((ctypes.c_ubyte * nbytes).from_address(storage.data_ptr()))
                    self._keep.append(obj)  # the view's memory lives as long as the tensor
            return (TensorRef, (*place, dtype, obj.storage_offset(), tuple(obj.shape),
                                obj.stride(), obj.requires_grad, device))
        module = cls.__module__ or ""
        if module == "torch" or module.startswith("torch."):
            raise _NotPlain(cls.__name__)
        return NotImplemented


def _read_exact(fd: int, size: int) -> bytearray | None:
    """`size` bytes from `fd`, or None at end of file before the first byte."""
    buffer = bytearray(size)
    return buffer if _read_into(fd, memoryview(buffer)) else None


def _read_into(fd: int, view: memoryview) -> bool:
    """Fill `view` from `fd`; False at end of file before the first byte."""
    got, size = 0, len(view)
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            if got == 0:
                return False
            raise EOFError(f"pipe closed after {got} of {size} bytes")
        got += n
    return True


class ProcessWriter:
    """The engine's writer process (see the module docstring). One per run, rank 0 only."""

    def __init__(self) -> None:
        job_read, job_write = os.pipe()
        reply_read, reply_write = os.pipe()
        try:  # a small model's whole job fits: submit() does not wait for the child to read
            import fcntl

            fcntl.fcntl(job_write, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except OSError:
            pass
        package_root = str(Path(__file__).resolve().parents[1])
        code = (f"import sys; sys.path.insert(0, {package_root!r}); "
                f"from model.writer import serve; serve({job_read}, {reply_write}, {os.getpid()})")
        try:
            # -I: no user site, no PYTHONPATH, no cwd on sys.path -- stdlib and this package
            self._proc = subprocess.Popen([sys.executable, "-I", "-c", code],
                                          pass_fds=(job_read, reply_write),
                                          stdin=subprocess.DEVNULL)
        finally:
            os.close(job_read)
            os.close(reply_write)
        self.pid = self._proc.pid
        self._jobs, self._replies = job_write, reply_read
        ready: list[int] = []
        try:  # it says it serves before the engine counts on it (a start-up costs ~30 ms)
            ready = select.select([reply_read], [], [], _START_TIMEOUT_S)[0]
            said = _read_exact(reply_read, len(_READY)) if ready else None
        except (OSError, EOFError):
            said = None
        if said != _READY:
            self._proc.kill()
            self._proc.wait()
            os.close(job_write)
            os.close(reply_read)
            how = "timed out" if not ready else f"exit code {self._proc.returncode}"
            raise OSError(f"{sys.executable} -I did not start serving ({how})")
        self._pending = 0
        self._error: BaseException | None = None
        self._closed = False
        self.peak_rss_kib: int | None = None  # the child's, known once it is closed
        self.cpu_seconds: float | None = None  # likewise

    def submit(self, ckpt: dict[str, Any], pt_paths: Sequence[Path], files: Files) -> None:
        """Queue one epoch's files; returns once every byte is in the pipe (a snapshot)."""
        self._collect(block=False)
        self._raise_pending()
        names = [str(p) for p in pt_paths]
        rendered = [(str(p), bytes(data)) for p, data in files]
        buffer = io.BytesIO()
        pickler = _Payload(buffer)
        try:
            pickler.dump((ckpt, None, names, rendered))
            views = pickler.views
        except _NotPlain:  # torch.save here, then the same atomic writes there
            buffer = io.BytesIO()
            pickle.dump((None, checkpoint_bytes(ckpt), names, rendered), buffer,
                        protocol=pickle.HIGHEST_PROTOCOL)
            views = []
        payload = buffer.getbuffer()
        raw_size = sum(len(view) for view in views)
        try:
            write_all(self._jobs, [_HEADER.pack(len(payload), raw_size), payload, *views])
        except BrokenPipeError:
            raise self._died() from None
        self._pending += 1

    def flush(self) -> None:
        """Wait for every queued job; raise the first failure (naming its file)."""
        self._collect(block=True)
        self._raise_pending()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self.peak_rss_kib = _high_water_kib(self.pid)
            try:
                write_all(self._jobs, [_HEADER.pack(0, 0)])
            except OSError:
                pass
            os.close(self._jobs)
            os.close(self._replies)
            try:
                _, status, usage = os.wait4(self.pid, 0)
                self._proc.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_seconds = usage.ru_utime + usage.ru_stime
            except ChildProcessError:
                pass

    def _collect(self, *, block: bool) -> None:
        while self._pending:
            if not block and not select.select([self._replies], [], [], 0)[0]:
                return
            header = _read_exact(self._replies, _REPLY.size)
            if header is None:
                self._pending = 0
                raise self._died()
            (size,) = _REPLY.unpack(header)
            reply = _read_exact(self._replies, size) if size else None
            self._pending -= 1
            if reply is not None and self._error is None:
                self._error = pickle.loads(reply)  # our own child's exception

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _died(self) -> CheckpointError:
        code = self._proc.poll()
        how = f"exit code {code}" if code is not None else "pipe closed"
        return CheckpointError(f"the checkpoint writer process (pid {self.pid}) died ({how}); "
                               "the last epoch's files may not be written")


def _high_water_kib(pid: int) -> int | None:
    """The process's peak resident memory since its exec (``VmHWM``; Linux).

    Not ``ru_maxrss``: that keeps the maximum from before the exec too, when the child
    was still a copy of the engine.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def serve(jobs: int, replies: int, parent: int) -> None:
    """The writer process: rebuild, serialize, write atomically, reply; until told to stop.

    Runs without torch (:mod:`model.torchfile` writes the format). Dies with the engine.
    """
    try:  # PR_SET_PDEATHSIG: the kernel SIGKILLs us when the engine dies, as a thread would
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the engine died before prctl took effect
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the engine's to handle
    write_all(replies, _READY)
    try:
        os.nice(10)  # where it must share a core with training, training goes first
    except OSError:
        pass
    failed = False
    # The tensor bytes of every job land in one buffer, kept from job to job: a fresh
    # model-sized buffer each epoch would page-fault all of it in again while the engine
    # waits on the pipe. Only a bigger job replaces it (no view of the old one is left).
    received = bytearray()
    while True:
        header = _read_exact(jobs, _HEADER.size)
        if header is None:
            return
        payload_size, raw_size = _HEADER.unpack(header)
        if payload_size == 0:
            return
        payload = _read_exact(jobs, payload_size)
        if len(received) < raw_size:
            received = bytearray()  # the old one goes before the new one is made
            received = bytearray(raw_size)
        raw = memoryview(received)[:raw_size]
        if payload is None or not _read_into(jobs, raw):
            return
        if failed:  # after a failure nothing later may land (the order of the files)
            error: BaseException | None = CheckpointError(
                "not written: an earlier write of this run failed")
        else:
            error = _write_job(payload, raw)
            failed = error is not None
        raw.release()  # every view into `received` is gone: the next job may reuse it
        del payload
        message = b"" if error is None else _pickled_error(error)
        write_all(replies, [_REPLY.pack(len(message)), message])


def _write_job(payload: bytearray, raw: memoryview) -> BaseException | None:
    """One job's files, or the exception that stopped them (raised by the engine).

    Every view into `raw` lives in this frame and dies with it, before the next job's
    bytes are read: the writer's peak memory stays about one checkpoint, not two.
    """
    try:
        skeleton, blob, pt_paths, files = pickle.loads(payload)  # from the engine
        if blob is None:  # the archive's parts: views into `raw`, never one joined copy
            blob = serialize_parts(skeleton, raw)
        write_files_atomically([*((path, blob) for path in pt_paths), *files])
    except BaseException as exc:  # noqa: BLE001 -- raised by the engine
        return exc.with_traceback(None)  # the traceback would hold this frame's views
    return None


def _pickled_error(error: BaseException) -> bytes:
    try:
        return pickle.dumps(error)
    except Exception:  # noqa: BLE001 -- an exception that does not pickle: keep its text
        return pickle.dumps(CheckpointError(f"{error.__class__.__name__}: {error}"))
