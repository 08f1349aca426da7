"""Experiment tracking (``tracking:`` in the config): real MLflow SQLite stores, real W&B
offline runs, real engine processes.

* A run killed after its second epoch's checkpoint, before that epoch reached MLflow, and
  resumed, is ONE MLflow run: every epoch logged exactly once (the missed one caught up
  from ``last.pt``), the values equal to ``training_log.csv``, the config as params, status
  FINISHED and ``mlgates.status`` ``completed``.
* That run passes ``acceptance/default.gates.yaml`` read as its run dir, and read as its
  MLflow run (the run folder ``mlruns/<run_id>/`` holding its artifacts, beside
  ``mlflow.db``) with the same verdicts -- but for the two criteria the plugin's MLflow
  reader does not answer from the artifacts (see ``MLFLOW_DESELECTED``).
* A run stopped by an in-flight gate is tagged ``aborted_by_gate`` (MLflow status KILLED);
  in W&B (offline) its summary and tags say so and the exit code is 3.
* A missing package, a mistyped key: one-line config errors before the run dir is touched.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_forkserver import ForkServer

from conftest import REPO_ROOT, log_rows
from model.config import ConfigError, load_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                reason="mlflow is not installed (pip install -e '.[trainers]')")

EPOCHS = 3
# the plugin's MLflow reader reads provenance.json beside the run folder, not among its
# artifacts, and gives an MLflow run no resume point: those two items need the run dir
MLFLOW_DESELECTED = "not provenance and not resume_point"


def mlflow_override(store: Path, experiment: str) -> str:
    return f"tracking.mlflow={{uri: 'sqlite:///{store / 'mlflow.db'}', experiment: {experiment}}}"


def argv(run: Path, *overrides: str) -> list[str]:
    out = ["train", "--config", "configs/default.yaml", "--run-dir", str(run)]
    for override in (f"train.epochs={EPOCHS}", "train.progress_bar=false", "gates.inflight=null",
                     *overrides):
        out += ["--override", override]
    return out


def store_runs(store: Path) -> list[dict[str, Any]]:
    """Every run of an MLflow SQLite store: id, status, tags, params, metrics {key: [(step, value)]}."""
    con = sqlite3.connect(f"file:{store / 'mlflow.db'}?mode=ro", uri=True)
    try:
        out = []
        for run_id, status in con.execute("SELECT run_uuid, status FROM runs ORDER BY start_time"):
            metrics: dict[str, list[tuple[int, float]]] = {}
            for key, value, step, is_nan in con.execute(
                    "SELECT key, value, step, is_nan FROM metrics WHERE run_uuid = ? "
                    "ORDER BY key, step, timestamp", (run_id,)):
                metrics.setdefault(key, []).append((step, float("nan") if is_nan else value))
            out.append({
                "id": run_id, "status": status, "metrics": metrics,
                "tags": dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,))),
                "params": dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,))),
            })
        return out
    finally:
        con.close()


@pytest.fixture(scope="module")
def forkserver():
    with ForkServer(str(REPO_ROOT)) as server:
        yield server


@pytest.fixture(scope="module")
def resumed_tracked_run(forkserver, tmp_path_factory) -> dict[str, Path]:
    """A run killed after epoch 2's checkpoint (its logs' temp files written, not renamed:
    MLflow has epoch 1 only), then the same command again."""
    base = tmp_path_factory.mktemp("tracked")
    run, store, log = base / "run", base / "store", str(base / "engine.log")
    store.mkdir()
    command = argv(run, mlflow_override(store, "digits"))
    # log writes: 3 at the start (logs, results), then 3 an epoch; the 9th is epoch 2's last
    killed = forkserver.run(command, log, kill={"event": "log_write", "n": 9})
    assert killed["killed"], Path(log).read_text()[-2000:]
    assert [r["epoch"] for r in log_rows(run)] == ["1", "2"]
    (before,) = store_runs(store)
    assert 2 not in [step for step, _ in before["metrics"].get("val_loss", [])]  # not logged
    resumed = forkserver.run(command, log)
    assert resumed["returncode"] == 0, Path(log).read_text()[-3000:]
    return {"run": run, "store": store, "log": Path(log)}


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_mlflow_run_with_every_epoch_once(resumed_tracked_run):
    run, store = resumed_tracked_run["run"], resumed_tracked_run["store"]
    (tracked,) = store_runs(store)  # one MLflow run, not one per start
    assert "resumed from" in resumed_tracked_run["log"].read_text()
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["tracking"]["mlflow"]["run_id"] == tracked["id"]
    assert len(provenance["resumes"]) == 1

    rows = log_rows(run)
    columns = [c for c in rows[0] if c != "epoch"]
    assert sorted(tracked["metrics"]) == sorted(columns)  # every log column but the step
    for column in columns:
        points = tracked["metrics"][column]
        assert [step for step, _ in points] == list(range(1, EPOCHS + 1)), column  # each once
        assert [value for _, value in points] == [float(r[column]) for r in rows], column

    assert tracked["status"] == "FINISHED"
    assert tracked["tags"]["mlgates.status"] == "completed"
    assert tracked["tags"]["mlflow.runName"] == "run"
    assert tracked["params"]["train.epochs"] == str(EPOCHS)
    assert tracked["params"]["data.name"] == "digits"
    assert json.loads(tracked["params"]["checkpoint.tracked"])[0] == {"metric": "val_loss", "mode": "min"}


@pytest.mark.slow
def test_the_tracked_run_passes_acceptance_read_as_its_run_dir_and_as_its_mlflow_run(
        resumed_tracked_run):
    run, store = resumed_tracked_run["run"], resumed_tracked_run["store"]
    (tracked,) = store_runs(store)
    run_folder = store / "mlruns" / tracked["id"]  # the run's own folder: its artifacts
    for name in ("best_val_loss.pt", "best_val_macro_f1.pt", "best_val_min_recall.pt", "last.pt"):
        assert (run_folder / "artifacts" / "checkpoints" / name).is_file(), name
    # one session, both readings; the run dir's own provenance and resume_point items are
    # GREEN in tests/test_plugin_acceptance.py
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO_ROOT / "acceptance" / "default.gates.yaml"),
         "--run-dir", str(run), "--run-dir", str(run_folder), "-k", MLFLOW_DESELECTED,
         "--rootdir", str(REPO_ROOT), "-p", "no:cacheprovider", "-q"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]

    table = proc.stdout.split("= mlgates =")[1].split(" criteria: ")[0]
    verdicts: dict[str, dict[str, str]] = {str(run): {}, str(run_folder): {}}
    for line in table.splitlines():
        cells = line.split()
        for shown, found in verdicts.items():  # a long path is shortened to '...<its tail>'
            if len(cells) >= 3 and (cells[1] == shown or (cells[1].startswith("...")
                                                          and shown.endswith(cells[1][3:]))):
                found[cells[0]] = cells[-1]
    by_run_dir, by_mlflow = verdicts[str(run)], verdicts[str(run_folder)]
    assert by_mlflow == by_run_dir and set(by_mlflow.values()) == {"GREEN"}, table
    assert {"best_checkpoints", "checkpoint_softmax", "reproduces", "class_recall", "converged",
            "artifact:checkpoints/best_val_loss.pt", "plots"} <= set(by_mlflow), table


INFLIGHT_RED = """
title: stop after the first epoch
exit_criteria:
  - name: never_good_enough
    check: "max(val_accuracy) > 1.5"
    stage: inflight
