"""The experiment config: YAML in, validated pydantic model out.

Every key a user writes is declared here, and unknown keys are errors that name the key
and the closest valid one::

    >>> load_config("configs/default.yaml", ["train.lr=0.01"]).train.lr
    0.01

Errors are raised as :class:`ConfigError`, whose message is one line naming the file and
the key, so the CLI can print it without a traceback.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(Exception):
    """A config problem, explained in one line (file, key, what was wrong)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Imbalance(_Strict):
    # `class` is a Python keyword: the YAML key is `class`, the attribute `class_`.
    class_: int | str = Field(alias="class")
    keep: float = Field(gt=0.0, le=1.0)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Fault = Literal["shortcut", "nan_pixels", "missing_band", "leaked_groups"]


class DataConfig(_Strict):
    name: Literal["digits", "breast_cancer", "stamps"] = "digits"
    split: Literal["stratified", "group_holdout"] = "stratified"
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    imbalance: Imbalance | None = None
    faults: list[Fault] = Field(default_factory=list)
    # stamps only: how many images to synthesise (small keeps CPU runs fast)
    n_samples: int = Field(1200, ge=50)
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} "
                "leaves too little training data (must be < 0.9)"
            )
        return self


class ModelConfig(_Strict):
    name: Literal["cnn", "mlp"] = "cnn"
    width: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class EarlyStopping(_Strict):
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(7, ge=1)


class CoreDropout(_Strict):
    prob: float = Field(0.0, ge=0.0, le=1.0)
    radius: float = Field(5.0, gt=0.0)


class TrainConfig(_Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    accumulate: int = Field(1, ge=1)
    lr: float = Field(0.001, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_epochs: int = Field(1, ge=0)
    class_weights: Literal["none", "balanced"] | list[float] = "balanced"
    early_stopping: EarlyStopping | None = Field(default_factory=EarlyStopping)
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    core_dropout: CoreDropout = Field(default_factory=CoreDropout)
    grad_clip: float = Field(0.0, ge=0.0)
    progress_bar: bool = True


class TrackedMetric(_Strict):
    metric: str
    mode: Literal["min", "max"]


DEFAULT_TRACKED: list[dict[str, str]] = [{"metric": "val_loss", "mode": "min"}]


class CheckpointConfig(_Strict):
    tracked: list[TrackedMetric] = Field(
        default_factory=lambda: [TrackedMetric(**t) for t in DEFAULT_TRACKED]
    )

    @field_validator("tracked")
    @classmethod
    def _unique_metrics(cls, tracked: list[TrackedMetric]) -> list[TrackedMetric]:
        names = [t.metric for t in tracked]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metric tracked twice: {', '.join(dupes)}")
        if not tracked:
            raise ValueError("at least one tracked metric is needed")
        return tracked


class GatesConfig(_Strict):
    inflight: str | None = None
    after_epoch: int = Field(1, ge=1)


class MlflowTracking(_Strict):
    # MLflow's own defaults: the SQLite store in the working directory, experiment "Default"
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "Default"


class WandbTracking(_Strict):
    mode: Literal["offline", "online"] = "offline"
    project: str | None = None


class TrackingConfig(_Strict):
    """Optional experiment tracking beside the run dir (which stays the source of truth)."""

    mlflow: MlflowTracking | None = None
    wandb: WandbTracking | None = None


class Config(_Strict):
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (YAML/JSON/`weights_only` safe), with YAML key names."""
        return self.model_dump(mode="json", by_alias=True)

    def uses_default_tracking(self) -> bool:
        """True when nobody chose the tracked metrics: the config (or an override) does not
        name ``checkpoint.tracked``.  A config that lists ``[val_loss]`` on purpose chose it."""
        return "tracked" not in self.checkpoint.model_fields_set


# --------------------------------------------------------------------------- loading


def _valid_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _submodel(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The pydantic model behind `key` of `model`, if the key holds a section."""
    for name, field in model.model_fields.items():
        if (field.alias or name) != key:
            continue
        ann = field.annotation
        for candidate in (ann, *getattr(ann, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                return candidate
    return None


def _explain(err: ValidationError, source: str) -> str:
    """First pydantic error as one line: file, dotted key, what was wrong."""
    e = err.errors()[0]
    loc = [str(p) for p in e["loc"] if not isinstance(p, int) or True]
    key = ".".join(loc)
    if e["type"] == "extra_forbidden":
        # find the section model to suggest the closest valid key
        model: type[BaseModel] | None = Config
        for part in loc[:-1]:
            model = _submodel(model, part) if model else None
        valid = _valid_keys(model) if model else []
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        hint = f"; did you mean '{'.'.join(loc[:-1] + [close[0]])}'?" if close else ""
        return f"{source}: unknown key '{key}'{hint} (valid: {', '.join(valid)})"
    got = e.get("input")
    got_s = "" if isinstance(got, dict) else f" (got {got!r})"
    msg = e["msg"].replace("Value error, ", "")
    return f"{source}: {key or 'config'}: {msg}{got_s}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    model: type[BaseModel] | None = Config
    node = tree
    for i, part in enumerate(parts):
        valid = _valid_keys(model) if model else None
        if valid is not None and part not in valid:
            close = difflib.get_close_matches(part, valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{'.'.join(parts[:i] + [close[0]])}'?" if close else ""
            raise ConfigError(f"--override {dotted}: no such key '{'.'.join(parts[: i + 1])}'{hint}")
        if i == len(parts) - 1:
            node[part] = value
            return
        sub = _submodel(model, part) if model else None
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node, model = child, sub


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=0.01` -> ("train.lr", 0.01), the value typed as YAML types it."""
    if "=" not in text:
        raise ConfigError(f"--override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--override {key}: value {raw!r} is not valid YAML ({exc.__class__.__name__})")
    return key, value


def read_yaml(path: Path) -> dict[str, Any]:
    """Safe-load a YAML mapping; a one-line ConfigError for anything else."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc.__class__.__name__}: {exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise ConfigError(f"{path}:{where}: invalid YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def build_config(tree: dict[str, Any], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_explain(err, source)) from None


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read `path` (None: all defaults), apply `key.sub=value` overrides, validate."""
    source = str(path) if path is not None else "<defaults>"
    tree = read_yaml(Path(path)) if path is not None else {}
    tree = copy.deepcopy(tree)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value, source)
    return build_config(tree, source)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
