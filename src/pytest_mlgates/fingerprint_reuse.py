"""When a digest computed before still stands for a file's bytes, so that a fingerprint
need not read the file again.

:class:`KnownDigests` holds digests already computed, each keyed on its file's (size,
mtime_ns, ctime_ns, inode, device), and a snapshot given one reuses a digest whose key
still matches instead of reading the file. The rule is git's for its index, made stricter:
a digest is reusable only if the file's mtime *and* ctime are older than the clock read
before the walk that hashed it, less two seconds (``racy_clock_ns``) -- a file written in
the same clock tick as it was read (or within a filesystem's whole-second granularity) is
read again next time. A writer cannot set ctime or the inode back (``os.utime`` restores
mtime only and moves ctime), so changed bytes always miss. ``fingerprint_cache.py`` keeps
these digests on disk between sessions and verdicts; SECURITY.md says what that trusts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

__all__ = ["RACY_MARGIN_NS", "FileKey", "KnownDigests", "file_key", "racy_clock_ns", "settled"]

#: (size, mtime_ns, ctime_ns, inode, device): what must be unchanged for a digest to stand
FileKey = tuple[int, int, int, int, int]
#: How far the racy clock stays behind "now": covers coarse kernel ticks and filesystems that
#: keep whole seconds (FAT keeps two).
RACY_MARGIN_NS = 2_000_000_000


def racy_clock_ns() -> int:
    """The clock a digest must be older than to be reused: the kernel's coarse clock (what
    it stamps files with) where there is one, less :data:`RACY_MARGIN_NS`.  Read it before
    the walk whose digests it vouches for."""
    coarse = getattr(time, "CLOCK_REALTIME_COARSE", None)
    now = time.clock_gettime_ns(coarse) if coarse is not None else time.time_ns()
    return now - RACY_MARGIN_NS


def file_key(st: os.stat_result) -> FileKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


@dataclass
class KnownDigests:
    """Digests computed before, each with the key of the file it was computed from.

    ``entries`` maps a relative path to ``(key, digest)``; every entry was checked, when
    it was made, to be older than the clock of its walk (see the module doc).  ``lookup``
    gives the digest only when the file's key now is the same."""

    algorithm: str
    clock_ns: int
    entries: dict[str, tuple[FileKey, str]] = field(default_factory=dict)

    def lookup(self, rel: str, st: os.stat_result) -> str | None:
        known = self.entries.get(rel)
        if known is None:
            return None
        key, digest = known
        if key != file_key(st) or not settled(key, self.clock_ns):
            return None
        return digest


def settled(key: FileKey, clock_ns: int) -> bool:
    """mtime and ctime both older than ``clock_ns``: a later write cannot keep this key."""
    return key[1] < clock_ns and key[2] < clock_ns
