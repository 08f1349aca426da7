"""A run dir's fingerprint: which bytes a verdict was given for.

``mlgates verdict`` may only say ACCEPTED for the files that were actually checked.  The
archive stores, with every session, one sha256 over the whole run plus one per entry, so a
later verdict can tell "nothing changed" from "checkpoints/final.pt changed since" and
name the entry.

What counts, and how it is read:

* every regular file, by content; every directory, by name (an empty ``checkpoint-99/``
  added to a Hugging Face run is a change); every symlink, by the path it points to (it is
  never followed, so a link out of the run pulls nothing foreign in, and re-pointing it is
  a change);
* anything else (a FIFO, a socket, a device) is never opened -- opening a FIFO waits for a
  writer forever -- and is listed in :attr:`Snapshot.unsafe`: a session that meets one is
  void, and a verdict sees it as an added entry;
* ``acceptance/`` (the archive itself) is never part of the fingerprint: archiving a
  session must not make the run look changed.

The directory tree is walked with ``os.fwalk`` (directory file descriptors, no symlink
followed) and each file is opened ``O_NOFOLLOW | O_NONBLOCK`` relative to its directory's
descriptor and checked with ``fstat`` before one byte is read: a file swapped for a link or
a FIFO while the walk runs is refused, not followed.

Besides the content digest, a :class:`Snapshot` carries ``stamp``: a digest over every
entry's inode, size, mtime and ctime.  A session compares the snapshot taken before its
first item with the one taken at its end; a run changed in between -- even changed and put
back, which renames and writes leave in ctime -- voids the session.

**Which hash.**  Content is hashed with BLAKE3 (the ``blake3`` package) where it is
installed, else SHA-256 (``hashlib``); the snapshot says which (``algorithm``), the ledger
line records it, and a verdict recomputes with the line's algorithm.  BLAKE3 on one thread
reads a 2 GB checkpoint in about half the time of one ``hashlib.sha256`` pass on this
project's 2-core machine (``bench/verdict_cache.py``); threads did not pay there.

**Bytes that are not read again.**  A snapshot given :class:`KnownDigests` (digests
computed before, ``fingerprint_reuse.py`` says when one still stands) reuses them instead
of reading the files again; ``fingerprint_cache.py`` keeps them on disk between sessions.

Example::

    digest, files = fingerprint("runs/default")
    files["checkpoints/final.pt"]   # '9f86d081884c7d65...'
    files["checkpoints"]            # 'dir'
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlgates.fingerprint_reuse import (  # RACY_MARGIN_NS, file_key: importable from here too
    RACY_MARGIN_NS,  # noqa: F401
    FileKey,
    KnownDigests,
    file_key,
    racy_clock_ns,
    settled,
)

ARCHIVE_DIRNAME = "acceptance"
DIR_DIGEST = "dir"
_CHUNK = 1 << 20  # 1 MiB: streams checkpoints of any size with flat memory
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(
    os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_HAVE_FWALK = hasattr(os, "fwalk") and os.open in os.supports_dir_fd
#: (relative path, lstat or None when unknown, digest or a word for what is there)
_Entry = tuple[str, "os.stat_result | None", str]
ALGORITHMS = ("blake3", "sha256")


class NotRegularFile(OSError):
    """A path that had to be a regular file is a FIFO, socket, device or directory."""


def kind_of(mode: int) -> str:
    """``'FIFO'``, ``'socket'``, ``'device'``, ``'directory'``, ``'symlink'`` or ``'file'``."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def describe(word: str) -> str:
    """What an unsafe entry is, for a message: ``a FIFO``, ``unreadable``, ..."""
    return {"FIFO": "a FIFO", "socket": "a socket", "device": "a device",
            "swapped": "replaced while it was read"}.get(word, word)


def available(algorithm: str) -> bool:
    """Whether this interpreter can compute ``algorithm`` (``blake3`` needs its package)."""
    if algorithm == "sha256":
        return True
    if algorithm == "blake3":
        try:
            import blake3  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def preferred_algorithm() -> str:
    """The algorithm new fingerprints use: ``blake3`` where installed, else ``sha256``."""
    return "blake3" if available("blake3") else "sha256"


def _hasher(algorithm: str) -> Any:
    if algorithm == "blake3":
        import blake3

        return blake3.blake3()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown fingerprint algorithm {algorithm!r}")


def _digest_fd(fd: int, algorithm: str = "sha256") -> str:
    digest = _hasher(algorithm)
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    while True:
        count = os.readv(fd, [buffer]) if hasattr(os, "readv") else _read_into(fd, buffer)
        if not count:
            break
        digest.update(view[:count])
    return str(digest.hexdigest())


