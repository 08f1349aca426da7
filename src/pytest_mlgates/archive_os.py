"""What ``archive_fs.py`` writes with, below the directory it holds open:
:class:`ArchiveError`, the ``os.open`` flags (``O_NOFOLLOW``, ``O_DIRECTORY``... where the
platform has them), an ``OSError`` as one line naming the path, writes that finish, and
:class:`Locked`, the ledger's ``flock`` (at most two minutes' wait).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path
from typing import Any

from pytest_mlgates.fingerprint import kind_of

__all__ = ["BINARY", "CLOEXEC", "DIRECTORY", "DIR_FDS", "LOCK_TIMEOUT_S", "NOFOLLOW", "NONBLOCK", "ArchiveError",
           "Locked", "os_line", "pread_byte", "require_dir", "write_all"]

LOCK_TIMEOUT_S = 120.0
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
BINARY = getattr(os, "O_BINARY", 0)
DIR_FDS = os.open in os.supports_dir_fd and bool(NOFOLLOW) and bool(DIRECTORY)


class ArchiveError(Exception):
    """The archive cannot be written (or read) safely; ``str(err)`` is one line."""


class Locked:
    """``flock`` the lock file (an exclusive lock; what filelock takes on POSIX too, so
    sessions of older versions are kept out), waiting up to two minutes."""

    def __init__(self, fd: int, shown: Path) -> None:
        self.fd = fd
        self.shown = shown
        self.fallback: Any = None

    def __enter__(self) -> Locked:  # noqa: PYI034 - a final class
        try:
            import fcntl
        except ImportError:  # Windows
            from filelock import FileLock

            self.fallback = FileLock(str(self.shown), timeout=LOCK_TIMEOUT_S)
            self.fallback.acquire()
            return self
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ArchiveError(f"{self.shown}: still locked by another session after "
                                       f"{LOCK_TIMEOUT_S:.0f} s") from None
                time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        if self.fallback is not None:
            self.fallback.release()
            return
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)


def require_dir(st: os.stat_result, shown: Path) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise ArchiveError(f"{shown}: a symlink; the archive writes only inside the run dir, "
                           "refused")
    if not stat.S_ISDIR(st.st_mode):
        raise ArchiveError(f"{shown}: a {kind_of(st.st_mode)}, not a directory; refused")


def pread_byte(fd: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, 1, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, 1)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def os_line(err: OSError, shown: Path) -> str:
    """An OSError as one line naming the path; ELOOP means a symlink met O_NOFOLLOW."""
    if err.errno == errno.ELOOP:
        return f"{shown}: a symlink; the archive writes only inside the run dir, refused"
    return f"{shown}: {err.strerror or err}"
