"""A run dir's fingerprint: which bytes a verdict was given for.

``mlgates verdict`` may only say ACCEPTED for the files that were actually checked.  The
archive stores, with every session, one sha256 over the whole run plus one per file, so a
later verdict can tell "nothing changed" from "checkpoints/final.pt changed since" and
name the file.

``acceptance/`` (the archive itself) is never part of the fingerprint: archiving a
session must not make the run look changed.  Symlinks are not followed (a link out of the
run dir must not pull foreign files in); a link is hashed by the path it points to, so
re-pointing it still changes the fingerprint.

Example::

    digest, files = fingerprint("runs/default")
    files["checkpoints/final.pt"]   # '9f86d081884c7d65...'
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

ARCHIVE_DIRNAME = "acceptance"
_CHUNK = 1 << 20  # 1 MiB: streams checkpoints of any size with flat memory


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of one file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
    return digest.hexdigest()


def run_files(run_dir: str | os.PathLike[str]) -> list[str]:
    """Every file of the run (POSIX relative paths, sorted), ``acceptance/`` excluded."""
    root = os.fspath(run_dir)
    found: list[str] = []
    for current, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(current, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != ARCHIVE_DIRNAME]
            rel_dir = ""
        # A symlinked directory shows up in dirnames and is not descended into; record it
        # as a file-like entry so that it is still part of the fingerprint.
        for name in dirnames + filenames:
            full = os.path.join(current, name)
            if name in dirnames and not os.path.islink(full):
                continue
            found.append(Path(rel_dir, name).as_posix() if rel_dir else name)
        dirnames.sort()
    return sorted(found)


def entry_sha256(run_dir: str | os.PathLike[str], rel: str) -> str:
    """Hash of one entry: content for a regular file, the target for a symlink."""
    full = os.path.join(os.fspath(run_dir), rel)
    if os.path.islink(full):
        return "symlink:" + hashlib.sha256(os.readlink(full).encode()).hexdigest()
    return file_sha256(full)


def fingerprint(run_dir: str | os.PathLike[str]) -> tuple[str, dict[str, str]]:
    """``(sha256 over the whole run, {relative path: sha256})``.

    The total digest covers names as well as contents, so a renamed file changes it.
    """
    files = {rel: entry_sha256(run_dir, rel) for rel in run_files(run_dir)}
    files.update(_outside_entries(run_dir))
    total = hashlib.sha256()
    for rel in sorted(files):
        total.update(rel.encode("utf-8", "surrogateescape"))
        total.update(b"\0")
        total.update(files[rel].encode())
        total.update(b"\n")
    return total.hexdigest(), files


def _outside_entries(run_dir: str | os.PathLike[str]) -> dict[str, str]:
    """What a run keeps outside its dir: an MLflow run named by its artifact folder has its
    metrics, params, tags and status in the store's ``mlflow.db`` above it. That run's rows
    (not the whole database, which other runs write to) are one entry, ``mlflow.db#<run id>``."""
    from pytest_mlgates.formats import mlflow

    owner = mlflow._sqlite_owner(Path(run_dir))
    if owner is None:
        return {}
    root, run_id = owner
    try:
        run = mlflow._read_sqlite_run(root / "mlflow.db", root, run_id)
        content = json.dumps({"metrics": run.metrics, "params": run.params, "tags": run.tags,
                              "status": run.status}, sort_keys=True, default=str)
    except Exception as exc:  # noqa: BLE001 - a broken db is a state too: hash its one line
        content = f"unreadable: {exc}"
    return {f"mlflow.db#{run_id}": hashlib.sha256(content.encode()).hexdigest()}


def diff_files(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    """Files ``added``, ``removed`` and ``changed`` going from ``old`` to ``new``."""
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(rel for rel in set(old) & set(new) if old[rel] != new[rel]),
    }
