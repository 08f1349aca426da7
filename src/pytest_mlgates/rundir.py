"""The parsed run dir: what every gate and the ``run`` fixture read.

A run dir comes from a stranger as often as from a colleague, so every reader here is
defensive: a missing file, a ragged CSV row, a non-numeric cell, truncated JSON or a
checkpoint that wants to unpickle a class each give one :class:`RunDirError` line naming
the file and what was wrong -- never another exception and never executed code.

Readers are lazy and cached: ``open_run`` only checks that the directory exists, and a
gate that needs only the log never opens a checkpoint::

    >>> run = open_run("runs/x")
    >>> run.final.val_loss, run.best_epoch
    (0.31, 9)

Checkpoints load with ``torch.load(..., weights_only=True)`` once per process and path
(memory-mapped where the file format allows), however many gates ask for them.

Besides the engine's own layout, a PyTorch Lightning ``metrics.csv`` and a Hugging Face
``trainer_state.json`` are read as the log, so a gate file does not change with the trainer.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlgates.errors import RunDirError

__all__ = ["MAX_TEXT_BYTES", "BestRecord", "Log", "Row", "Run", "load_checkpoint_file", "open_run"]

#: Text files (logs, JSON, YAML) larger than this are refused rather than read: a 2 GB
#: "log" is a broken or hostile run dir, and reading it would stall the session.
MAX_TEXT_BYTES = 64 * 1024 * 1024



class MissingColumnError(RunDirError, AttributeError):
    """A column the run did not log; an AttributeError too, so ``getattr(row, x, d)`` works."""

    def __str__(self) -> str:  # AttributeError's own __str__ must not win in the MRO
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- small readers


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def read_text_file(path: Path, shown: str | None = None) -> str:
    """UTF-8 text of a run-dir file, or a one-line RunDirError naming it."""
    shown = shown or str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise RunDirError(f"{shown}: not found") from None
    except OSError as exc:
        raise RunDirError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    if path.is_dir():
        raise RunDirError(f"{shown}: is a directory, expected a file")
    if size > MAX_TEXT_BYTES:
        raise RunDirError(f"{shown}: {size} bytes, larger than the {MAX_TEXT_BYTES} bytes allowed for a text file")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunDirError(f"{shown}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise RunDirError(f"{shown}: cannot read ({exc.strerror or exc})") from None


def read_json_file(path: Path, shown: str | None = None) -> Any:
    shown = shown or str(path)
    text = read_text_file(path, shown)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{shown}: invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})") from None
    except RecursionError:
        raise RunDirError(f"{shown}: invalid JSON (nested too deeply)") from None


def read_yaml_file(path: Path, shown: str | None = None) -> Any:
    import yaml  # lazy: the plugin's import must stay light

    shown = shown or str(path)
    text = read_text_file(path, shown)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise RunDirError(f"{shown}:{where} invalid YAML ({problem})") from None
    except RecursionError:
        raise RunDirError(f"{shown}: invalid YAML (nested too deeply)") from None


def to_float(cell: Any, where: str) -> float:
    """A log cell as float: numbers, numeric strings, 'nan'/'inf'; anything else is an error."""
    if isinstance(cell, bool):
        return float(cell)
    if isinstance(cell, (int, float)):
        return float(cell)
    if isinstance(cell, str):
        try:
            return float(cell.strip())
        except ValueError:
            pass
    shown = cell if len(repr(cell)) < 40 else repr(cell)[:37] + "..."
    raise RunDirError(f"{where}: {shown!r} is not a number")


def to_epoch(cell: Any, where: str) -> float:
    """An epoch number: like :func:`to_float`, but NaN/Inf are errors (an epoch counts)."""
    value = to_float(cell, where)
    if not math.isfinite(value):
        raise RunDirError(f"{where}: epoch {value} is not a finite number")
    return value


# --------------------------------------------------------------------------- log and rows


class Row:
    """One epoch of the log; ``row.val_loss`` and ``row["val_loss"]`` both work."""

    __slots__ = ("_label", "_source", "_values")
    _values: dict[str, float]
    _source: str
    _label: str

    def __init__(self, values: dict[str, float], source: str, label: str) -> None:
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_label", label)

    @property
    def epoch(self) -> int:
        value = self._values.get("epoch", float("nan"))
        return int(value) if math.isfinite(value) else -1

    def __getitem__(self, name: str) -> float:
        try:
            return self._values[name]
        except KeyError:
            raise MissingColumnError(
                f"{self._source}: no column '{name}' (columns: {', '.join(self._values)})"
            ) from None

    def __getattr__(self, name: str) -> float:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Row is read-only")

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def get(self, name: str, default: float | None = None) -> float | None:
        return self._values.get(name, default)

    def keys(self) -> list[str]:
        return list(self._values)

    def as_dict(self) -> dict[str, float]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Row({self._label}, epoch={self.epoch})"


@dataclass
class Log:
    """The per-epoch log: ``columns`` (``epoch`` included) and the same data as ``rows``.

    ``empty`` lists, per column, the epochs whose cell was empty (read as NaN), so that
    ``log_complete`` can tell a missing value from a logged NaN.
    """

    columns: dict[str, list[float]]
    source: Path
    empty: dict[str, list[int]] = field(default_factory=dict)
    kind: str = "engine"  # engine | metric_history | lightning | huggingface

    @property
    def rows(self) -> list[dict[str, float]]:
        names = list(self.columns)
        n = len(self.columns.get("epoch", []))
        return [{c: self.columns[c][i] for c in names} for i in range(n)]

    def __len__(self) -> int:
        return len(self.columns.get("epoch", []))

    @property
    def epochs(self) -> list[float]:
        return self.columns.get("epoch", [])


def parse_engine_csv(text: str, shown: str) -> Log:
    """``training_log.csv``: a header, then one row per epoch, every cell a number."""
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise RunDirError(f"{shown}: unreadable CSV ({exc})") from None
    rows = [r for r in rows if r != []]
    if not rows:
        raise RunDirError(f"{shown}: empty file (no header)")
    header = [h.strip() for h in rows[0]]
    if "epoch" not in header:
        raise RunDirError(f"{shown}: header has no 'epoch' column (header: {','.join(header)[:120]})")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise RunDirError(f"{shown}: column {dupes[0]!r} appears twice in the header")
    if "" in header:
        raise RunDirError(f"{shown}: empty column name in the header")
    columns: dict[str, list[float]] = {h: [] for h in header}
    empty: dict[str, list[int]] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise RunDirError(f"{shown} line {line_no}: {len(row)} cells, header has {len(header)}")
        for name, cell in zip(header, row):
            if cell.strip() == "":
                if name == "epoch":
                    raise RunDirError(f"{shown} line {line_no}: empty 'epoch' cell")
                columns[name].append(float("nan"))
                empty.setdefault(name, []).append(line_no - 1)
            elif name == "epoch":
                columns[name].append(to_epoch(cell, f"{shown} line {line_no}, column epoch"))
            else:
                columns[name].append(to_float(cell, f"{shown} line {line_no}, column {name}"))
    # record empties by epoch number, not row index, now that epochs are known
    for name, idx in empty.items():
        empty[name] = [int(columns["epoch"][i - 1]) for i in idx]
    return Log(columns=columns, source=Path(shown), empty=empty)


def parse_metric_history(data: Any, shown: str) -> Log:
    """``metric_history.json``: ``{"columns": [...], "rows": [{col: value}, ...]}``."""
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise RunDirError(f"{shown}: expected an object with a 'rows' list")
    names = data.get("columns")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        names = []
        for row in data["rows"]:
            if isinstance(row, dict):
                names += [k for k in row if k not in names]
    if "epoch" not in names:
        raise RunDirError(f"{shown}: no 'epoch' column")
    columns: dict[str, list[float]] = {n: [] for n in names}
    empty: dict[str, list[int]] = {}
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise RunDirError(f"{shown}: rows[{i}] is not an object")
        for name in names:
            cell = row.get(name)
            if cell is None or cell == "":
                if name == "epoch":
                    raise RunDirError(f"{shown}: rows[{i}] has no epoch")
                columns[name].append(float("nan"))
                empty.setdefault(name, []).append(i + 1)
            elif name == "epoch":
                columns[name].append(to_epoch(cell, f"{shown}: rows[{i}].epoch"))
            else:
                columns[name].append(to_float(cell, f"{shown}: rows[{i}].{name}"))
    return Log(columns=columns, source=Path(shown), empty=empty, kind="metric_history")


def _merge_by_epoch(entries: list[tuple[float, dict[str, float]]], shown: str, kind: str) -> Log:
    """Rows of (epoch, values) that may repeat an epoch -> one row per epoch, last value wins."""
    by_epoch: dict[float, dict[str, float]] = {}
    names: list[str] = ["epoch"]
    for epoch, values in entries:
        merged = by_epoch.setdefault(epoch, {})
        for k, v in values.items():
            merged[k] = v
            if k not in names:
                names.append(k)
    if not by_epoch:
        raise RunDirError(f"{shown}: no logged epochs")
    columns: dict[str, list[float]] = {n: [] for n in names}
    empty: dict[str, list[int]] = {}
    for epoch in sorted(by_epoch):
        columns["epoch"].append(epoch)
        for n in names[1:]:
            if n not in by_epoch[epoch]:  # never logged at this epoch: an empty cell, not a NaN
                empty.setdefault(n, []).append(int(epoch))
            columns[n].append(by_epoch[epoch].get(n, float("nan")))
    return Log(columns=columns, source=Path(shown), empty=empty, kind=kind)


def regroup_by_logged_epoch(log: Log) -> Log:
    """A log of one row per *step* with a ``logged_epoch`` column -> one row per epoch.

    Trainers that log to MLflow or TensorBoard by global step (Lightning's MLFlowLogger and
    TensorBoardLogger, the HF Trainer's MLflow and TensorBoard callbacks) also log the epoch
    as a metric. Each step's values go to the epoch logged at that step (or last logged
    before it), later values winning, as Lightning's CSV rows are merged. Lightning counts
    epochs from 0 (whole numbers starting at 0: +1); the HF Trainer logs the fraction of
    epochs done (``ceil``); either way the log counts completed epochs from 1, like the
    engine. A log without ``logged_epoch`` comes back unchanged.
    """
    marks = log.columns.get("logged_epoch")
    if not marks or not any(math.isfinite(v) for v in marks):
        return log
    finite = [v for v in marks if math.isfinite(v)]
    zero_based = min(finite) == 0 and all(float(v).is_integer() for v in finite)
    steps = log.columns["epoch"]
    empty = {name: set(cells) for name, cells in log.empty.items()}
    first = next(v for v in marks if math.isfinite(v))
    current = first
    entries: list[tuple[float, dict[str, float]]] = []
    for i, step in enumerate(steps):
        if math.isfinite(marks[i]):
            current = marks[i]
        epoch = current + 1 if zero_based else max(1.0, float(math.ceil(current - 1e-9)))
        values = {name: column[i] for name, column in log.columns.items()
                  if name not in ("epoch", "logged_epoch") and int(step) not in empty.get(name, ())}
        entries.append((float(epoch), values))
    return _merge_by_epoch(entries, str(log.source), log.kind)


def parse_lightning_csv(text: str, shown: str) -> Log:
    """Lightning's CSVLogger ``metrics.csv``: train and val rows interleaved, blanks between.

    Lightning counts epochs from 0; the engine from 1 (completed epochs), so 1 is added.
    """
    reader = csv.DictReader(io.StringIO(text, newline=""))
    entries: list[tuple[float, dict[str, float]]] = []
    try:
        for line_no, row in enumerate(reader, start=2):
            if None in row:
                raise RunDirError(f"{shown} line {line_no}: more cells than the header")
            raw_epoch = (row.get("epoch") or "").strip()
            if not raw_epoch:
                continue
            epoch = to_epoch(raw_epoch, f"{shown} line {line_no}, column epoch") + 1
            values = {
                k: to_float(v, f"{shown} line {line_no}, column {k}")
                for k, v in row.items()
                if k not in ("epoch", "step") and v is not None and v.strip() != ""
            }
            entries.append((epoch, values))
    except csv.Error as exc:
        raise RunDirError(f"{shown}: unreadable CSV ({exc})") from None
    if reader.fieldnames is None or "epoch" not in reader.fieldnames:
        raise RunDirError(f"{shown}: header has no 'epoch' column")
    return _merge_by_epoch(entries, shown, "lightning")


def parse_trainer_state(data: Any, shown: str) -> Log:
    """Hugging Face ``trainer_state.json``: ``log_history`` entries grouped by epoch.

    Entries carry a fractional ``epoch``; each is assigned to the epoch it completes
    (``ceil``). The final summary entry (``train_runtime``...) is skipped.
    """
    history = data.get("log_history") if isinstance(data, dict) else None
    if not isinstance(history, list):
        raise RunDirError(f"{shown}: no 'log_history' list")
    entries: list[tuple[float, dict[str, float]]] = []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict) or "train_runtime" in entry:
            continue
        if "epoch" not in entry:
            continue
        epoch = float(math.ceil(to_epoch(entry["epoch"], f"{shown}: log_history[{i}].epoch") - 1e-9))
        values = {
            k: to_float(v, f"{shown}: log_history[{i}].{k}")
            for k, v in entry.items()
            if k not in ("epoch", "step") and isinstance(v, (int, float, str))
        }
        entries.append((max(epoch, 1.0), values))
    return _merge_by_epoch(entries, shown, "huggingface")


# --------------------------------------------------------------------------- checkpoints

_CHECKPOINT_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def _require_safe_torch() -> Any:
    from pytest_mlgates.errors import require_extra

    torch = require_extra("torch", "opening a checkpoint")

    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2] if p.isdigit())
    if version < (2, 6):
        raise RunDirError(
            f"torch {torch.__version__} is too old to open checkpoints safely "
            "(weights_only=True is bypassable below 2.6, CVE-2025-32434); upgrade torch"
        )
    return torch


def _torch_load(torch: Any, path: Path) -> Any:
    try:
        return torch.load(str(path), weights_only=True, map_location="cpu", mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc) and "zip" not in str(exc).lower():
            raise
    # legacy (non-zip) files cannot be memory-mapped
    return torch.load(str(path), weights_only=True, map_location="cpu")


def load_checkpoint_file(path: Path, shown: str | None = None) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``, cached per process by (path, mtime, size).

    A checkpoint that needs globals the safe loader refuses is not loaded anyway: the
    error lists them, so the user can see what the file would have executed.
    """
    shown = shown or str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise RunDirError(f"{shown}: not found") from None
    except OSError as exc:
        raise RunDirError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    if path.is_dir():
        raise RunDirError(f"{shown}: is a directory, expected a checkpoint file")
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    cached = _CHECKPOINT_CACHE.get(key)
    if cached is not None:
        return cached
    if st.st_size == 0:
        raise RunDirError(f"{shown}: empty file, not a checkpoint")
    torch = _require_safe_torch()
    import pickle  # only for the exception type torch raises; never used to load
    import warnings

    obj: Any = None
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of files it then refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            obj = _torch_load(torch, path)
    except pickle.UnpicklingError as exc:
        unsafe: list[str] = []
        try:
            unsafe = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # noqa: BLE001 - best effort: the file may not be a zip at all
            unsafe = []
        if unsafe:
            raise RunDirError(
                f"{shown}: refused to load: it needs globals the safe loader (weights_only=True) "
                f"does not allow: {', '.join(sorted(unsafe)[:6])}"
            ) from None
        # torch's message advises weights_only=False; show only the line saying what was refused
        text = str(exc)
        tail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
        reason = next((ln.strip() for ln in tail.splitlines() if ln.strip()), "")
        why = f"weights_only unpickler: {reason}" if reason else "the weights_only unpickler refused it"
        raise RunDirError(f"{shown}: not a loadable checkpoint ({why[:200]})") from None
    except MemoryError:
        raise RunDirError(f"{shown}: too large to load") from None
    except Exception as exc:  # noqa: BLE001 - truncated/garbage files raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        # torch's longer messages go on to advise weights_only=False: keep the first sentence
        first = first.split(". ", 1)[0].rstrip(".").replace("``", "")
        # a cut-off zip makes torch's mmap or zip reader fail with a bare errno
        hint = "truncated or corrupt file; " if isinstance(exc, OSError) or "zip" in first.lower() else ""
        raise RunDirError(
            f"{shown}: not a loadable checkpoint ({hint}{exc.__class__.__name__}: {first[:200]})"
        ) from None
    if not isinstance(obj, dict):
        raise RunDirError(f"{shown}: holds a {type(obj).__name__}, expected a checkpoint dict")
    _CHECKPOINT_CACHE[key] = obj
    return obj


