"""The text files of a run dir: logs, results, provenance, and the train.log tee.

Formats are fixed by ``docs/internals.md``; this module is the one place that writes them.
Every file except ``train.log`` (an append-only stream) is rewritten atomically, so a
reader -- or a kill -- never sees half a file. The CSV and JSON logs are always rewritten
whole from the in-memory history, which is also what makes a resumed run's logs exact:
the history comes from ``last.pt`` and nothing is appended twice.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.checkpoint import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from model.config import Config
    from model.distributed import DistInfo

LOGGER_NAME = "model"

# Files the engine owns in a run dir; `--fresh` removes exactly these (never acceptance/).
ENGINE_FILES = (
    "config.yaml",
    "provenance.json",
    "splits.json",
    "training_log.csv",
    "metric_history.json",
    "train.log",
    "training_results.json",
)
ENGINE_DIRS = ("checkpoints", "plots")


class RunDirError(Exception):
    """The run dir cannot be used (unwritable, a file, ...), in one line naming it."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- columns


def log_columns(class_names: Iterable[str]) -> list[str]:
    """The header of training_log.csv, in order, for a dataset's class names."""
    return [
        "epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy",
        "val_macro_f1", "val_auroc", "val_min_recall",
        *[f"val_recall_{name}" for name in class_names],
        *[f"val_support_{name}" for name in class_names],
        "lr", "epoch_seconds",
    ]


