"""The ledger line: what one session says about one run, signed, checked and read back.

``<run>/acceptance/ledger.jsonl`` holds one JSON object per line, one line per session.
This module owns the line's shape and the rules a reader applies to it:

* **Format.** Every line has ``"format": 2`` and the fields :func:`check_entry` lists,
  with their types.  A line that is not valid JSON, is over :data:`LINE_CAP` bytes, or has
  a field of the wrong type (``"counts": "x"``) is *unreadable*: :func:`iter_lines`
  yields it with a one-line problem instead of raising, and ``mlgates verdict`` never
  falls back past an unreadable line to an older GREEN one.
* **Bounded.** Lines are streamed one at a time with ``readline(LINE_CAP + 1)``; a longer
  line is skipped in 1 MiB pieces without ever being held whole (a 500 MB line costs
  1 MiB, not 2 GB).  The writer keeps its own lines under the cap.
* **Signed.** With ``MLGATES_LEDGER_KEY`` in the environment, the writer adds
  ``"signature": "hmac-sha256:<hex>"``, an HMAC-SHA256 with that key over the line's
  canonical JSON (sorted keys, no spaces, ASCII, the signature field left out).  A
  verdict taken with the key ignores lines whose signature is missing or wrong, so a line
  written by hand into a run dir -- however well its fingerprint is computed -- cannot make
  the run ACCEPTED where CI holds the key.  See SECURITY.md for what this does not cover.

Standard library only: ``mlgates verdict`` reads ledgers without numpy, yaml or torch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

LEDGER_NAME = "ledger.jsonl"
#: The shape of a line this mlgates writes and judges; other lines are unreadable to it.
LEDGER_FORMAT = 2
#: No line is longer (32 MiB holds the per-file digests of a run with ~200,000 files).
LINE_CAP = 32 << 20
KEY_ENV = "MLGATES_LEDGER_KEY"
SIGNATURE_PREFIX = "hmac-sha256:"
STATUSES = ("GREEN", "RED", "UNVERIFIED", "ERROR", "SKIPPED")
_SKIP_PIECE = 1 << 20


class LedgerKeyError(Exception):
    """``MLGATES_LEDGER_KEY`` is set but unusable (empty): one line for the user."""


def ledger_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The signing key from ``MLGATES_LEDGER_KEY``, or None when it is not set.

    An empty value is an error, not "no key": in CI it is what a secret that is not
    available to this job (a fork's pull request) expands to, and a verdict must not
    quietly stop requiring signatures then."""
    value = (os.environ if environ is None else environ).get(KEY_ENV)
    if value is None:
        return None
    if not value.strip():
        raise LedgerKeyError(f"{KEY_ENV} is set but empty (a CI secret that this job "
                             "cannot see?); unset it or give the key")
    return value.encode("utf-8")


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the line without its signature, keys sorted."""
    body = {k: v for k, v in entry.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def signature(entry: Mapping[str, Any], key: bytes) -> str:
    return SIGNATURE_PREFIX + hmac.new(key, canonical(entry), hashlib.sha256).hexdigest()


def signature_state(entry: Mapping[str, Any], key: bytes) -> str:
    """``'valid'``, ``'missing'`` or ``'bad'`` (wrong key, edited line, not a string)."""
    given = entry.get("signature")
    if given is None:
        return "missing"
    if not isinstance(given, str):
        return "bad"
    try:
        expected = signature(entry, key)
    except (TypeError, ValueError):
        return "bad"
    return "valid" if hmac.compare_digest(given, expected) else "bad"


def encode_line(entry: dict[str, Any], key: bytes | None = None) -> bytes:
    """One ledger line (newline included), signed when ``key`` is given.

    A line over the cap first loses its per-file digests (``"files": null``: a verdict can
    still tell STALE by the total fingerprint, it just cannot name the entry), then its
    criteria's values; a line that is still too long raises ValueError."""
    for shrink in (None, _drop_files, _drop_values):
        if shrink is not None:
            entry = shrink(entry)
        if key is not None:
            entry = {**entry, "signature": signature(entry, key)}
        data = (json.dumps(entry, separators=(",", ":"), allow_nan=False) + "\n").encode()
        if len(data) <= LINE_CAP:
            return data
        entry = {k: v for k, v in entry.items() if k != "signature"}
    raise ValueError(f"a ledger line of {len(data)} bytes is over the {LINE_CAP}-byte cap")


def _drop_files(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "files": None, "files_omitted": len(entry.get("files") or {})}


def _drop_values(entry: dict[str, Any]) -> dict[str, Any]:
    criteria = [{**c, "value": None, "threshold": None} for c in entry.get("criteria", [])]
    return {**entry, "criteria": criteria}


