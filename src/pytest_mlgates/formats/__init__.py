"""Run formats: which trainer wrote a directory, its reader, and its ``mlgates prove`` mutations.

Each format is one module of this package, registered by one line in :data:`REGISTRY`.
A format module holds:

``IDENTIFIED_BY``
    the files that define the format, in words, for messages and ``docs/formats.md``;
``detect(path) -> list[str]``
    the defining files found in the directory (names only, nothing parsed), ``[]`` when
    none: a stray file of another trainer (a ``splits.json``) is never one of them;
``read(path, section) -> Run``
    the reader: the format's :class:`~pytest_mlgates.rundir.Run` subclass itself
    (``read = TimmRun``), or a function where the section needs a default or a check;
``Mutations``
    what ``mlgates prove`` changes in a copy of such a run to turn each gate RED
    (a subclass of :class:`pytest_mlgates.formats._mutations.Mutations`);
``CONTAINS`` (optional)
    formats whose files a run of this one may hold as one of its own loggers (Lightning's
    TensorBoardLogger writes event files into the version dir), so they are no rival;
``locate(path) -> Path | None`` (optional)
    the run inside a folder users name instead (a Lightning ``save_dir`` holding one
    ``version_N``).

:func:`open_run` is how a run dir is opened everywhere (the items, the ``run`` fixture,
``mlgates prove``): the format is forced (``--run-format``, the gate file's ``run:``) or
detected, and that format's reader reads it::

    >>> run = open_run("runs/x")
    >>> run.format, run.final.val_loss, run.best_epoch
    ('engine', 0.31, 9)

Detection never guesses: a directory that fits two formats, or none, is one line naming
the candidates and how to choose::

    runs/x: looks like both lightning (metrics.csv) and engine (training_log.csv); pass
    --run-format NAME or set run: {format: NAME} in the gate file

Nothing heavy is imported here: ``plugin.py`` reads :data:`FORMATS` for ``--run-format``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pytest_mlgates.errors import RunDirError

if TYPE_CHECKING:
    from pytest_mlgates.rundir import Run, RunSection

__all__ = ["FORMATS", "REGISTRY", "candidates", "choose", "detect", "format_module", "open_run", "read"]

#: Every run format and the module that reads it.  Adding a format: one module, one line.
REGISTRY: dict[str, str] = {
    "engine": "pytest_mlgates.formats.engine",
    "lightning": "pytest_mlgates.formats.lightning",
    "huggingface": "pytest_mlgates.formats.huggingface",
    "mlflow": "pytest_mlgates.formats.mlflow",
    "tensorboard": "pytest_mlgates.formats.tensorboard",
    "ultralytics": "pytest_mlgates.formats.ultralytics",
    "timm": "pytest_mlgates.formats.timm",
    "keras": "pytest_mlgates.formats.keras",
    "dvclive": "pytest_mlgates.formats.dvclive",
    "wandb": "pytest_mlgates.formats.wandb",
    "plain": "pytest_mlgates.formats.plain",
}

#: The format names, in the order messages list them (``--run-format`` choices).
FORMATS: tuple[str, ...] = tuple(REGISTRY)

HOW_TO_CHOOSE = "pass --run-format NAME or set run: {format: NAME} in the gate file"


def format_module(name: str) -> ModuleType:
    """The module of format ``name``; a RunDirError naming the valid ones otherwise."""
    if name not in REGISTRY:
        raise RunDirError(f"--run-format {name!r}: expected one of {', '.join(FORMATS)}")
    return importlib.import_module(REGISTRY[name])


def _evidence(module: ModuleType, path: Path) -> list[str]:
    try:
        return list(module.detect(path))
    except RunDirError:
        return []
    except OSError:  # a folder that cannot be listed fits no format; the reader says why
        return []


def candidates(path: Path) -> list[tuple[str, list[str]]]:
    """``[(format, defining files found)]`` of every format the directory fits, after
    dropping those another candidate holds as one of its loggers (``CONTAINS``)."""
    found = [(name, ev) for name in FORMATS if (ev := _evidence(format_module(name), path))]
    names = {name for name, _ in found}
    contained = {inner for name in names for inner in getattr(format_module(name), "CONTAINS", ())}
    return [(name, ev) for name, ev in found if name not in contained]


def detect(path: Path) -> str | None:
    """The one format the directory fits, or None (none fits, or several do)."""
    found = candidates(Path(path))
    return found[0][0] if len(found) == 1 else None


def _listing(found: list[tuple[str, list[str]]]) -> str:
    parts = [f"{name} ({', '.join(ev[:3])}{', ...' if len(ev) > 3 else ''})" for name, ev in found]
    if len(parts) == 2:
        return f"both {parts[0]} and {parts[1]}"
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"


def _none_fits(path: Path) -> RunDirError:
    known = "; ".join(f"{name}: {format_module(name).IDENTIFIED_BY}" for name in FORMATS)
    return RunDirError(f"{path}: not a run dir of any known format ({known}); {HOW_TO_CHOOSE}")


def choose(path: Path, forced: str | None = None) -> tuple[Path, str]:
    """(the run dir, its format): ``forced`` when given (``--run-format`` or the gate file's
    ``run: format:``), else the one format the directory fits.  A folder that holds the run
    one level down (``locate``) is followed."""
    if forced:
        module = format_module(forced)
        locate = getattr(module, "locate", None)
        if locate is not None and not _evidence(module, path):
            inner = locate(path)
            if inner is not None:
                return inner, forced
        return path, forced
    found = candidates(path)
    if len(found) == 1:
        return path, found[0][0]
    if found:
        raise RunDirError(f"{path}: looks like {_listing(found)}; {HOW_TO_CHOOSE}")
    for name in FORMATS:
        locate = getattr(format_module(name), "locate", None)
        inner = locate(path) if locate is not None else None
        if inner is not None:
            inside = candidates(inner)
            if len(inside) == 1:
                return inner, inside[0][0]
            if inside:
                raise RunDirError(f"{inner}: looks like {_listing(inside)}; {HOW_TO_CHOOSE}")
    raise _none_fits(path)


def read(name: str, path: Path, section: RunSection | None = None) -> Run:
    """The reader of format ``name`` on ``path``."""
    run: Any = format_module(name).read(path, section)
    return run  # type: ignore[no-any-return]


def open_run(
    path: str | Path, run_format: str | None = None, run_section: RunSection | None = None
) -> Run:
    """The run dir at ``path``; a RunDirError naming it when it is not one.

    ``run_section`` is a gate file's parsed ``run:`` section (its format, and for a plain
    run where the log, checkpoints and splits are), or None.  ``run_format`` (the
    ``--run-format`` option) forces a reader and wins over the section's ``format:``;
    otherwise the format is detected from the names in the directory, and a directory that
    fits two formats, or none, is one RunDirError line naming the candidates.
    """
    p = Path(path)
    if not p.exists():
        raise RunDirError(f"{p}: run dir not found")
    if not p.is_dir():
        raise RunDirError(f"{p}: not a directory (a run dir is a directory)")
    try:
        os.listdir(p)
    except OSError as exc:
        raise RunDirError(f"{p}: cannot list run dir ({exc.strerror or exc})") from None
    forced = run_format if run_format not in (None, "", "auto") else None
    if forced is None and run_section is not None:
        forced = run_section.forced_format()
    where, name = choose(p, forced)
    return read(name, where, run_section)
