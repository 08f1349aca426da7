"""Synthetic run dirs for the gate tests: every file of the run-dir contract, written the
way the engine writes it (real CSV/JSON, real torch checkpoints of a real engine model),
with numbers a test chooses, so each gate can be shown RED and GREEN in milliseconds.

    run_dir = make_run(tmp_path / "run", values={"val_recall_malignant": [0.5, 0.4, 0, 0, 0]})
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytest_mlgates.formats import open_run
from pytest_mlgates.gates import GateContext, GateResult, get_gate

CLASSES = ["malignant", "benign"]

# Five epochs of a plausible run; val_loss is best at epoch 3, val_macro_f1 at epoch 5.
BASE_LOG: dict[str, list[float]] = {
    "epoch": [1, 2, 3, 4, 5],
    "train_loss": [0.70, 0.50, 0.40, 0.35, 0.30],
    "val_loss": [0.69, 0.52, 0.45, 0.47, 0.46],
    "train_accuracy": [0.60, 0.80, 0.85, 0.88, 0.90],
    "val_accuracy": [0.60, 0.78, 0.83, 0.82, 0.84],
    "val_macro_f1": [0.55, 0.75, 0.82, 0.80, 0.83],
    "val_auroc": [0.70, 0.85, 0.90, 0.90, 0.91],
    "val_min_recall": [0.50, 0.70, 0.80, 0.78, 0.80],
    "val_recall_malignant": [0.50, 0.70, 0.80, 0.78, 0.80],
    "val_recall_benign": [0.60, 0.80, 0.85, 0.84, 0.86],
    "lr": [0.001, 0.0009, 0.0007, 0.0004, 0.0001],
    "epoch_seconds": [0.1, 0.1, 0.1, 0.1, 0.1],
}

TRACKED = [{"metric": "val_loss", "mode": "min"}, {"metric": "val_macro_f1", "mode": "max"}]


def engine_config(**extra: Any) -> dict[str, Any]:
    """A resolved engine config (breast_cancer, tiny mlp) as the engine writes it."""
    from model.config import load_config

    overrides = ["data.name=breast_cancer", "model.name=mlp", "model.width=4",
                 f"checkpoint.tracked={json.dumps(TRACKED)}", "train.epochs=5"]
    overrides += [f"{k}={json.dumps(v)}" for k, v in extra.items()]
    return load_config(None, overrides).to_dict()


def _csv_cell(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return repr(v) if isinstance(v, float) else str(v)


def write_log(run_dir: Path, columns: dict[str, list[Any]], *, history: bool = True) -> None:
    names = list(columns)
    n = len(columns["epoch"])
    lines = [",".join(names)] + [",".join(_csv_cell(columns[c][i]) for c in names) for i in range(n)]
    (run_dir / "training_log.csv").write_text("\n".join(lines) + "\n")
    if history:
        def js(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
            return v
        rows = [{c: js(columns[c][i]) for c in names} for i in range(n)]
        (run_dir / "metric_history.json").write_text(json.dumps({"columns": names, "rows": rows}))


def _best(values: list[float], mode: str) -> int:
    finite = [(v, i) for i, v in enumerate(values) if not math.isnan(v)]
    if mode == "min":
        return min(finite, key=lambda t: (t[0], t[1]))[1]
    return min(finite, key=lambda t: (-t[0], t[1]))[1]


def _png(path: Path, blank: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2), dpi=60)
    if not blank:
        ax.plot([1, 2, 3], [3, 1, 2])
    else:
        ax.axis("off")
    fig.savefig(path, format="png")
    plt.close(fig)


def make_run(
    run_dir: Path,
    *,
    values: dict[str, list[Any]] | None = None,
    drop_columns: Iterable[str] = (),
    checkpoints: bool = True,
    config_extra: dict[str, Any] | None = None,
) -> Path:
    """Write a complete synthetic run dir (log, results, config, provenance, splits,
    checkpoints, plots) and return its path. ``values`` replaces whole log columns."""
    import torch
    import yaml

    from model.checkpoint import capture_rng
    from model.config import build_config
    from model.data import build_dataset
    from model.nets import build_model

    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "plots").mkdir(exist_ok=True)
    columns = {k: list(v) for k, v in BASE_LOG.items()}
    columns.update({k: list(v) for k, v in (values or {}).items()})
    for c in drop_columns:
        columns.pop(c, None)
    write_log(run_dir, columns)
    n = len(columns["epoch"])

    config = engine_config(**(config_extra or {}))
    config_text = yaml.safe_dump(config, sort_keys=False)
    (run_dir / "config.yaml").write_text(config_text)
    sha = hashlib.sha256(config_text.encode()).hexdigest()
    (run_dir / "provenance.json").write_text(json.dumps({
        "entry_point": "python -m model train", "argv": ["train"], "config_path": "configs/x.yaml",
        "config_sha256": sha, "resolved_config_sha256": sha, "overrides": [], "git": None,
        "allow_defaults": False, "seed": 0,
    }))
    dataset = build_dataset(build_config(config))
    (run_dir / "splits.json").write_text(json.dumps(dataset.splits_json()))

    best = {}
    for t in TRACKED:
        m = t["metric"]
        if m in columns:
            i = _best(columns[m], t["mode"])
            best[m] = {"epoch": int(columns["epoch"][i]), "value": columns[m][i], "mode": t["mode"],
                       "checkpoint": f"checkpoints/best_{m}.pt"}
    final = {c: columns[c][-1] for c in columns}
    (run_dir / "training_results.json").write_text(json.dumps({
        "status": "completed", "reason": "trained all epochs", "epochs_completed": n, "epochs_planned": n,
        "monitor": {"metric": "val_loss", "mode": "min"}, "best": best, "final": final,
        "class_names": CLASSES,
    }))
    _png(run_dir / "plots" / "loss_curve.png")
    _png(run_dir / "plots" / "recall_curve.png")

    if checkpoints:
        torch.manual_seed(0)
        model = build_model(config["model"], dataset.input_shape, len(CLASSES))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        history = [{c: columns[c][i] for c in columns} for i in range(n)]

        def ckpt(epoch_index: int, monitor: dict[str, Any] | None) -> dict[str, Any]:
            return {
                "format": "model-checkpoint/1", "model": model.state_dict(), "ema": None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": None,
                "epoch": int(columns["epoch"][epoch_index]), "global_step": 10 * (epoch_index + 1),
                "metrics": history[epoch_index], "monitor": monitor, "best": best,
                "config": config, "class_names": CLASSES, "input_shape": list(dataset.input_shape),
                "normalization": dataset.normalization, "rng": capture_rng(),
                "history": history[: epoch_index + 1],
            }

        for m, info in best.items():
            i = [int(e) for e in columns["epoch"]].index(int(info["epoch"]))  # type: ignore[call-overload]
            torch.save(ckpt(i, {"metric": m, "mode": info["mode"], "value": info["value"]}),
                       run_dir / "checkpoints" / f"best_{m}.pt")
        torch.save(ckpt(n - 1, None), run_dir / "checkpoints" / "final.pt")
        torch.save(ckpt(n - 1, None), run_dir / "checkpoints" / "last.pt")
    return run_dir


def run_gate(run_dir: Path | str, gate: str, params: dict[str, Any] | None = None, *,
             rootdir: Path | None = None, baseline: Path | None = None,
             aliases: dict[str, str] | None = None) -> GateResult:
    """Run one gate the way the plugin does and return its result.  The user's code is the
    engine's, as this repository's conftest hands it over (``model.mlgates``)."""
    from model.mlgates import run_subject
    from pytest_mlgates.gates import validate_params

    params = dict(params or {})
    validate_params(gate, params)
    ctx = GateContext(rootdir=Path(rootdir or Path(__file__).resolve().parents[1]),
                      baseline=open_run(baseline) if baseline else None,
                      metric_aliases=dict(aliases or {}),
                      subject=lambda: run_subject(run_dir))
    return get_gate(gate).fn(open_run(run_dir), params, ctx)


def edit_json(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def set_log_cell(run_dir: Path, column: str, epoch: int, value: str) -> None:
    """Rewrite one cell of training_log.csv (and the same one in metric_history.json)."""
    path = Path(run_dir) / "training_log.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    col = header.index(column)
    for k in range(1, len(lines)):
        cells = lines[k].split(",")
        if float(cells[0]) == epoch:
            cells[col] = value
            lines[k] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    hist = Path(run_dir) / "metric_history.json"
    if hist.exists():
        def change(data: dict[str, Any]) -> None:
            for row in data["rows"]:
                if float(row["epoch"]) == epoch:
                    row[column] = value if value in ("nan", "inf", "-inf", "") else float(value)
        edit_json(hist, change)