def _csv_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "nan"
    return repr(float(value))  # repr round-trips exactly; nan/inf/-inf as Python spells them


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def json_safe(obj: Any) -> Any:
    """Replace NaN/Inf (recursively) by the strings JSON readers of the contract expect."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return _json_number(obj)


def json_text(obj: Any) -> str:
    return json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


# Rendered rows by (columns, values): the engine rewrites both logs from the whole history
# every epoch, so without it an epoch's log cost grows with the epoch number.
_rendered_rows: dict[tuple[Any, ...], tuple[str, str]] = {}
_RENDER_CACHE_MAX = 100_000


def _render_row(columns: list[str], row: dict[str, Any]) -> tuple[str, str]:
    """(CSV line, the row's lines in metric_history.json) -- as json_text would indent them."""
    values = tuple(row.get(c) for c in columns)
    key = (tuple(columns), values)
    try:
        return _rendered_rows[key]
    except (KeyError, TypeError):  # TypeError: an unhashable value, rendered every time
        pass
    csv_line = ",".join(_csv_value(v) for v in values)
    block = json.dumps(json_safe(dict(zip(columns, values))), indent=2, allow_nan=False)
    rendered = (csv_line, "\n".join("    " + line for line in block.split("\n")))
    if len(_rendered_rows) >= _RENDER_CACHE_MAX:
        _rendered_rows.clear()
    try:
        _rendered_rows[key] = rendered
    except TypeError:
        pass
    return rendered


def render_history(run_dir: Path, columns: list[str],
                   rows: list[dict[str, Any]]) -> list[tuple[Path, bytes]]:
    """training_log.csv and metric_history.json for the full history, as (path, bytes).

    The JSON text is exactly ``json_text({"columns": columns, "rows": [...]})``, assembled
    from per-row pieces that are rendered once (a row's values never change).
    """
    rendered = [_render_row(columns, row) for row in rows]
    lines = [",".join(columns), *(csv_line for csv_line, _ in rendered)]
    header = json.dumps(json_safe(columns), indent=2, allow_nan=False).replace("\n", "\n  ")
    body = ("[\n" + ",\n".join(block for _, block in rendered) + "\n  ]") if rendered else "[]"
    history = '{\n  "columns": ' + header + ',\n  "rows": ' + body + "\n}\n"
    return [(run_dir / "training_log.csv", ("\n".join(lines) + "\n").encode("utf-8")),
            (run_dir / "metric_history.json", history.encode("utf-8"))]


def write_history(run_dir: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Rewrite training_log.csv and metric_history.json from the full history."""
    for path, data in render_history(run_dir, columns, rows):
        atomic_write_bytes(path, data)


# --------------------------------------------------------------------------- run dir


def prepare_run_dir(run_dir: Path, *, fresh: bool) -> None:
    """Create the run dir (and checkpoints/, plots/), proving it is writable.

    With `fresh`, remove the engine's own files from an earlier run first -- only those,
    so nothing a user put beside them (or the plugin's acceptance/ archive) is deleted.
    """
    import shutil

    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise RunDirError(f"{run_dir}: run dir exists and is not a directory")
        run_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            for name in ENGINE_FILES:
                (run_dir / name).unlink(missing_ok=True)
            for name in ENGINE_DIRS:
                shutil.rmtree(run_dir / name, ignore_errors=True)
        for name in ENGINE_DIRS:
            (run_dir / name).mkdir(exist_ok=True)
        probe = run_dir / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except RunDirError:
        raise
    except OSError as exc:
        raise RunDirError(f"{run_dir}: run dir is not writable ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------- train.log


class MessageOnlyFormatter(logging.Formatter):
    """stderr shows each message without its traceback: a crash reads as one line on the
    terminal (the CLI's ``error: ...``), the traceback goes to train.log only."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def setup_logging(run_dir: Path | None, *, verbose: bool = True) -> logging.Logger:
    """The engine's logger: stderr plus ``run_dir/train.log`` (appended), warnings included.

    `run_dir=None` (ranks other than 0) logs warnings and errors to stderr only.
    """
    logger = logging.getLogger(LOGGER_NAME)
    close_logging()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(MessageOnlyFormatter())
    stream.setLevel(logging.INFO if verbose else logging.WARNING)
    handlers: list[logging.Handler] = [stream]
    if run_dir is not None:
        file_handler = logging.FileHandler(run_dir / "train.log", mode="a", encoding="utf-8")
        file_handler.setFormatter(fmt)
        handlers.append(file_handler)
    logging.captureWarnings(True)
    warn_logger = logging.getLogger("py.warnings")
    warn_logger.propagate = False
    for handler in handlers:
        handler._model_engine = True  # type: ignore[attr-defined]  # so close_logging finds ours
        logger.addHandler(handler)
        warn_logger.addHandler(handler)
    return logger


def close_logging() -> None:
    """Detach and close the handlers :func:`setup_logging` added (safe to call twice)."""
    logging.captureWarnings(False)
    for name in (LOGGER_NAME, "py.warnings"):
        lg = logging.getLogger(name)
        for handler in list(lg.handlers):
            if getattr(handler, "_model_engine", False):
                lg.removeHandler(handler)
                handler.close()


# --------------------------------------------------------------------------- provenance


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(cwd: Path | None = None) -> dict[str, Any] | None:
    """``{commit, dirty}`` of the repo the command runs in, or None outside a repo."""
    cwd = cwd or Path.cwd()
    commit = _git(["rev-parse", "HEAD"], cwd)
    if not commit:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return {"commit": commit, "dirty": bool(status)}


def versions() -> dict[str, str | None]:
    import numpy
    import torch

    try:
        from importlib.metadata import version

        package: str | None = version("pytest-mlgates")
    except Exception:  # noqa: BLE001 -- not installed as a distribution: no version
        package = None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "pytest_mlgates": package}


def entry_point(world_size: int) -> str:
    if os.environ.get("TORCHELASTIC_RUN_ID") or world_size > 1:
        return f"torchrun --nproc-per-node {world_size} -m model train"
    return "python -m model train"


def progress(loader: Any, config: Config, dist: DistInfo, desc: str) -> Iterable[Any]:
    """tqdm on stderr, only for a person watching (a TTY), rank 0, and progress_bar: true."""
    if not (config.train.progress_bar and dist.is_main and sys.stderr.isatty()):
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


def format_epoch_line(row: dict[str, Any], epochs: int, newly_best: list[str]) -> str:
    best = f"  new best: {', '.join(newly_best)}" if newly_best else ""
    return (f"epoch {row['epoch']}/{epochs}  train_loss={row['train_loss']:.4f}  "
            f"val_loss={row['val_loss']:.4f}  val_accuracy={row['val_accuracy']:.4f}  "
            f"val_macro_f1={row['val_macro_f1']:.4f}  val_min_recall={row['val_min_recall']:.4f}  "
            f"lr={row['lr']:.3g}  ({row['epoch_seconds']:.2f}s){best}")
