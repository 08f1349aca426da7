"""What a session vouches for: the gate files it ran, whole or not, and the code they name.

A GREEN session proves the criteria it ran, nothing more.  At the end of a session the
archive reads each gate file its items came from once more and records:

* the file's sha256 (editing it later makes the verdict STALE) over the same bytes it
  parses, so the digest and the criteria list describe one file;
* which of the file's criteria did not run for a run dir (a node id such as
  ``acceptance/default.gates.yaml::macro_f1_useful`` collects one item and deselects
  nothing, so pytest's own bookkeeping cannot tell): such a session is *partial*;
* the sha256 of every file a ``key_links`` entry's ``to:`` points to (the code that made
  the run): changing that code later makes the verdict STALE.

``mlgates verdict`` compares the same digests with :func:`code_digest` and
:func:`gate_file_digest`.  Every read here is of a regular file only (a FIFO is a digest
word, never a wait) and capped in size.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mlgates.fingerprint import file_sha256, kind_of
from pytest_mlgates.gatefile import read_capped


@dataclass
class GateFileScope:
    """A gate file as it is at the end of the session."""

    rel: str
    sha256: str | None = None
    criteria: list[str] = field(default_factory=list)
    key_link_targets: list[str] = field(default_factory=list)
    problem: str | None = None


def read_gate_file(root: Path, rel: str, *, plan: bool) -> GateFileScope:
    """Parse ``root/rel`` again: its digest, acceptance criteria and key-link targets."""
    from pytest_mlgates.collect import parse_gate_text
    from pytest_mlgates.errors import MlgatesError

    scope = GateFileScope(rel)
    path = root / rel
    try:
        data = read_capped(path)
        scope.sha256 = hashlib.sha256(data).hexdigest()
        document = parse_gate_text(data.decode("utf-8"), path, plan=plan, display=rel)
    except (OSError, UnicodeDecodeError) as err:
        scope.problem = f"cannot be read again: {getattr(err, 'strerror', None) or err}"
        return scope
    except MlgatesError as err:
        scope.problem = f"no longer parses: {err}"
        return scope
    if document is None:
        scope.problem = "no longer has must_haves"
        return scope
    for criterion in document.acceptance_criteria():
        scope.criteria.append(criterion.name)
        if criterion.kind == "gate" and criterion.gate == "key_link":
            target = criterion.params.get("to")
            if isinstance(target, str) and target not in scope.key_link_targets:
                scope.key_link_targets.append(target)
    return scope


def code_digest(root: Path, rel: str) -> str:
    """sha256 of the code file ``root/rel`` a key link points to, or a word for what is
    there instead: ``missing``, ``dir``, ``outside`` (leaves ``root``), ``FIFO``, ...

    A key link's ``to:`` is the code under test, which is trusted (symlinks in it are
    followed), but the ledger that names it at verdict time is not, so nothing here waits
    on a FIFO or reads outside ``root``."""
    try:
        base = Path(os.path.realpath(root))
        target = Path(os.path.realpath(base / rel))
        if target != base and base not in target.parents:
            return "outside"
        st = os.stat(target)
    except (OSError, ValueError):
        return "missing"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if not stat.S_ISREG(st.st_mode):
        return kind_of(st.st_mode)
    try:
        return file_sha256(target)
    except OSError:
        return "unreadable"


def gate_file_digest(path: Path) -> str | None:
    """sha256 of a gate file now, or None when it cannot be read (not there, not regular)."""
    try:
        return hashlib.sha256(read_capped(path)).hexdigest()
    except OSError:
        return None
