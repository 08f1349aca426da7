"""pytest-mlgates: the exit criteria of ML training runs, as pytest items.

This module is imported by pytest's entry point machinery in every pytest run of a user's
environment (``pytest_mlgates.plugin`` is the entry module, and Python imports its package
first), so it imports nothing: the public names below resolve on first use::

    >>> from pytest_mlgates import open_run, compile_check
    >>> compile_check("final.val_loss < 1").evaluate(open_run("runs/x").eval_env()).passed
    True
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "ExprError",
    "GateFailure",
    "GateFileError",
    "Gates",
    "MlgatesError",
    "PreflightSubject",
    "RunDirError",
    "SubjectError",
    "__version__",
    "compile_check",
    "open_run",
    "parse_gate_file",
]

_LAZY = {
    "PreflightSubject": "pytest_mlgates.subject",
    "SubjectError": "pytest_mlgates.errors",
    "Gates": "pytest_mlgates.inflight",
    "open_run": "pytest_mlgates.formats",
    "compile_check": "pytest_mlgates.expr",
    "parse_gate_file": "pytest_mlgates.collect",
    "MlgatesError": "pytest_mlgates.errors",
    "ExprError": "pytest_mlgates.errors",
    "GateFileError": "pytest_mlgates.errors",
    "RunDirError": "pytest_mlgates.errors",
    "GateFailure": "pytest_mlgates.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
