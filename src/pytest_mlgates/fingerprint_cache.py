"""The fingerprint cache: digests of a run's files kept beside its archive, so that an
unchanged 2 GB checkpoint is not read again by every session and every verdict.

``<run>/acceptance/fingerprint-cache.json`` (or ``DIR/<run name>/`` with
``--mlgates-archive=DIR``) holds, for each regular file of the run, the digest last
computed and the key it was computed for: (size, mtime_ns, ctime_ns, inode, device).  A
snapshot reuses a digest only when the file's key is the same now and its mtime and ctime
are older than the cache's clock (git's racy-timestamp rule, ``fingerprint.py``).  Anything
else is read again.

What the cache trusts, and why that is no weaker than what the ledger already trusts
(SECURITY.md):

* **The kernel's inode and ctime.**  Changing a file's bytes moves its ctime (and
  ``os.utime``, which can put mtime back, moves ctime too); replacing it gives a new
  inode.  Neither can be set back without root, so an honest cache never vouches for
  bytes written after it was made.
* **Whoever can write the run dir.**  Such a writer can also write a cache that claims
  old digests for new bytes -- just as they can write a GREEN ledger line.  So, exactly as
  for the ledger: with ``MLGATES_LEDGER_KEY`` set, the cache is signed (HMAC-SHA256 over
  its canonical JSON) and one without a valid signature is ignored; without the key it
  is as trustworthy as the run dir's writer.  ``mlgates verdict --rehash`` reads every
  byte whatever the cache says.

The cache is read and written through ``archive_fs`` (never through a symlink, a FIFO is
never opened, regular files only, written whole under a temporary name) and its size is
capped.  Anything wrong with it -- corrupt, forged, another run's, another algorithm's,
symlinked, over the cap -- and it is ignored: a cache can only save reading, never decide a
verdict.  It is written only where the archive is written (the xdist controller) and by
``mlgates verdict`` when it had to read something; a failure to write it is silent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pytest_mlgates.fingerprint import FileKey, KnownDigests, Snapshot

CACHE_NAME = "fingerprint-cache.json"
CACHE_FORMAT = 1
#: No cache is read or written past this (about 300,000 files' entries).
CACHE_CAP = 64 << 20


def _root_id(run: Path) -> list[int] | None:
    try:
        st = os.stat(run)
    except OSError:
        return None
    return [st.st_dev, st.st_ino]


def load(base: Path, name: str, run: Path, algorithm: str,
         key: bytes | None) -> KnownDigests | None:
    """The digests cached for ``run`` in ``base/name``, or None when there is no cache
    fit to use: missing, unreadable, not a regular file, over the cap, not this format,
    algorithm or run dir, or -- with a ``key`` -- not validly signed."""
    from pytest_mlgates.archive_fs import ArchiveDir, ArchiveError

    try:
        handle = ArchiveDir.open_file(base, name, CACHE_NAME)
        if handle is None:
            return None
        with handle:
            raw = handle.read(CACHE_CAP + 1)
    except (ArchiveError, OSError):
        return None
    if len(raw) > CACHE_CAP:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return parse(data, run, algorithm, key)


def parse(data: Any, run: Path, algorithm: str, key: bytes | None) -> KnownDigests | None:
    """A cache's JSON as :class:`KnownDigests`, or None when any part of it is off."""
    from pytest_mlgates.ledger import signature_state

    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return None
    if key is not None and signature_state(data, key) != "valid":
        return None
    if data.get("algorithm") != algorithm or data.get("root") != _root_id(run):
        return None
    clock = data.get("clock_ns")
    entries = data.get("entries")
    if not isinstance(clock, int) or isinstance(clock, bool) or not isinstance(entries, dict):
        return None
    known = KnownDigests(algorithm, clock)
    for rel, value in entries.items():
        if not (isinstance(rel, str) and isinstance(value, list) and len(value) == 6
                and all(_is_int(v) for v in value[:5]) and isinstance(value[5], str)
                and len(value[5]) == 64):
            return None
        file_key: FileKey = (value[0], value[1], value[2], value[3], value[4])
        known.entries[rel] = (file_key, value[5])
    return known


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def encode(snap: Snapshot, run: Path, key: bytes | None) -> bytes | None:
    """The cache file for ``snap`` (signed with ``key``), or None when it has nothing to
    keep or would be over the cap."""
    from pytest_mlgates.ledger import signature

    known = snap.known
    root = _root_id(run)
    if known is None or root is None:
        return None
    data: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "algorithm": known.algorithm,
        "root": root,
        "clock_ns": known.clock_ns,
        "entries": {rel: [*file_key, digest]
                    for rel, (file_key, digest) in sorted(known.entries.items())},
    }
    if key is not None:
        data["signature"] = signature(data, key)
    text = json.dumps(data, separators=(",", ":")).encode()
    return text if len(text) <= CACHE_CAP else None


def save(base: Path, name: str, run: Path, snap: Snapshot, key: bytes | None) -> bool:
    """Write the cache for ``snap`` into an existing ``base/name``; False (and nothing
    said) when it cannot be: the cache only ever saves reading."""
    from pytest_mlgates.archive_fs import ArchiveDir, ArchiveError

    data = encode(snap, run, key)
    if data is None:
        return False
    try:
        folder = ArchiveDir.open(base, name, create=False)
        if folder is None:
            return False
        with folder:
            folder.write_file(CACHE_NAME, data.decode())
    except (ArchiveError, OSError):
        return False
    return True