# --------------------------------------------------------------------------- the run

_MISSING = object()


@dataclass
class BestRecord:
    """What a run says is the best checkpoint for one metric, in the log's epoch numbering.

    ``problem`` is set (one line) when the run has no usable best checkpoint for the metric:
    the file is missing, or names another metric.  ``epoch``/``value`` are None when the
    trainer does not record them."""

    metric: str
    shown: str
    epoch: int | None = None
    value: float | None = None
    problem: str | None = None


class Run:
    """A run dir, parsed lazily. See the module docstring.

    This class reads the engine's own layout; ``pytest_mlgates.formats`` has one subclass
    per other trainer, overriding where the log, the tracked metrics and the checkpoints
    are found (``_read_log``, ``tracked``, ``monitor``, ``best_checkpoint``,
    ``checkpoint_path``, ``checkpoint``, ``default_checkpoint``)."""

    #: which trainer wrote the run dir (see ``pytest_mlgates.formats.FORMATS``)
    format = "engine"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # -- paths ---------------------------------------------------------------------

    def resolve(self, rel: str) -> Path:
        """``rel`` inside the run dir, or a RunDirError: no absolute paths, no ``..``,
        no symlink that leads outside."""
        return resolve_inside(self.path, rel, "run dir")

    def shown(self, path: Path) -> str:
        """How a file of this run is named in messages: ``runs/x/training_log.csv``."""
        return str(path)

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

    def _optional_json(self, name: str) -> Any:
        path = self.path / name
        if not path.exists() and not path.is_symlink():
            return None
        self.resolve(name)  # a symlink out of the run dir is refused, not followed
        return read_json_file(path, self.shown(path))

    def _optional_object(self, name: str) -> dict[str, Any] | None:
        data = self._optional_json(name)
        if data is not None and not isinstance(data, dict):
            raise RunDirError(f"{self.shown(self.path / name)}: expected a JSON object, got {type(data).__name__}")
        return data

    @property
    def results(self) -> dict[str, Any] | None:
        return self._cached("results", lambda: self._optional_object("training_results.json"))

    @property
    def provenance(self) -> dict[str, Any] | None:
        return self._cached("provenance", lambda: self._optional_object("provenance.json"))

    @property
    def splits(self) -> dict[str, Any] | None:
        return self._cached("splits", lambda: self._optional_object("splits.json"))

    def _optional_yaml_mapping(self, name: str) -> dict[str, Any] | None:
        """A YAML mapping of the run dir (``{}`` when empty), None when the file is absent."""
        path = self.path / name
        if not path.exists() and not path.is_symlink():
            return None
        self.resolve(name)  # a symlink out of the run dir is refused, not followed
        data = read_yaml_file(path, self.shown(path))
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise RunDirError(f"{self.shown(path)}: expected a mapping, got {type(data).__name__}")
        return data

    @property
    def config(self) -> dict[str, Any] | None:
        return self._cached("config", lambda: self._optional_yaml_mapping("config.yaml"))

    @property
    def log(self) -> Log:
        return self._cached("log", self._read_log)

    def _read_log(self) -> Log:
        for name, kind in (
            ("training_log.csv", "engine"),
            ("metric_history.json", "metric_history"),
            ("metrics.csv", "lightning"),
            ("trainer_state.json", "huggingface"),
        ):
            path = self.path / name
            if not path.exists() and not path.is_symlink():
                continue
            self.resolve(name)
            shown = self.shown(path)
            if kind == "engine":
                return parse_engine_csv(read_text_file(path, shown), shown)
            if kind == "metric_history":
                return parse_metric_history(read_json_file(path, shown), shown)
            if kind == "lightning":
                return parse_lightning_csv(read_text_file(path, shown), shown)
            return parse_trainer_state(read_json_file(path, shown), shown)
        raise RunDirError(f"{self.shown(self.path / 'training_log.csv')}: not found (no training log in the run dir)")

    def metric_history(self) -> Log | None:
        """``metric_history.json`` on its own (None when absent), to compare with the CSV."""
        def make() -> Log | None:
            data = self._optional_json("metric_history.json")
            if data is None:
                return None
            return parse_metric_history(data, self.shown(self.path / "metric_history.json"))

        return self._cached("metric_history", make)

    # -- rows ------------------------------------------------------------------------

    def row_at(self, index: int, label: str) -> Row:
        log = self.log
        if len(log) == 0:
            raise RunDirError(f"{self.shown(log.source)}: no rows (header only)")
        return Row({c: v[index] for c, v in log.columns.items()}, self.shown(log.source), label)

    @property
    def final(self) -> Row:
        return self.row_at(-1, "final")

    @property
    def monitor(self) -> tuple[str, str]:
        """(metric, mode) that defines "best": results, else config early stopping, else val_loss."""
        results = self.results or {}
        mon = results.get("monitor")
        if isinstance(mon, dict) and isinstance(mon.get("metric"), str):
            mode = mon.get("mode")
            return mon["metric"], mode if mode in ("min", "max") else default_mode(mon["metric"])
        cfg = self.config or {}
        es = (cfg.get("train") or {}).get("early_stopping") if isinstance(cfg.get("train"), dict) else None
        if isinstance(es, dict) and isinstance(es.get("monitor"), str):
            mode = es.get("mode")
            return es["monitor"], mode if mode in ("min", "max") else default_mode(es["monitor"])
        return "val_loss", "min"

    @property
    def best_epoch(self) -> int | None:
        def make() -> int | None:
            metric, mode = self.monitor
            log = self.log
            if metric not in log.columns:
                return None
            index = best_index(log.columns[metric], mode)
            return None if index is None else int(log.columns["epoch"][index])

        return self._cached("best_epoch", make)

    @property
    def best(self) -> Row:
        metric, mode = self.monitor
        log = self.log
        if metric not in log.columns:
            raise RunDirError(f"{self.shown(log.source)}: monitor metric '{metric}' is not a logged column")
        index = best_index(log.columns[metric], mode)
        if index is None:
            raise RunDirError(f"{self.shown(log.source)}: '{metric}' has no finite value, so no best epoch")
        return self.row_at(index, f"best {metric}")

    # -- what the run is about -----------------------------------------------------------

    @property
    def class_names(self) -> list[str]:
        """Class names from training_results.json, else a checkpoint, else the log's recall columns."""
        names = (self.results or {}).get("class_names")
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return list(names)
        for rel in ("checkpoints/final.pt", "checkpoints/last.pt"):
            if (self.path / rel).is_file():
                try:
                    names = self.checkpoint(rel).get("class_names")
                except RunDirError:
                    continue
                if isinstance(names, list) and names:
                    return [str(n) for n in names]
        try:
            return [c[len("val_recall_"):] for c in self.log.columns if c.startswith("val_recall_")]
        except RunDirError:
            return []

    @property
    def tracked(self) -> list[tuple[str, str]]:
        """(metric, mode) of every tracked best checkpoint: config, else results' ``best``."""
        cfg = self.config or {}
        tracked = (cfg.get("checkpoint") or {}).get("tracked") if isinstance(cfg.get("checkpoint"), dict) else None
        out: list[tuple[str, str]] = []
        if isinstance(tracked, list):
            for t in tracked:
                if isinstance(t, dict) and isinstance(t.get("metric"), str):
                    mode = t.get("mode")
                    out.append((t["metric"], mode if mode in ("min", "max") else default_mode(t["metric"])))
        if out:
            return out
        best = (self.results or {}).get("best")
        if isinstance(best, dict):
            for metric, info in best.items():
                mode = info.get("mode") if isinstance(info, dict) else None
                out.append((str(metric), mode if mode in ("min", "max") else default_mode(str(metric))))
        return out

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint_path(self, name: str) -> Path:
        """``best_val_loss`` / ``final`` / ``last`` / ``best`` (the monitor's) or a relative path."""
        if name == "best":
            name = f"best_{self.monitor[0]}"
        if "/" not in name and "\\" not in name and not name.endswith((".pt", ".pth", ".ckpt", ".bin")):
            name = f"checkpoints/{name}.pt"
        return self.resolve(name)

    def checkpoint(self, name: str) -> dict[str, Any]:
        """The checkpoint dict, loaded safely and once per process (see load_checkpoint_file)."""
        path = self.checkpoint_path(name)
        return load_checkpoint_file(path, self.checkpoint_shown(name))

    def checkpoint_shown(self, name: str) -> str:
        """How checkpoint ``name`` is named in messages: ``runs/x/checkpoints/best_val_loss.pt``."""
        path = self.checkpoint_path(name)
        root = self.path.resolve()
        return self.shown(self.path / path.relative_to(root)) if path.is_relative_to(root) else str(path)

    def default_checkpoint(self) -> str:
        """The checkpoint a gate opens when the gate file names none: the first tracked
        metric's best, else final, else last."""
        for metric, _ in self.tracked[:1]:
            if (self.path / "checkpoints" / f"best_{metric}.pt").exists():
                return f"best_{metric}"
        for name in ("final", "last"):
            if (self.path / "checkpoints" / f"{name}.pt").exists():
                return name
        raise RunDirError(f"{self.shown(self.path / 'checkpoints')}: no best_*.pt, final.pt or last.pt to load")

    def resume_state(self) -> tuple[str, int | None, list[str], list[str]]:
        """The run's resume point: (shown name, epoch in the log's numbering, the kinds of
        state it holds, the kinds a resume needs that it lacks).  Other trainers override
        this; the engine's gate reads ``checkpoints/last.pt`` itself."""
        raise RunDirError(f"{self.shown(self.path)}: a {self.format} run has no resume point the gate can read")

    def best_checkpoint(self, metric: str, mode: str) -> BestRecord:
        """``checkpoints/best_<metric>.pt`` and the epoch and value its ``monitor`` records."""
        rel = f"checkpoints/best_{metric}.pt"
        shown = self.shown(self.path / rel)
        if not self.resolve(rel).exists():
            return BestRecord(metric, shown, problem=f"{shown}: not found; needs one best checkpoint per "
                                                     f"tracked metric ({metric}, {mode})")
        try:
            ckpt = self.checkpoint(rel)
        except RunDirError as exc:
            return BestRecord(metric, shown, problem=str(exc))
        monitors = checkpoint_monitors(ckpt)
        if metric not in monitors:
            got = ", ".join(monitors) if monitors else "no metric"
            return BestRecord(metric, shown, problem=f"{shown}: monitor names {got}; needs '{metric}'")
        epoch = ckpt.get("epoch")
        return BestRecord(metric, shown, epoch=epoch if isinstance(epoch, int) else None,
                          value=_float_or_none(monitors[metric].get("value")))

    # -- expressions ---------------------------------------------------------------------

    def eval_env(self, metric_aliases: dict[str, str] | None = None) -> Any:
        """The columns a ``check:`` sees (an ``expr.EvalEnv``), with the gate file's
        ``metrics:`` renames applied."""
        from pytest_mlgates.expr import EvalEnv

        columns = dict(self.log.columns)
        for spec_name, logged in (metric_aliases or {}).items():
            if logged in columns and spec_name not in columns:
                columns[spec_name] = columns[logged]
        # lazily: a check that never says best. must not open a checkpoint to find it
        return EvalEnv(columns=columns, best_epoch=lambda: self.best_epoch)

    def column(self, name: str, metric_aliases: dict[str, str] | None = None) -> list[float]:
        """A logged column by its spec name (aliases applied), or a RunDirError naming the log."""
        log = self.log
        real = (metric_aliases or {}).get(name, name)
        if real in log.columns:
            return log.columns[real]
        if name in log.columns:
            return log.columns[name]
        raise RunDirError(
            f"{self.shown(log.source)}: no column '{real}' (columns: {', '.join(log.columns)[:200]})"
        )


