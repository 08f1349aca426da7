"""The errors pytest-mlgates raises on purpose.

Every error the plugin means to show a user derives from :class:`MlgatesError`, and
``str(err)`` is the one line the user sees: no traceback, no repr, no newline. Anything
that is *not* an ``MlgatesError`` escaping a gate is a bug in the plugin, so the plugin's
items can tell "your run failed this gate" from "the plugin broke".

The message given to the constructor is the whole line (callers already name the file and
what was wrong, e.g. ``"runs/x/training_log.csv line 7: 3 cells, header has 12"``); the
keyword attributes carry the same facts in a form code can use (a column to point at, a
measured value for the JUnit properties).

This module imports nothing but the standard library: ``plugin.py`` imports it in every
pytest run of a user's environment.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ExprError", "GateFailure", "GateFileError", "MissingExtraError", "MlgatesError", "RunDirError", "SubjectError",
    "Unverified",
    "is_missing_extra", "missing_extra", "require_extra",
]


#: Control characters (a file name from a run dir may hold an escape sequence that would
#: rewrite the user's terminal) are shown escaped; tab, CR and LF are collapsed below.
_CONTROL = {**{i: f"\\x{i:02x}" for i in range(32) if i not in (9, 10, 13)}, 127: "\\x7f"}


def _one_line(message: object) -> str:
    """Collapse a message onto one line: a user sees one line per failure."""
    text = str(message).translate(_CONTROL)
    if "\n" in text or "\r" in text:
        text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return text


class MlgatesError(Exception):
    """Base of every error the plugin raises on purpose; ``str(err)`` is the user's line."""

    def __init__(self, message: object = "") -> None:
        self.message = _one_line(message)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take keyword attributes; pickle (xdist, multiprocessing) must keep them.
        return (_rebuild, (type(self), self.message, self._attrs()))

    def _attrs(self) -> dict[str, Any]:
        return {}


def _rebuild(cls: type[MlgatesError], message: str, attrs: dict[str, Any]) -> MlgatesError:
    return cls(message, **attrs)


class ExprError(MlgatesError):
    """A ``check:`` expression that does not compile or cannot be evaluated.

    ``offset`` is the 0-based character offset into ``source`` of the construct at fault
    (the message already says ``at column <offset + 1>``), so a gate-file loader can point
    at the right column of the YAML line::

        >>> err = ExprError("unknown function 'open' at column 1", offset=0, source="open('f')")
    """

    def __init__(self, message: object = "", offset: int = 0, source: str = "") -> None:
        super().__init__(message)
        self.offset = int(offset)
        self.source = str(source)

    def _attrs(self) -> dict[str, Any]:
        return {"offset": self.offset, "source": self.source}


class GateFileError(MlgatesError):
    """A gate file (``*.gates.yaml``, ``*-PLAN.md``) that cannot be collected.

    The message names file, line and column (``acceptance/x.gates.yaml:12:14: ...``);
    ``file``, ``line`` and ``column`` (1-based) repeat them for code that wants them.
    """

    def __init__(
        self,
        message: object = "",
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.column = column

    def _attrs(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column}


class RunDirError(MlgatesError):
    """A run dir, or a file in it, that is missing, malformed or unsafe to read.

    The message names the file (``runs/x/metric_history.json: invalid JSON at line 3``);
    ``file`` repeats it for code that wants it.
    """

    def __init__(self, message: object = "", file: str | None = None) -> None:
        super().__init__(message)
        self.file = file

    def _attrs(self) -> dict[str, Any]:
        return {"file": self.file}


class GateFailure(MlgatesError):
    """A gate that ran and found the run wanting: the item is RED.

    The message is the spec's failure line
    (``val_recall_malignant = 0.000 at epoch 37 (final); needs > 0``); ``measured`` and
    ``threshold`` are what the summary table and the JUnit properties show.
    """

    def __init__(
        self,
        message: object = "",
        measured: float | str | None = None,
        threshold: str | None = None,
    ) -> None:
        super().__init__(message)
        self.measured = measured
        self.threshold = threshold

    def _attrs(self) -> dict[str, Any]:
        return {"measured": self.measured, "threshold": self.threshold}


class Unverified(MlgatesError):
    """A gate that cannot judge this run from what it holds: the item is UNVERIFIED, not RED
    (``--mlgates-strict`` fails it).  The message says what is missing, e.g. ``class_recall``
    with ``confidence:`` on a log without the counts behind a recall
    (``val_recall_a = 0.900 at epoch 12 (final): no column val_support_a in ...``).
    """


class MissingExtraError(MlgatesError):
    """A gate needs an optional library that is not installed: one line naming the extra."""


#: The extra of pytest-mlgates that installs each optional library.
EXTRAS = {"torch": "torch", "safetensors": "torch", "sklearn": "sklearn", "PIL": "images",
          "tensorboard": "tensorboard", "h5py": "keras"}


def require_extra(module: str, what: str) -> Any:
    """``import module``, or a :class:`MissingExtraError` saying which extra installs it::

        >>> torch = require_extra("torch", "gate checkpoint_softmax")
        MissingExtraError: gate checkpoint_softmax needs torch: pip install 'pytest-mlgates[torch]'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(exc, what, module) from None


def missing_extra(exc: ImportError, what: str, module: str | None = None) -> MissingExtraError:
    """The one line for ``what`` failing to import an optional library (``exc``)."""
    top = (module or exc.name or "").split(".", 1)[0]
    extra = EXTRAS.get(top, "all")
    return MissingExtraError(
        f"{what} needs {top}, which is not installed ({exc.__class__.__name__}: {exc}); "
        f"pip install 'pytest-mlgates[{extra}]'"
    )


def is_missing_extra(exc: BaseException) -> bool:
    """An ImportError of one of the optional libraries (``EXTRAS``): a gate that imported it
    directly, on a machine without that extra."""
    return isinstance(exc, ImportError) and (exc.name or "").split(".", 1)[0] in EXTRAS


class SubjectError(MlgatesError, TypeError):
    """A :class:`~pytest_mlgates.PreflightSubject` field that is missing or of the wrong
    kind, or that an adapter cannot find (one line naming the keyword to pass)."""
