"""The trainer fixture scripts (tests/trainers/*_run.py) make the run dirs they promise.

Each script is run as a real subprocess, as the reader tests run it (``trainer_run``: one
process per script, ``--batch``, each run in its own OUT dir). These tests pin
the file layout the readers in ``pytest_mlgates`` rely on, that every checkpoint opens
with ``torch.load(weights_only=True)``, and that each ``--fault`` really breaks the run.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import pickle
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO_ROOT, TRAINER_EPOCHS, TRAINER_SCRIPTS_DIR, need_package

# every test here trains or reads real Lightning / HF / MLflow / TensorBoard runs
pytestmark = pytest.mark.slow

SCRIPTS = TRAINER_SCRIPTS_DIR
EPOCHS = TRAINER_EPOCHS


def tree(root: Path) -> set[str]:
    """Every file below root, as posix paths relative to it."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def weights_only_load(path: Path) -> object:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- Lightning

def lightning_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def lightning_val(rows: list[dict[str, str]], key: str) -> dict[int, float]:
    """key by epoch (0-based, as Lightning counts) from the rows that carry it."""
    return {int(r["epoch"]): float(r[key]) for r in rows if r.get(key, "") != ""}


def test_lightning_healthy_layout_and_checkpoints(trainer_run: Callable[..., Path]) -> None:
    run = trainer_run("lightning")
    assert run.parts[-2:] == ("lightning_logs", "version_0")
    files = tree(run)
    assert {"metrics.csv", "hparams.yaml", "checkpoints/last.ckpt"} <= files
    best = [f for f in files if f.startswith("checkpoints/best-epoch=")]
    assert len(best) == 1 and best[0].endswith(".ckpt"), files
    assert files == {"metrics.csv", "hparams.yaml", "checkpoints/last.ckpt", best[0]}
    rows = lightning_rows(run)
    keys = {"train_loss", "val_loss", "val_acc", "val_min_recall",
            *(f"val_recall_{c}" for c in range(10))}
    assert keys <= set(rows[0]), rows[0].keys()
    assert sorted(lightning_val(rows, "val_loss")) == list(range(EPOCHS))
    assert sorted(lightning_val(rows, "train_loss")) == list(range(EPOCHS))
    assert lightning_val(rows, "val_min_recall")[EPOCHS - 1] > 0.3
    for ckpt in ("checkpoints/last.ckpt", best[0]):
        state = weights_only_load(run / ckpt)
        assert isinstance(state, dict)
        assert all(k.startswith("model.net.") for k in state["state_dict"]), state["state_dict"]
        assert state["hyper_parameters"]["epochs"] == EPOCHS
        monitors = [v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint")]
        assert len(monitors) == 1 and monitors[0]["monitor"] == "val_loss"


def test_lightning_tb_logger_writes_events_in_same_version(trainer_run: Callable[..., Path]) -> None:
    need_package("tensorboard")
    run = trainer_run("lightning-tb")
    assert run.parts[-2:] == ("lightning_logs", "version_0")
    assert [f for f in tree(run) if f.startswith("events.out.tfevents.")]
    assert not (run.parent / "version_1").exists()


def test_lightning_faults(trainer_run: Callable[..., Path]) -> None:
    collapsed = lightning_rows(trainer_run("lightning", "collapsed"))
    assert lightning_val(collapsed, "val_min_recall")[EPOCHS - 1] == 0.0
    assert lightning_val(collapsed, "val_recall_3")[EPOCHS - 1] == 0.0
    nan = lightning_rows(trainer_run("lightning", "nan"))
    val_loss = lightning_val(nan, "val_loss")
    assert not math.isnan(val_loss[1]) and math.isnan(val_loss[2])
    no_best = trainer_run("lightning", "no_best")
    files = tree(no_best)
    assert "checkpoints/last.ckpt" in files
    assert not [f for f in files if f.startswith("checkpoints/best-")], files


# ---------------------------------------------------------------- Hugging Face

def test_hf_healthy_layout_and_checkpoints(trainer_run: Callable[..., Path]) -> None:
    need_package("accelerate")  # the Trainer refuses to start without it
    from safetensors import torch as safetensors_torch
    run = trainer_run("huggingface")
    files = tree(run)
    assert {"trainer_state.json", "model.safetensors", "training_args.bin"} <= files
    state = json.loads((run / "trainer_state.json").read_text())
    evals = [e for e in state["log_history"] if "eval_loss" in e]
    # transformers 5.x does not name metric_for_best_model here; best_metric is eval_loss's min
    assert state["best_metric"] == min(e["eval_loss"] for e in evals)
    assert state["best_global_step"] == min(evals, key=lambda e: e["eval_loss"])["step"]
    assert [round(e["epoch"]) for e in evals] == list(range(1, EPOCHS + 1))
    assert {"eval_acc", "eval_min_recall", *(f"eval_recall_{c}" for c in range(10))} <= set(evals[0])
    assert [e for e in state["log_history"] if "loss" in e], "no per-epoch train loss logged"
    best = Path(state["best_model_checkpoint"]).name
    ckpt_dirs = sorted({f.split("/")[0] for f in files if f.startswith("checkpoint-")})
    assert best in ckpt_dirs and len(ckpt_dirs) <= 2, ckpt_dirs
    for d in ckpt_dirs:
        assert {f"{d}/model.safetensors", f"{d}/trainer_state.json"} <= files
    weights = safetensors_torch.load_file(str(run / "model.safetensors"))
    assert set(weights) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    # optimizer.pt and scheduler.pt open weights-only; rng_state.pth holds numpy RNG state,
    # which torch refuses weights-only (refusing is the safe outcome; it must not run code).
    # training_args.bin is a pickled TrainingArguments: never opened at all.
    for d in ckpt_dirs:
        assert isinstance(weights_only_load(run / d / "optimizer.pt"), dict)
        assert isinstance(weights_only_load(run / d / "scheduler.pt"), dict)
        try:
            weights_only_load(run / d / "rng_state.pth")
        except pickle.UnpicklingError:
            pass


def test_hf_faults(trainer_run: Callable[..., Path]) -> None:
    need_package("accelerate")

    def final_eval(run: Path) -> list[dict[str, float]]:
        state = json.loads((run / "trainer_state.json").read_text())
        return [e for e in state["log_history"] if "eval_loss" in e]

    assert final_eval(trainer_run("huggingface", "collapsed"))[-1][
        "eval_min_recall"] == 0.0
    evals = final_eval(trainer_run("huggingface", "nan"))
    assert not math.isnan(evals[1]["eval_loss"]) and math.isnan(evals[2]["eval_loss"])
    run = trainer_run("huggingface", "no_best")
    best = Path(json.loads((run / "trainer_state.json").read_text())["best_model_checkpoint"]).name
    assert not (run / best).exists()


# ---------------------------------------------------------------- MLflow

def check_plain_checkpoints(ckpt_dir: Path) -> None:
    import torch

    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["best_val_loss.pt", "final.pt"]
    best = weights_only_load(ckpt_dir / "best_val_loss.pt")
    final = weights_only_load(ckpt_dir / "final.pt")
    assert isinstance(best, dict) and isinstance(final, dict)
    assert best["monitor"]["metric"] == "val_loss" and best["monitor"]["mode"] == "min"
    assert 1 <= best["epoch"] <= EPOCHS and final["epoch"] == EPOCHS
    assert set(best["state_dict"]) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    assert all(isinstance(t, torch.Tensor) for t in final["state_dict"].values())


def mlflow_metrics(db: Path) -> dict[str, dict[int, float]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT key, step, value, is_nan FROM metrics").fetchall()
    finally:
        con.close()
    out: dict[str, dict[int, float]] = {}
    for key, step, value, is_nan in rows:
        out.setdefault(key, {})[step] = math.nan if is_nan else value
    return out


def test_mlflow_sqlite_layout_and_checkpoints(trainer_run: Callable[..., Path]) -> None:
    out = trainer_run("mlflow-sqlite")
    assert (out / "mlflow.db").is_file()
    metrics = mlflow_metrics(out / "mlflow.db")
    assert {"train_loss", "val_loss", "val_acc", "val_min_recall",
            *(f"val_recall_{c}" for c in range(10))} == set(metrics)
    assert sorted(metrics["val_loss"]) == list(range(1, EPOCHS + 1))
    assert metrics["val_min_recall"][EPOCHS] > 0.3
    run_dirs = [p for p in (out / "mlartifacts").iterdir() if p.is_dir()]
    assert len(run_dirs) == 1
    check_plain_checkpoints(run_dirs[0] / "artifacts" / "checkpoints")
    assert sorted(p.name for p in out.iterdir()) == ["mlartifacts", "mlflow.db"]
    assert not (out.parent / "mlruns").exists(), "wrote outside OUT (the Default experiment's mlruns/)"


def test_mlflow_file_store_layout(trainer_run: Callable[..., Path]) -> None:
    run = trainer_run("mlflow-file")
    assert run.parent.parent.name == "mlruns"
    assert (run / "meta.yaml").is_file()
    metric_files = {p.name for p in (run / "metrics").iterdir()}
    assert {"train_loss", "val_loss", "val_min_recall", "val_recall_3"} <= metric_files
    steps = [int(line.split()[2]) for line in (run / "metrics" / "val_loss").read_text().split("\n")
             if line]
    assert steps == list(range(1, EPOCHS + 1))
    assert {p.name for p in (run / "params").iterdir()} >= {"lr", "epochs", "seed", "hidden"}
    check_plain_checkpoints(run / "artifacts" / "checkpoints")


def test_mlflow_faults(trainer_run: Callable[..., Path]) -> None:
    collapsed = mlflow_metrics(trainer_run("mlflow-sqlite", "collapsed") / "mlflow.db")
    assert collapsed["val_min_recall"][EPOCHS] == 0.0
    nan = mlflow_metrics(trainer_run("mlflow-sqlite", "nan") / "mlflow.db")
    assert not math.isnan(nan["val_loss"][2]) and math.isnan(nan["val_loss"][3])
    run = trainer_run("mlflow-sqlite", "no_best")
    (ckpts,) = run.glob("mlartifacts/*/artifacts/checkpoints")
    assert sorted(p.name for p in ckpts.iterdir()) == ["final.pt"]


# ---------------------------------------------------------------- TensorBoard

def tb_scalars(run: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tb_layout_and_checkpoints(trainer_run: Callable[..., Path]) -> None:
    run = trainer_run("tensorboard")
    files = tree(run)
    events = [f for f in files if f.startswith("events.out.tfevents.")]
    assert len(events) == 1 and files == {events[0], "checkpoints/best_val_loss.pt",
                                          "checkpoints/final.pt"}
    scalars = tb_scalars(run)
    assert {"train_loss", "val_loss", "val_min_recall", *(f"val_recall_{c}" for c in range(10))} \
        <= set(scalars)
    assert sorted(scalars["val_loss"]) == list(range(1, EPOCHS + 1))
    check_plain_checkpoints(run / "checkpoints")


def test_tb_faults(trainer_run: Callable[..., Path]) -> None:
    collapsed = tb_scalars(trainer_run("tensorboard", "collapsed"))
    assert collapsed["val_min_recall"][EPOCHS] == 0.0
    nan = tb_scalars(trainer_run("tensorboard", "nan"))
    assert not math.isnan(nan["val_loss"][2]) and math.isnan(nan["val_loss"][3])
    run = trainer_run("tensorboard", "no_best")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["final.pt"]


# ---------------------------------------------------------------- shared pieces

def test_digits_model_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both names a gate file may give work; ``tests.`` needs the repo root on sys.path."""
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    # by import_module: a static import would make mypy see one file under two module names
    plain = importlib.import_module("digits_model").DigitsMLP
    packaged = importlib.import_module("tests.trainers.digits_model").DigitsMLP

    for cls in (packaged, plain):
        model = cls()
        flat = model(torch.zeros(5, 64))
        assert flat.shape == (5, 10)
        assert model(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
        out = model(torch.zeros(5, 64), labels=torch.zeros(5, dtype=torch.long))
        assert set(out) == {"loss", "logits"} and out["loss"].ndim == 0


def test_metrics_per_class_recall(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    metrics = importlib.import_module("tests.trainers.common").metrics

    logits = torch.full((4, 10), -1.0)
    logits[0, 0] = logits[1, 0] = logits[2, 1] = logits[3, 3] = 1.0
    y = torch.tensor([0, 1, 1, 3])
    got = metrics(logits, y)
    assert got["recall_0"] == 1.0 and got["recall_1"] == 0.5 and got["recall_3"] == 1.0
    assert got["acc"] == 0.75 and got["min_recall"] == 0.5
    assert "recall_2" not in got or math.isnan(got["recall_2"]) or got["recall_2"] == 0.0