"""


@pytest.fixture(scope="module")
def aborted_run(forkserver, tmp_path_factory) -> dict[str, Any]:
    """A small run that an in-flight gate stops after epoch 1; MLflow, and W&B offline
    when it is installed."""
    base = tmp_path_factory.mktemp("aborted")
    gates = base / "red.gates.yaml"
    gates.write_text(INFLIGHT_RED)
    run, store, log = base / "run", base / "store", str(base / "engine.log")
    store.mkdir()
    overrides = [mlflow_override(store, "gated"), f"gates.inflight={gates}", "model.name=mlp",
                 "model.width=8"]  # the later gates.inflight wins over argv's null
    wandb = importlib.util.find_spec("wandb") is not None
    if wandb:
        overrides.append("tracking.wandb={mode: offline, project: gated}")
    result = forkserver.run(argv(run, *overrides), log)
    return {"run": run, "store": store, "returncode": result["returncode"], "wandb": wandb,
            "log": Path(log).read_text()}


@pytest.mark.slow
def test_a_run_stopped_by_an_inflight_gate_is_tagged_aborted_by_gate_in_mlflow(aborted_run):
    assert aborted_run["returncode"] == 3, aborted_run["log"][-3000:]
    results = json.loads((aborted_run["run"] / "training_results.json").read_text())
    assert results["status"] == "aborted_by_gate" and results["epochs_completed"] == 1
    (tracked,) = store_runs(aborted_run["store"])
    assert tracked["tags"]["mlgates.status"] == "aborted_by_gate"
    assert "never_good_enough" in tracked["tags"]["mlgates.reason"]
    assert tracked["status"] == "KILLED"
    assert [step for step, _ in tracked["metrics"]["val_loss"]] == [1]


def wandb_records(run_dir: Path) -> list[Any]:
    """The records of the W&B offline run's ``run-<id>.wandb`` (W&B's header, then a
    LevelDB-style log of ``Record`` protobufs in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, pending, records = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST, MIDDLE/LAST
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