def checkpoint_monitors(ckpt: Any) -> dict[str, dict[str, Any]]:
    """The tracked metrics an engine checkpoint says it is the best for, each with its
    ``mode`` and ``value``. ``model-checkpoint/2`` maps them all (``{"val_loss": {"mode":
    "min", "value": 0.23}, ...}``: one epoch's checkpoint serves every metric that improved
    then); ``/1`` held one ``{"metric", "mode", "value"}``. Anything else: none. The records
    are the checkpoint's own dicts (editing one edits the checkpoint: ``mlgates prove``)."""
    monitor = ckpt.get("monitor") if isinstance(ckpt, dict) else None
    if not isinstance(monitor, dict):
        return {}
    if isinstance(monitor.get("metric"), str):  # model-checkpoint/1
        return {monitor["metric"]: monitor}
    return {k: v for k, v in monitor.items() if isinstance(k, str) and isinstance(v, dict)}


def numbers_close(a: float, b: float, tol: float = 1e-9) -> bool:
    """Equal within a relative ``tol`` (NaN equals NaN): a number as written down and read back."""
    if math.isnan(a) and math.isnan(b):
        return True
    return a == b or abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def epochs_done(value: Any) -> int | None:
    """A fractional epoch count (the HF Trainer's ``epoch``) as the epoch it completes, from 1;
    None when it is not a finite number."""
    raw = _float_or_none(value)
    if raw is None or not math.isfinite(raw):
        return None
    return max(1, math.ceil(raw - 1e-9))


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def default_mode(metric: str) -> str:
    """``min`` for losses and errors, ``max`` for everything else."""
    low = metric.lower()
    return "min" if ("loss" in low or "error" in low or low.endswith("_err")) else "max"


