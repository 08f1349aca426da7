"""Where the archive lands: ``<run>/acceptance/``, opened without following a symlink.

A run dir may come from a stranger, so its ``acceptance/`` may be a symlink to somewhere
else, and so may its ``ledger.jsonl`` or lock file.  Writing through one would put the
archive -- and a ledger line holding the run's file names -- in a directory the run's
author chose.  So every write here goes through directory file descriptors:

* the run dir itself is opened as the user named it (``runs/latest`` may be a symlink: the
  user typed it); ``acceptance`` inside it is created if missing and opened with
  ``O_DIRECTORY | O_NOFOLLOW``;
* everything below is opened relative to that descriptor with ``O_NOFOLLOW`` (and
  ``O_NONBLOCK``, then ``fstat``: a FIFO is refused, never waited on); session dirs are
  created under a fresh random name with ``O_EXCL`` files and renamed into place;
* the ledger must be a regular file with one link (a hard link to a file outside the run
  would carry the appended line out), and the lock is taken with ``flock`` on a lock file
  opened the same way (never truncated); both are checked before the session dir is
  written, so a refused ledger leaves nothing behind.

Anything that does not hold is an :class:`ArchiveError`: one line, nothing written.

On a platform without ``dir_fd`` support (Windows) the same checks are made on paths with
``lstat`` just before each open: a best effort, racy against a concurrent attacker.
The descriptor-level pieces (flags, the ledger's flock, one-line OSErrors) are
``archive_os.py``.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pytest_mlgates.archive_os import (
    BINARY,
    CLOEXEC,
    DIR_FDS,
    DIRECTORY,
    NOFOLLOW,
    NONBLOCK,
    ArchiveError,
    Locked,
    os_line,
    pread_byte,
    require_dir,
    write_all,
)
from pytest_mlgates.fingerprint import ARCHIVE_DIRNAME, kind_of

LOCK_SUFFIX = ".lock"


def archive_location(run_dir: Path, setting: str | None) -> tuple[Path, str]:
    """Where a run's archive lives, as (directory, name in it): ``(<run>, 'acceptance')``
    or ``(DIR, <run name>)`` for ``--mlgates-archive=DIR``.  Here, not in ``archive.py``,
    so that ``mlgates verdict`` finds it without importing pytest."""
    if str(setting or "on").lower() in ("on", ""):
        return run_dir, ARCHIVE_DIRNAME
    return Path(str(setting)).expanduser().resolve(), run_dir.name


class ArchiveDir:
    """One run's archive directory, held open.  Use :meth:`open`, then ``with``."""

    def __init__(self, fd: int | None, path: Path) -> None:
        self.fd = fd  # None on platforms without dir_fd: paths are used instead
        self.path = path

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(cls, base: Path, name: str, *, create: bool) -> ArchiveDir | None:
        """``base/name`` (``<run>/acceptance``, or ``DIR/<run name>`` for
        ``--mlgates-archive=DIR``).  None when it does not exist and ``create`` is False."""
        shown = base / name
        if not DIR_FDS:
            return cls._open_by_path(base, name, create=create)
        try:
            base_fd = os.open(base, os.O_RDONLY | DIRECTORY | CLOEXEC)
        except FileNotFoundError:
            if not create:
                return None
            raise ArchiveError(f"{base}: no such directory; nothing archived") from None
        except NotADirectoryError:
            raise ArchiveError(f"{base}: not a directory; nothing archived") from None
        try:
            if create:
                try:
                    os.mkdir(name, 0o755, dir_fd=base_fd)
                except FileExistsError:
                    pass
            try:
                st = os.stat(name, dir_fd=base_fd, follow_symlinks=False)
            except FileNotFoundError:
                return None
            require_dir(st, shown)
            fd = os.open(name, os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC, dir_fd=base_fd)
        except OSError as err:
            raise ArchiveError(os_line(err, shown)) from None
        finally:
            os.close(base_fd)
        return cls(fd, shown)

    @classmethod
    def open_file(cls, base: Path, name: str, filename: str) -> BinaryIO | None:
        """``base/name/filename`` opened for reading through the archive's checks (no
        symlink, a regular file, never a wait); None when the archive or the file is
        absent.  The directory is closed again: the handle outlives it."""
        folder = cls.open(base, name, create=False)
        if folder is None:
            return None
        with folder:
            return folder.open_for_reading(filename)

    @classmethod
    def _open_by_path(cls, base: Path, name: str, *, create: bool) -> ArchiveDir | None:
        shown = base / name
        if not base.is_dir():
            if not create:
                return None
            raise ArchiveError(f"{base}: no such directory; nothing archived")
        try:
            if create:
                shown.mkdir(exist_ok=True)
            st = os.lstat(shown)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise ArchiveError(os_line(err, shown)) from None
        require_dir(st, shown)
        return cls(None, shown)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> ArchiveDir:  # noqa: PYI034 - a final class
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- primitives --------------------------------------------------------------------

    def _open(self, name: str, flags: int, mode: int = 0o644, *, within: int | None = None) -> int:
        """Open ``name`` in this dir (or in the dir fd ``within``) without following links."""
        flags |= NOFOLLOW | CLOEXEC | BINARY
        if self.fd is None:
            path = self.path / name
            if path.is_symlink():
                raise ArchiveError(f"{path}: a symlink; the archive writes only inside the run "
                                   "dir, refused")
            return os.open(path, flags, mode)
        return os.open(name, flags, mode, dir_fd=self.fd if within is None else within)

    def _lstat(self, name: str) -> os.stat_result:
        if self.fd is None:
            return os.lstat(self.path / name)
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def _regular(self, fd: int, name: str, *, single_link: bool = False) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArchiveError(f"{self.path / name}: a {kind_of(st.st_mode)}, not a regular "
                               "file; refused")
        if single_link and st.st_nlink > 1:
            raise ArchiveError(f"{self.path / name}: has {st.st_nlink} hard links (one may be "
                               "outside the run dir); refused")

    def _check_existing(self, name: str) -> None:
        """A ``name`` that exists must be a regular file, not a symlink, FIFO or directory
        (the open that follows checks again with ``O_NOFOLLOW`` and ``fstat``)."""
        st = self._check_not_link(name)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise ArchiveError(f"{self.path / name}: a {kind_of(st.st_mode)}, not a regular "
                               "file; refused")

    def _check_not_link(self, name: str) -> os.stat_result | None:
        """``name``'s lstat (None when absent); an ArchiveError when it is a symlink."""
        try:
            st = self._lstat(name)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise ArchiveError(f"{self.path / name}: a symlink; the archive writes only inside "
                               "the run dir, refused")
        return st

    # -- reading -----------------------------------------------------------------------

    def open_for_reading(self, name: str) -> BinaryIO | None:
        """A regular file of the archive opened for reading, or None when it is absent."""
        try:
            self._check_not_link(name)
            fd = self._open(name, os.O_RDONLY | NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise ArchiveError(os_line(err, self.path / name)) from None
        try:
            self._regular(fd, name)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb")

    # -- writing -----------------------------------------------------------------------

    def write_session(self, name: str, contents: dict[str, str]) -> str:
        """Write ``contents`` into a fresh temp dir here and rename it to ``name``; return
        the name it got (a fresh suffix if ``name`` is taken).  All or nothing."""
        temp = self._make_temp_dir()
        try:
            self._fill(temp, contents)
            stem, verdict = name.rsplit("-", 1)
            target = name
            for _attempt in range(5):
                try:
                    self._rename(temp, target)
                    temp = ""
                    self._sync_dir()
                    return target
                except OSError as err:
                    if err.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR,
                                         errno.EISDIR):
                        raise
                    target = f"{stem}{secrets.token_hex(2)}-{verdict}"
            raise ArchiveError(f"{self.path}: no free archive dir name for {name}")
        except OSError as err:
            raise ArchiveError(os_line(err, self.path)) from None
        finally:
            if temp:
                self._remove_temp(temp, contents)

    def write_file(self, name: str, text: str) -> None:
        """Write one file here whole (temp file with ``O_EXCL``, fsync, rename): for
        ``mlgates prove``'s ``proof-<UTC>.json``.  A symlink at ``name`` is replaced, never
        followed."""
        temp = f".tmp-{secrets.token_hex(6)}-{name}"
        try:
            fd = self._open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                write_all(fd, text.encode("utf-8", "surrogateescape"))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._rename(temp, name)
            temp = ""
            self._sync_dir()
        except OSError as err:
            raise ArchiveError(os_line(err, self.path / name)) from None
        finally:
            if temp:
                self._quietly(os.unlink, temp)

    def _quietly(self, remove: Callable[..., None], name: str) -> None:
        """``remove`` (``os.unlink``, ``os.rmdir``) ``name`` here if it is there: what a
        failed write or a failed session left; a cleanup never raises."""
        try:
            if self.fd is None:
                remove(self.path / name)
            else:
                remove(name, dir_fd=self.fd)
        except OSError:
            pass

    def _make_temp_dir(self) -> str:
        for _attempt in range(10):
            temp = f".tmp-{secrets.token_hex(6)}"
            try:
                if self.fd is None:
                    os.mkdir(self.path / temp, 0o755)
                else:
                    os.mkdir(temp, 0o755, dir_fd=self.fd)
                return temp
            except FileExistsError:
                continue
            except OSError as err:
                raise ArchiveError(os_line(err, self.path)) from None
        raise ArchiveError(f"{self.path}: could not create a temporary dir")

    def _fill(self, temp: str, contents: dict[str, str]) -> None:
        within = None
        if self.fd is not None:
            within = os.open(temp, os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC,
                             dir_fd=self.fd)
        try:
            for filename, text in contents.items():
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
                if within is None:
                    fd = os.open(self.path / temp / filename, flags | NOFOLLOW | BINARY, 0o644)
                else:
                    fd = self._open(filename, flags, within=within)
                try:
                    write_all(fd, text.encode("utf-8", "surrogateescape"))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            if within is not None:
                os.fsync(within)
        finally:
            if within is not None:
                os.close(within)

    def _rename(self, src: str, dst: str) -> None:
        if self.fd is None:
            os.rename(self.path / src, self.path / dst)
        else:
            os.rename(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def _remove_temp(self, temp: str, contents: dict[str, str]) -> None:
        within = None
        try:
            if self.fd is not None:  # the temp dir opened once, its files removed through it
                within = os.open(temp, os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC, dir_fd=self.fd)
            for filename in contents:
                try:
                    if within is None:
                        os.unlink(self.path / temp / filename)
                    else:
                        os.unlink(filename, dir_fd=within)
                except OSError:
                    pass
        except OSError:
            pass
        finally:
            if within is not None:
                os.close(within)
        self._quietly(os.rmdir, temp)

    def _sync_dir(self) -> None:
        if self.fd is not None:
            try:
                os.fsync(self.fd)
            except OSError:
                pass

    @contextmanager
    def ledger(self, ledger_name: str) -> Iterator[Callable[[bytes], None]]:
        """Lock the ledger and open it for appending; yields ``append(line)``.

        Taken before the session dir is written, so a ledger (or lock file) that is a
        symlink, a FIFO or hard-linked out refuses the whole session: nothing is written.
        ``append`` is one ``write`` with ``O_APPEND``, then fsync; a torn last line left by
        a killed session stays one unreadable line: the new line starts on a line of its
        own."""
        lock_name = ledger_name + LOCK_SUFFIX
        try:
            self._check_existing(ledger_name)  # before the lock file is created
            self._check_not_link(lock_name)
            lock_fd = self._open(lock_name, os.O_RDWR | os.O_CREAT | NONBLOCK)
        except OSError as err:
            raise ArchiveError(os_line(err, self.path / lock_name)) from None
        try:
            self._regular(lock_fd, lock_name)
            with Locked(lock_fd, self.path / lock_name):
                try:
                    self._check_not_link(ledger_name)
                    fd = self._open(ledger_name, os.O_RDWR | os.O_APPEND | os.O_CREAT | NONBLOCK)
                except OSError as err:
                    raise ArchiveError(os_line(err, self.path / ledger_name)) from None
                try:
                    self._regular(fd, ledger_name, single_link=True)

                    def append(data: bytes) -> None:
                        try:
                            size = os.fstat(fd).st_size
                            if size and pread_byte(fd, size - 1) != b"\n":
                                data = b"\n" + data
                            write_all(fd, data)
                            os.fsync(fd)
                        except OSError as err:
                            raise ArchiveError(os_line(err, self.path / ledger_name)) from None

                    yield append
                finally:
                    os.close(fd)
        finally:
            os.close(lock_fd)
