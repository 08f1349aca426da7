"""Opening a run dir's files: inside the run, regular files only, never a wait.

A run dir comes from a stranger, so every reader of every format opens its files here::

    >>> text = read_text_file(run.path / "training_log.csv", root=run.path)
    >>> with open_run_file(run.path, "checkpoint-80/trainer_state.json") as fh: ...
    >>> path = run_file(run.path, "model.safetensors")   # for libraries that open by name

What holds for each file, before a byte is read:

* **inside the run dir** (:func:`resolve_inside`): no absolute path, no ``..``, and no
  symlink -- of the file or of a folder above it -- that leads out of the run dir (a link
  to ``/etc/passwd`` or to another user's run is refused by name, never followed);
* **a regular file**: a FIFO, socket or device is refused in one line, never opened (a
  FIFO named ``training_log.csv`` would otherwise wait for a writer forever); the file is
  then opened ``O_NOFOLLOW | O_NONBLOCK`` and checked again with ``fstat`` (same inode,
  still a regular file), so a swap between the check and the open is refused too;
* **size-capped** where it is read whole: text (logs, JSON, YAML) over
  :data:`MAX_TEXT_BYTES` is refused before reading.

Libraries that open files by name (``torch.load`` with ``mmap``, safetensors, sqlite3) get
:func:`run_file`'s checked real path.  What a writer racing the session could still swap
after that check is what the archive's before/after fingerprint catches: a run changed
during its session voids the session (``fingerprint.py``).

Every refusal is a :class:`~pytest_mlgates.errors.RunDirError` naming the file.
:class:`RunFiles`, the base of every reader's ``Run``, opens a run's files by their path
relative to it with these functions, and reads each at most once.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from pytest_mlgates.errors import RunDirError

__all__ = [
    "MAX_TEXT_BYTES", "RunFiles", "open_run_file", "read_json_file", "read_text_file", "read_yaml_file", "resolve_inside",
    "run_file",
]

#: Text files (logs, JSON, YAML) larger than this are refused rather than read: a 2 GB
#: "log" is a broken or hostile run dir, and reading it would stall the session.
MAX_TEXT_BYTES = 64 * 1024 * 1024

_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def resolve_inside(root: Path, rel: str, what: str) -> Path:
    """``root/rel`` after resolving symlinks, refusing anything that leaves ``root``."""
    if not isinstance(rel, str) or not rel.strip():
        raise RunDirError(f"{root}: empty path")
    if "\x00" in rel:
        raise RunDirError(f"{root}: path {rel[:80]!r} contains a NUL byte")
    candidate = Path(rel)
    if candidate.is_absolute() or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise RunDirError(f"{rel}: absolute path refused; paths are relative to the {what} {root}")
    if ".." in candidate.parts or ".." in rel.replace("\\", "/").split("/"):
        raise RunDirError(f"{rel}: '..' refused; paths must stay inside the {what} {root}")
    root_real = Path(os.path.realpath(root))
    target = Path(os.path.realpath(root / candidate))
    if target != root_real and root_real not in target.parents:
        raise RunDirError(f"{root / rel}: symlink leads outside the {what} (to {target}); refused")
    return target


def _relative(root: Path, path: str | Path) -> str:
    """``path`` (relative to ``root``, or a path under ``root`` as listed) relative to ``root``."""
    if isinstance(path, str) and not os.path.isabs(path):
        return path
    p = Path(path)
    try:
        return p.relative_to(root).as_posix()  # lexically under root: the usual case
    except ValueError:
        pass
    if not p.is_absolute():
        return p.as_posix()  # a relative path: relative to root (resolve_inside judges it)
    # an absolute path under the run dir as given, or as resolved (a reader's real path)
    for base in (os.path.abspath(root), os.path.realpath(root)):
        rel = os.path.relpath(p, base)
        if not (rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel)):
            return Path(rel).as_posix()
    raise RunDirError(f"{p}: not inside the run dir {root}; refused")


def run_file(root: Path, path: str | Path, shown: str | None = None, *, what: str = "run dir") -> Path:
    """The real path of the regular file ``path`` inside ``root``; a one-line RunDirError
    when it leaves ``root``, is missing, is a directory, or is a FIFO, socket or device
    (which are never opened).  For libraries that open a file by name."""
    root = Path(root)
    rel = _relative(root, path)
    shown = shown or str(root / rel)
    real = resolve_inside(root, rel, what)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise RunDirError(f"{shown}: not found") from None
    except OSError as exc:
        raise RunDirError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise RunDirError(f"{shown}: is a directory, expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise RunDirError(f"{shown}: {_kind(st.st_mode)}, not a regular file; refused (never opened)")
    return real


def open_run_file(root: Path, path: str | Path, shown: str | None = None, *, what: str = "run dir",
                  limit: int | None = None) -> BinaryIO:
    """``path`` inside ``root`` opened for binary reading (:func:`run_file`'s checks, then
    ``O_NOFOLLOW | O_NONBLOCK`` and ``fstat``); use it in a ``with`` block.  ``limit``: a
    file of more bytes is refused before a byte is read (a streamed log: a sparse 2 GB
    ``training_log.csv`` is one line at once, not 64 MB of NULs parsed first)."""
    root = Path(root)
    rel = _relative(root, path)
    shown = shown or str(root / rel)
    real = run_file(root, rel, shown, what=what)
    try:
        before = os.stat(real)
        fd = os.open(real, _OPEN_FLAGS)
    except FileNotFoundError:
        raise RunDirError(f"{shown}: not found") from None
    except OSError as exc:
        raise RunDirError(f"{shown}: cannot read ({exc.strerror or exc}); refused") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise RunDirError(f"{shown}: replaced while it was opened; refused")
        if limit is not None and st.st_size > limit:
            raise RunDirError(f"{shown}: {st.st_size} bytes, larger than the {limit} bytes allowed for a text file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes_file(root: Path, path: str | Path, shown: str | None = None, *,
                    limit: int = MAX_TEXT_BYTES, what: str = "run dir") -> bytes:
    """The bytes of a regular file inside ``root``, refusing one over ``limit`` bytes."""
    root = Path(root)
    shown = shown or str(root / _relative(root, path))
    with open_run_file(root, path, shown, what=what) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise RunDirError(f"{shown}: {size} bytes, larger than the {limit} bytes allowed for a text file")
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise RunDirError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise RunDirError(f"{shown}: larger than the {limit} bytes allowed for a text file")
    return data


def read_text_file(path: Path, shown: str | None = None, *, root: Path | None = None) -> str:
    """UTF-8 text of a run-dir file, or a one-line RunDirError naming it.

    ``root`` is the run dir the file must stay inside; without it, the file's own folder
    (a symlinked file leading anywhere else is refused)."""
    path = Path(path)
    shown = shown or str(path)
    base = Path(root) if root is not None else path.parent
    data = read_bytes_file(base, path, shown)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunDirError(f"{shown}: not UTF-8 text (byte {exc.start})") from None


def parse_json(text: str, shown: str) -> Any:
    """JSON text as data; invalid JSON, absurd numbers and deep nesting are one line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{shown}: invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})") from None
    except RecursionError:
        raise RunDirError(f"{shown}: invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # int('1' * 5000): Python's int-from-str limit
        from pytest_mlgates.bounded import number_problem

        raise RunDirError(f"{shown}: {number_problem(exc)}") from None


def read_json_file(path: Path, shown: str | None = None, *, root: Path | None = None) -> Any:
    shown = shown or str(path)
    return parse_json(read_text_file(path, shown, root=root), shown)


def read_yaml_file(path: Path, shown: str | None = None, *, root: Path | None = None) -> Any:
    """A YAML file through the safe loader, with its size bounded (``bounded.load_yaml``):
    an alias bomb, a 5000-digit integer or deep nesting is one line."""
    from pytest_mlgates.bounded import YamlRefused, load_yaml

    shown = shown or str(path)
    text = read_text_file(path, shown, root=root)
    import yaml  # lazy: the plugin's import must stay light

    try:
        return load_yaml(text)
    except YamlRefused as exc:
        where = f" line {exc.line}, column {exc.column}" if exc.line else ""
        raise RunDirError(f"{shown}:{where} {exc.problem}; refused") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise RunDirError(f"{shown}:{where} invalid YAML ({problem})") from None
    except RecursionError:
        raise RunDirError(f"{shown}: invalid YAML (nested too deeply)") from None


_MISSING = object()


class RunFiles:
    """A run dir's files by their path relative to it, each opened as this module opens
    files, named in messages as the run names them, and read at most once: the base of
    ``rundir.Run``, which sets :attr:`path` and an empty :attr:`_cache`."""

    path: Path
    _cache: dict[str, Any]

    # -- paths ---------------------------------------------------------------------

    def resolve(self, rel: str) -> Path:
        """``rel`` inside the run dir, or a RunDirError: no absolute paths, no ``..``,
        no symlink that leads outside."""
        return resolve_inside(self.path, rel, "run dir")

    def shown(self, path: Path) -> str:
        """How a file of this run is named in messages: ``runs/x/training_log.csv``."""
        return str(path)

    def locate(self, rel: str) -> tuple[Path | None, list[str]]:
        """A gate file's path (``artifact``, ``key_link``'s ``from``): (the file it names, or
        None when absent; every place looked at, as shown in messages, the one found first).
        A format whose files live in more than one root (an MLflow run folder and its
        ``artifacts/``) looks in each, so a message names the path actually looked at."""
        path = self.resolve(rel)
        return (path if path.exists() else None), [self.shown(self.path / rel)]

    # -- lazily read files -----------------------------------------------------------

    def _cached(self, key: str, make: Any) -> Any:
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            try:
                value = make()
            except RunDirError as exc:
                self._cache[key] = exc
                raise
            self._cache[key] = value
        if isinstance(value, RunDirError):
            raise value
        return value

    def file(self, rel: str) -> Path:
        """The real path of the regular file ``rel`` inside the run dir, checked as
        :func:`~pytest_mlgates.runfiles.run_file` does (for libraries that open by name)."""
        return run_file(self.path, rel, self.shown(self.path / rel))

    def read_text(self, rel: str) -> str:
        """The text of ``rel`` inside the run dir (regular file, size-capped)."""
        return read_text_file(self.path / rel, self.shown(self.path / rel), root=self.path)

    def read_json(self, rel: str) -> Any:
        return read_json_file(self.path / rel, self.shown(self.path / rel), root=self.path)

    def read_yaml(self, rel: str) -> Any:
        return read_yaml_file(self.path / rel, self.shown(self.path / rel), root=self.path)

    def _optional_json(self, name: str) -> Any:
        path = self.path / name
        if not path.exists() and not path.is_symlink():
            return None
        return self.read_json(name)  # a symlink out of the run dir is refused, not followed

    def _optional_object(self, name: str) -> dict[str, Any] | None:
        data = self._optional_json(name)
        if data is not None and not isinstance(data, dict):
            raise RunDirError(f"{self.shown(self.path / name)}: expected a JSON object, got {type(data).__name__}")
        return data

    def _optional_yaml_mapping(self, name: str) -> dict[str, Any] | None:
        """A YAML mapping of the run dir (``{}`` when empty), None when the file is absent."""
        path = self.path / name
        if not path.exists() and not path.is_symlink():
            return None
        data = self.read_yaml(name)  # a symlink out of the run dir is refused, not followed
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise RunDirError(f"{self.shown(path)}: expected a mapping, got {type(data).__name__}")
        return data