def best_index(values: list[float], mode: str) -> int | None:
    """Index of the best value; ties go to the first occurrence and NaN is never best."""
    best: int | None = None
    for i, v in enumerate(values):
        if math.isnan(v):
            continue
        if best is None or (v < values[best] if mode == "min" else v > values[best]):
            best = i
    return best


def resolve_inside(root: Path, rel: str, what: str) -> Path:
    """``root/rel`` after resolving symlinks, refusing anything that leaves ``root``."""
    if not isinstance(rel, str) or not rel.strip():
        raise RunDirError(f"{root}: empty path")
    if "\x00" in rel:
        raise RunDirError(f"{root}: path {rel!r} contains a NUL byte")
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


def _single_version(p: Path) -> Path | None:
    """A Lightning ``save_dir`` or ``lightning_logs`` folder holding exactly one ``version_N``."""
    for base in (p, p / "lightning_logs"):
        try:
            versions = [d for d in base.iterdir() if d.name.startswith("version_") and d.is_dir()]
        except OSError:
            continue
        if len(versions) == 1:
            return versions[0]
    return None


def open_run(path: str | Path, run_format: str | None = None, run_section: Any = None) -> Run:
    """The run dir at ``path``; a RunDirError naming it when it is not one.

    ``run_section`` is a gate file's parsed ``run:`` section (where the log, checkpoints
    and splits of a run are, and its format), or None.

    ``run_format`` forces a reader (``engine``, ``lightning``, ``huggingface``, ``mlflow``,
    ``tensorboard``); by default the format is detected from the names in the directory.
    """
    from pytest_mlgates.formats import FORMATS, detect

    p = Path(path)
    if not p.exists():
        raise RunDirError(f"{p}: run dir not found")
    if not p.is_dir():
        raise RunDirError(f"{p}: not a directory (a run dir is a directory)")
    try:
        os.listdir(p)
    except OSError as exc:
        raise RunDirError(f"{p}: cannot list run dir ({exc.strerror or exc})") from None
    if run_format in (None, "", "auto"):
        fmt = detect(p)
        if fmt is None:
            version = _single_version(p)
            if version is not None:
                p, fmt = version, detect(version)
        if fmt is None:
            raise RunDirError(
                f"{p}: not a run dir (none of training_log.csv, training_results.json, config.yaml, "
                "checkpoints/, metrics.csv, trainer_state.json, mlflow.db, mlruns/, events.out.tfevents.*)"
            )
    else:
        fmt = run_format
        if fmt not in FORMATS:
            raise RunDirError(f"--run-format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "engine":
        return Run(p)
    from pytest_mlgates.formats import readers

    return readers.open_format(p, fmt)