def _read_into(fd: int, buffer: bytearray) -> int:
    data = os.read(fd, len(buffer))
    buffer[: len(data)] = data
    return len(data)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of one regular file's content, read in 1 MiB chunks.

    The file is opened non-blocking and checked to be a regular file before it is read, so
    a FIFO (or a device) at ``path`` raises :class:`NotRegularFile` at once instead of
    waiting for a writer.  Symlinks are followed: this is for files outside a run dir that
    the user named (gate files, the code a key link points to)."""
    flags = _OPEN_FLAGS & ~getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"{os.fspath(path)}: a {kind_of(mode)}, not a regular file")
        return _digest_fd(fd, "sha256")
    finally:
        os.close(fd)


@dataclass
class Snapshot:
    """A run dir as it was at one moment: ``digest`` over ``files`` ({relative path:
    content digest | 'dir' | 'symlink:<sha of target>' | 'FIFO' | 'socket' | 'device'}),
    ``stamp`` over inode/size/mtime/ctime, and ``unsafe`` ({path: kind} of the entries
    that are not regular files, directories or symlinks).

    ``algorithm`` is the content hash (``blake3`` or ``sha256``); ``known`` the digests a
    later snapshot may reuse; ``hashed_bytes``/``hashed``/``reused`` say how much was read."""

    digest: str
    files: dict[str, str]
    stamp: str
    unsafe: dict[str, str] = field(default_factory=dict)
    algorithm: str = "sha256"
    known: KnownDigests | None = None
    hashed: int = 0
    hashed_bytes: int = 0
    reused: int = 0


class _Hasher:
    """Digests regular files for one walk: reuses ``known`` digests where sound, reads
    the rest, and keeps what a later snapshot may reuse."""

    def __init__(self, algorithm: str, known: KnownDigests | None) -> None:
        self.algorithm = algorithm
        self.known = known if known is not None and known.algorithm == algorithm else None
        self.clock_ns = racy_clock_ns()  # before the first stat of the walk
        self.fresh = KnownDigests(algorithm, self.clock_ns)
        self.hashed = self.hashed_bytes = self.reused = 0

    def __call__(self, rel: str, name: str, st: os.stat_result, dir_fd: int | None) -> str:
        if stat.S_ISREG(st.st_mode) and self.known is not None:
            digest = self.known.lookup(rel, st)
            if digest is not None:
                self.reused += 1
                self._keep(rel, file_key(st), digest)
                return digest
        digest = _digest_entry(name, st, dir_fd, self.algorithm)
        if stat.S_ISREG(st.st_mode) and len(digest) == 64:
            self.hashed += 1
            self.hashed_bytes += st.st_size
            self._keep(rel, file_key(st), digest)
        return digest

    def _keep(self, rel: str, key: FileKey, digest: str) -> None:
        # kept only when no write can have landed in the tick it was read in
        if settled(key, self.clock_ns):
            self.fresh.entries[rel] = (key, digest)


def snapshot(run_dir: str | os.PathLike[str], *, algorithm: str | None = None,
             known: KnownDigests | None = None) -> Snapshot:
    """Fingerprint ``run_dir`` (see the module docstring).  A run dir that does not exist
    has the fingerprint of an empty one.

    ``algorithm`` defaults to :func:`preferred_algorithm`; ``known`` digests (of the same
    algorithm) are reused for files whose key is unchanged, and never otherwise."""
    algorithm = algorithm or preferred_algorithm()
    hasher = _Hasher(algorithm, known)
    files: dict[str, str] = {}
    stamps: dict[str, str] = {}
    unsafe: dict[str, str] = {}
    root = os.fspath(run_dir)
    if os.path.isdir(root):
        walk = _walk_fds if _HAVE_FWALK else _walk_paths
        for rel, st, digest in walk(root, hasher):
            if not _is_digest(digest):
                unsafe[rel] = digest  # FIFO, socket, device, unreadable, swapped
            files[rel] = digest
            stamps[rel] = "-" if st is None else \
                f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    files.update(_outside_entries(run_dir))
    return Snapshot(_total(files), files, _total(stamps), unsafe, algorithm=algorithm,
                    known=hasher.fresh, hashed=hasher.hashed,
                    hashed_bytes=hasher.hashed_bytes, reused=hasher.reused)


def _is_digest(digest: str) -> bool:
    return digest == DIR_DIGEST or digest.startswith("symlink:") or len(digest) == 64


_DigestFn = Callable[[str, str, os.stat_result, "int | None"], str]


def _below(root: str, current: str, dirnames: list[str], filenames: list[str]) -> tuple[str, list[str]]:
    """(``current`` relative to ``root`` as a ``a/b/`` prefix, its file names): at the top,
    the archive folder is left out of the walk (``dirnames`` pruned in place)."""
    rel_dir = os.path.relpath(current, root)
    rel_dir = "" if rel_dir == "." else Path(rel_dir).as_posix() + "/"
    if not rel_dir:
        dirnames[:] = [d for d in dirnames if d != ARCHIVE_DIRNAME]
        filenames = [f for f in filenames if f != ARCHIVE_DIRNAME]
    return rel_dir, filenames


def _walk_fds(root: str, digest_of: _DigestFn) -> Iterator[_Entry]:
    """(relative path, lstat, digest) of every entry, walked through directory fds."""
    unreadable: list[OSError] = []
    for current, dirnames, filenames, dir_fd in os.fwalk(root, follow_symlinks=False,
                                                         onerror=unreadable.append):
        rel_dir, filenames = _below(root, current, dirnames, filenames)
        dirnames.sort()
        for name in sorted(dirnames):
            yield rel_dir + name, os.stat(name, dir_fd=dir_fd, follow_symlinks=False), DIR_DIGEST
        for name in sorted(filenames):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the directory was listed
            yield rel_dir + name, st, digest_of(rel_dir + name, name, st, dir_fd)
    yield from _unreadable_dirs(root, unreadable)


def _unreadable_dirs(root: str, errors: list[OSError]) -> Iterator[_Entry]:
    """A directory the walk could not list is an entry of its own: its content is unknown."""
    for err in errors:
        where = os.path.relpath(os.fsdecode(err.filename or root), root)
        yield ("." if where == "." else Path(where).as_posix()) + "#unreadable", None, \
            "unreadable"


def _digest_entry(name: str, st: os.stat_result, dir_fd: int | None,
                  algorithm: str = "sha256") -> str:
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=dir_fd) if dir_fd is not None else os.readlink(name)
        return "symlink:" + hashlib.sha256(os.fsencode(target)).hexdigest()
    if not stat.S_ISREG(st.st_mode):
        return kind_of(st.st_mode)  # never opened
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd) if dir_fd is not None else os.open(
            name, _OPEN_FLAGS)
    except OSError:
        return "unreadable"  # a symlink or FIFO swapped in (ELOOP, ENXIO), no permission
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or now.st_ino != st.st_ino:
            return "swapped"  # replaced between lstat and open: never a stable fingerprint
        return _digest_fd(fd, algorithm)
    finally:
        os.close(fd)


def _walk_paths(root: str, digest_of: _DigestFn) -> Iterator[_Entry]:
    """The same walk by paths, for platforms without ``os.fwalk`` (Windows)."""
    unreadable: list[OSError] = []
    for current, dirnames, filenames in os.walk(root, followlinks=False,
                                                onerror=unreadable.append):
        rel_dir, filenames = _below(root, current, dirnames, filenames)
        names = dirnames + filenames
        dirnames.sort()
        for name in sorted(names):
            full = os.path.join(current, name)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                yield rel_dir + name, st, DIR_DIGEST
            else:
                yield rel_dir + name, st, digest_of(rel_dir + name, full, st, None)
    yield from _unreadable_dirs(root, unreadable)


def _total(entries: dict[str, str]) -> str:
    """One sha256 over names and digests: a renamed entry changes it."""
    total = hashlib.sha256()
    for rel in sorted(entries):
        total.update(rel.encode("utf-8", "surrogateescape"))
        total.update(b"\0")
        total.update(entries[rel].encode())
        total.update(b"\n")
    return total.hexdigest()


def run_files(run_dir: str | os.PathLike[str]) -> list[str]:
    """Every entry of the run (POSIX relative paths, sorted), ``acceptance/`` excluded."""
    return sorted(rel for rel in snapshot(run_dir).files if not rel.startswith("mlflow.db#"))


def fingerprint(run_dir: str | os.PathLike[str],
                algorithm: str | None = None) -> tuple[str, dict[str, str]]:
    """``(sha256 over the whole run, {relative path: content digest})``.

    The total digest covers names as well as contents, so a renamed file changes it.
    """
    snap = snapshot(run_dir, algorithm=algorithm)
    return snap.digest, snap.files


def _outside_entries(run_dir: str | os.PathLike[str]) -> dict[str, str]:
    """What a run keeps outside its dir: an MLflow run named by its artifact folder has its
    metrics, params, tags and status in the store's ``mlflow.db`` above it. That run's rows
    (not the whole database, which other runs write to) are one entry, ``mlflow.db#<run id>``."""
    from pytest_mlgates.formats._mlflow_sqlite import read_sqlite_run, sqlite_owner

    owner = sqlite_owner(Path(run_dir))
    if owner is None:
        return {}
    root, run_id = owner
    try:
        run = read_sqlite_run(root / "mlflow.db", root, run_id)
        content = json.dumps({"metrics": run.metrics, "params": run.params, "tags": run.tags,
                              "status": run.status}, sort_keys=True, default=str)
    except Exception as exc:  # noqa: BLE001 - a broken db is a state too: hash its one line
        content = f"unreadable: {exc}"
    return {f"mlflow.db#{run_id}": hashlib.sha256(content.encode()).hexdigest()}


def diff_files(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    """Entries ``added``, ``removed`` and ``changed`` going from ``old`` to ``new``."""
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(rel for rel in set(old) & set(new) if old[rel] != new[rel]),
    }
