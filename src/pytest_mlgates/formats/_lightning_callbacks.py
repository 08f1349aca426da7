"""The callback states a Lightning checkpoint holds, read without Lightning: which
``ModelCheckpoint`` / ``EarlyStopping`` callbacks it saved, what each monitors and in which
mode.  Lightning keys a callback's state by the callback's repr,
``"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', ...}"``: that key is parsed as a
literal, never evaluated.  ``lightning.py``'s ``LightningRun`` picks, per callback, the
newest state on disk among these.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from pytest_mlgates.bounded import shown_value
from pytest_mlgates.errors import RunDirError
from pytest_mlgates.runbest import default_mode

__all__ = ["MONITORING", "callback_entries", "whole_or_minus_one"]

_MODE = re.compile(r"'mode':\s*'(min|max)'")
_MAX_KEY = 4096
#: The callbacks whose state names a monitored metric.
MONITORING = ("ModelCheckpoint", "EarlyStopping")


def _callback_args(key: str) -> dict[str, Any]:
    """``"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}"`` -> its dict, parsed as a
    literal (never evaluated); {} when the key is not in that shape."""
    brace = key.find("{")
    if brace < 0:
        return {}
    if len(key) > _MAX_KEY:  # a real key is a few hundred characters; don't parse a megabyte
        match = _MODE.search(key[:_MAX_KEY])
        return {"mode": match.group(1)} if match else {}
    try:
        value = ast.literal_eval(key[brace:])
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        match = _MODE.search(key)
        return {"mode": match.group(1)} if match else {}
    return value if isinstance(value, dict) else {}


def callback_entries(shown: str, ckpt: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """[(callback key, kind, mode, state)] of the monitoring callbacks saved in one checkpoint
    (``shown``: its name in messages)."""
    callbacks = ckpt.get("callbacks")
    out: list[tuple[str, str, str, dict[str, Any]]] = []
    if not isinstance(callbacks, dict):
        return out
    for key, state in callbacks.items():
        if not isinstance(key, str):
            continue
        kind = key.split("{", 1)[0]
        if kind not in MONITORING:
            continue
        # a malformed state of the callbacks that name the best checkpoint is a
        # broken file, not a run without them: say so instead of skipping it
        if not isinstance(state, dict):
            raise RunDirError(f"{shown}: callbacks[{kind}] is a {type(state).__name__}, "
                              "expected the callback's state dict")
        args = _callback_args(key)
        monitor = state.get("monitor", args.get("monitor"))
        if monitor is None:  # ModelCheckpoint(monitor=None) keeps only the last
            continue
        if not isinstance(monitor, str):
            raise RunDirError(f"{shown}: callbacks[{kind}] monitor {shown_value(monitor, 40)} "
                              f"({type(monitor).__name__}) is not a metric name")
        mode = args.get("mode")
        out.append((key, kind, mode if mode in ("min", "max") else default_mode(monitor), state))
    return out


def whole_or_minus_one(value: Any) -> int:
    """A checkpoint's ``global_step`` or ``epoch`` as a rank: the int, else -1."""
    return value if isinstance(value, int) and not isinstance(value, bool) else -1