@pytest.mark.slow
def test_wandb_offline_gets_the_config_the_metrics_and_the_stop(aborted_run):
    if not aborted_run["wandb"]:
        pytest.skip("wandb is not installed (pip install wandb)")
    records = wandb_records(aborted_run["run"])
    by_kind: dict[str, list[Any]] = {}
    for record in records:
        by_kind.setdefault(record.WhichOneof("record_type"), []).append(record)
    config = {u.key: json.loads(u.value_json) for u in by_kind["run"][0].run.config.update}
    assert config["train"]["epochs"] == EPOCHS and config["model"]["name"] == "mlp"
    (history,) = [r.history for r in by_kind["history"]]
    items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in history.item}
    assert history.step.num == 1 and "val_loss" in items and "epoch" not in items
    summary = {u.key or "/".join(u.nested_key): json.loads(u.value_json)
               for r in by_kind["summary"] for u in r.summary.update}
    assert summary["mlgates.status"] == "aborted_by_gate"
    assert "aborted_by_gate" in list(by_kind["run"][-1].run.tags)
    assert by_kind["exit"][-1].exit.exit_code == 3
    assert json.loads((aborted_run["run"] / "provenance.json").read_text())["tracking"]["wandb"]["id"]


@pytest.mark.slow  # imports the engine (torch) into the test process
def test_a_missing_tracking_package_is_one_line_before_the_run_dir_is_touched(
        tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from model.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)  # what an uninstalled package looks like
    monkeypatch.chdir(REPO_ROOT)
    code = main(argv(tmp_path / "run", "tracking.wandb={project: x}"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["error: tracking.wandb: the 'wandb' package is not installed (pip install wandb)"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("tracking.mlflow={experimnt: x}",
     "unknown key 'tracking.mlflow.experimnt'; did you mean 'tracking.mlflow.experiment'?"),
    ("tracking.wandb={mode: cloud}", "tracking.wandb.mode: Input should be 'offline' or 'online'"),
    ("tracking.mlfow={uri: x}", "no such key 'tracking.mlfow'; did you mean 'tracking.mlflow'?"),
])
def test_tracking_keys_are_checked_like_every_config_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(REPO_ROOT / "configs" / "default.yaml", [override])
    assert message in str(info.value) and "\n" not in str(info.value)