# --------------------------------------------------------------------------- checking

_TEXT_OR_NONE = (str, type(None))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in value.items())


def check_entry(entry: Any) -> str | None:
    """None for a well-formed line of this format, else what is wrong, in a few words."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    if entry.get("format") != LEDGER_FORMAT:
        return (f"format {entry.get('format')!r}, not {LEDGER_FORMAT} (written by another "
                "version of pytest-mlgates)")
    if entry.get("verdict") not in ("GREEN", "RED"):
        return "verdict is not GREEN or RED"
    for name in ("time", "run", "plugin_version", "rootdir"):
        if not isinstance(entry.get(name), str):
            return f"{name} is not a string"
    for name in ("fingerprint", "void", "archive_dir", "fingerprint_hash"):
        if not isinstance(entry.get(name), _TEXT_OR_NONE):
            return f"{name} is not a string or null"
    if entry.get("files") is not None and not _str_map(entry.get("files")):
        return "files is not a map of path to digest"
    for name in ("gate_files", "code_files"):
        if not _str_map(entry.get(name)):
            return f"{name} is not a map of path to digest"
    counts = entry.get("counts")
    if not isinstance(counts, dict) or not all(isinstance(k, str) and _is_int(v)
                                               for k, v in counts.items()):
        return "counts is not a map of names to integers"
    if not isinstance(entry.get("partial"), bool):
        return "partial is not true or false"
    reasons = entry.get("partial_reasons")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        return "partial_reasons is not a list of strings"
    criteria = entry.get("criteria")
    if not isinstance(criteria, list):
        return "criteria is not a list"
    for criterion in criteria:
        if not isinstance(criterion, dict):
            return "a criterion is not an object"
        if not isinstance(criterion.get("id"), str) or not isinstance(criterion.get("name"), str):
            return "a criterion has no id or name"
        if criterion.get("status") not in STATUSES:
            return f"a criterion's status is not one of {', '.join(STATUSES)}"
        for name in ("gate", "value", "threshold"):
            if not isinstance(criterion.get(name), _TEXT_OR_NONE):
                return f"a criterion's {name} is not a string or null"
    if "signature" in entry and not isinstance(entry["signature"], str):
        return "signature is not a string"
    return None


# --------------------------------------------------------------------------- reading


@dataclass
class LedgerLine:
    """One line as read: ``entry`` when it is readable, else ``problem`` says why not."""

    number: int
    entry: dict[str, Any] | None
    problem: str | None = None


def iter_lines(handle: BinaryIO, cap: int = LINE_CAP) -> Iterator[LedgerLine]:
    """Every non-blank line of an open ledger, oldest first, streamed (see module doc)."""
    number = 0
    while True:
        raw = handle.readline(cap + 1)
        if not raw:
            return
        number += 1
        if len(raw) > cap and not raw.endswith(b"\n"):
            skipped = len(raw)
            while True:  # drop the rest of the line without holding it
                piece = handle.readline(_SKIP_PIECE)
                skipped += len(piece)
                if not piece or piece.endswith(b"\n"):
                    break
            yield LedgerLine(number, None, f"over the {cap}-byte line cap ({skipped} bytes)")
            continue
        if not raw.strip():
            continue
        yield _parse(number, raw)


def _parse(number: int, raw: bytes) -> LedgerLine:
    try:
        entry = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        torn = "" if raw.endswith(b"\n") else " (a torn write?)"
        return LedgerLine(number, None, f"not valid JSON{torn}")
    problem = check_entry(entry)
    return LedgerLine(number, None, problem) if problem else LedgerLine(number, entry)


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file: never through a symlink
    (``O_NOFOLLOW``), never waiting on a FIFO (``O_NONBLOCK``, then ``fstat``)."""
    flags = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    if os.path.islink(path):
        raise OSError(f"{os.fspath(path)}: a symlink; the ledger is read only as a regular file")
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            from pytest_mlgates.fingerprint import kind_of

            raise OSError(f"{os.fspath(path)}: a {kind_of(mode)}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@dataclass
class Ledger:
    """The readable sessions of a ledger, and a note for each line that was not."""

    entries: list[dict[str, Any]]
    skipped: list[str]


def read_ledger(path: Path) -> Ledger:
    """Every readable line of the ledger at ``path``; unreadable ones are noted, never
    raised.  Holds every entry: for a verdict, which streams, see ``verdict.py``."""
    entries: list[dict[str, Any]] = []
    skipped: list[str] = []
    with open_regular(path) as handle:
        for line in iter_lines(handle):
            if line.entry is not None:
                entries.append(line.entry)
            else:
                skipped.append(f"{path}: line {line.number} is unreadable: {line.problem}")
    return Ledger(entries, skipped)
