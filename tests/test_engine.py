"""The run dir a real ``python -m model train`` leaves, checked against the contract of
docs/internals.md: files, columns, checkpoints, best-per-metric, results, provenance."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from conftest import SMALL_OVERRIDES, small_overrides

pytestmark = pytest.mark.slow  # every test trains a run (or reads one trained for it)

# The contract run: the 3-epoch default run tests/test_gates_real.py, test_prove.py and
# test_archive_gates.py judge too (trained once per session, its in-flight gates on).
CONTRACT_OVERRIDES = SMALL_OVERRIDES
# The runs of one feature each (accumulation, EMA, early stopping, fresh, hooks): what they
# assert is the engine's bookkeeping, not what a CNN learns, so a tiny MLP trains them.
ENGINE_OVERRIDES = (*small_overrides, "gates.inflight=null", "model.name=mlp", "model.width=8")
CLASS_WEIGHTS = "[" + ", ".join(["1.0"] * 3 + ["5.0"] + ["1.0"] * 6) + "]"
# One 2-epoch run for the options that only have to be taken up: gradient accumulation,
# EMA, explicit class weights and gradient clipping (each asserted by its own test).
FEATURES_OVERRIDES = (*ENGINE_OVERRIDES, "train.epochs=2", "train.accumulate=4", "train.ema_decay=0.9",
                      f"train.class_weights={CLASS_WEIGHTS}", "train.grad_clip=1.0")
TRACKED = {"val_loss": "min", "val_macro_f1": "max", "val_min_recall": "max"}


def read_log(run):
    with open(run / "training_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    header = (run / "training_log.csv").read_text().splitlines()[0].split(",")
    return header, rows


def test_run_dir_contract(trained_run):
    run = trained_run(CONTRACT_OVERRIDES)
    for name in ("config.yaml", "provenance.json", "splits.json", "training_log.csv",
                 "metric_history.json", "train.log", "training_results.json",
                 "checkpoints/final.pt", "checkpoints/last.pt", "plots/loss_curve.png",
                 "plots/recall_curve.png", *[f"checkpoints/best_{m}.pt" for m in TRACKED]):
        assert (run / name).is_file(), name
    header, rows = read_log(run)
    assert header == ["epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy",
                      "val_macro_f1", "val_auroc", "val_min_recall",
                      *[f"val_recall_{i}" for i in range(10)], *[f"val_support_{i}" for i in range(10)],
                      "lr", "epoch_seconds"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    history = json.loads((run / "metric_history.json").read_text())
    assert history["columns"] == header
    for row, jrow in zip(rows, history["rows"]):
        for col in header:
            assert float(row[col]) == float(jrow[col]), col  # the same numbers, exactly
    results = json.loads((run / "training_results.json").read_text())
    assert results["status"] == "completed" and results["reason"]
    assert results["epochs_completed"] == results["epochs_planned"] == 3
    assert results["final"]["epoch"] == 3
    assert set(results["test"]) >= {"test_loss", "test_accuracy", "test_recall_3"}
    assert results["class_names"] == [str(i) for i in range(10)]
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["entry_point"] == "python -m model train"
    assert prov["config_path"] == "configs/default.yaml" and len(prov["config_sha256"]) == 64
    assert prov["overrides"] == list(CONTRACT_OVERRIDES)
    assert prov["start_time"] <= prov["end_time"]
    splits = json.loads((run / "splits.json").read_text())
    assert not set(splits["train"]) & set(splits["val"])
    log_text = (run / "train.log").read_text()
    assert "epoch 3/3" in log_text and "completed" in log_text


def test_support_columns_count_the_validation_split_by_class(trained_run):
    """val_support_<k> is how many validation samples are of class k: the denominator of
    val_recall_<k>, so a gate can weigh a recall by its counts (class_recall confidence:)."""
    run = trained_run(CONTRACT_OVERRIDES)
    _, rows = read_log(run)
    splits = json.loads((run / "splits.json").read_text())
    from model.config import load_config
    from model.data import build_dataset

    dataset = build_dataset(load_config(run / "config.yaml"))
    want = [int((dataset.y[splits["val"]] == k).sum()) for k in range(10)]
    for row in rows:
        support = [row[f"val_support_{k}"] for k in range(10)]
        assert support == [str(n) for n in want]  # whole numbers, written as ints
        assert sum(int(n) for n in support) == len(splits["val"])
        for k in range(10):  # each recall is a whole number of its class's samples
            hits = float(row[f"val_recall_{k}"]) * want[k]
            assert abs(hits - round(hits)) < 1e-9
    results = json.loads((run / "training_results.json").read_text())
    assert results["final"]["val_support_3"] == want[3]
    assert sum(results["test"][f"test_support_{k}"] for k in range(10)) == len(splits["test"])


def test_every_checkpoint_opens_with_weights_only_and_has_the_contract_keys(trained_run):
    run = trained_run(CONTRACT_OVERRIDES)
    keys = {"format", "model", "ema", "optimizer", "scheduler", "scaler", "epoch", "global_step",
            "metrics", "monitor", "best", "early_stopping", "config", "class_names",
            "input_shape", "normalization", "rng", "history"}
    for path in sorted((run / "checkpoints").glob("*.pt")):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert keys <= set(ckpt), (path.name, keys - set(ckpt))
        assert ckpt["format"] == "model-checkpoint/2"
        assert set(ckpt["rng"]) >= {"python", "numpy", "torch", "cuda"}
    from model.nets import model_from_checkpoint

    final = torch.load(run / "checkpoints/final.pt", weights_only=True)
    net = model_from_checkpoint(final)
    probs = torch.softmax(net(torch.zeros(2, *final["input_shape"])), dim=1)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2))


def test_each_best_checkpoint_holds_the_epoch_and_value_where_the_log_is_best(trained_run):
    run = trained_run(CONTRACT_OVERRIDES)
    _, rows = read_log(run)
    results = json.loads((run / "training_results.json").read_text())
    for metric, mode in TRACKED.items():
        values = [float(r[metric]) for r in rows]
        pick = min if mode == "min" else max
        best_value = pick(v for v in values if not math.isnan(v))
        best_epoch = int(rows[values.index(best_value)]["epoch"])  # first epoch reaching it
        ckpt = torch.load(run / f"checkpoints/best_{metric}.pt", weights_only=True)
        assert ckpt["monitor"][metric] == {"mode": mode, "value": best_value}
        assert ckpt["epoch"] == best_epoch
        assert ckpt["metrics"][metric] == best_value
        assert results["best"][metric]["epoch"] == best_epoch
        assert results["best"][metric]["value"] == best_value


def test_default_config_trains_without_collapsing_class_3(trained_run):
    run = trained_run()  # configs/default.yaml as it is: the run test_plugin_acceptance.py judges
    results = json.loads((run / "training_results.json").read_text())
    assert results["status"] in ("completed", "early_stopped")
    assert results["final"]["val_recall_3"] > 0
    assert results["final"]["val_accuracy"] > 0.8
    _, rows = read_log(run)
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])


def test_gradient_accumulation_steps_once_per_group_and_a_partial_group_still_steps(trained_run):
    run = trained_run(FEATURES_OVERRIDES)
    final = torch.load(run / "checkpoints/final.pt", weights_only=True)
    splits = json.loads((run / "splits.json").read_text())
    batches = math.ceil(len(splits["train"]) / 64)
    assert batches % 4 != 0  # so the trailing partial group is exercised
    assert final["global_step"] == 2 * math.ceil(batches / 4)
    assert "effective batch 256" in (run / "train.log").read_text()


def test_early_stopping_stops_and_says_why(trained_run):
    # with no warm-up the lr only falls, so "lr, max" cannot improve after epoch 1
    run = trained_run((*ENGINE_OVERRIDES, "train.epochs=5", "train.warmup_epochs=0",
                       "train.early_stopping={monitor: lr, mode: max, patience: 2}"))
    results = json.loads((run / "training_results.json").read_text())
    assert results["status"] == "early_stopped"
    assert results["epochs_completed"] == 3
    assert "lr did not improve for 2 epochs" in results["reason"]
    assert (run / "checkpoints/final.pt").is_file()


def test_ema_weights_are_stored_and_used_for_evaluation(trained_run):
    run = trained_run(FEATURES_OVERRIDES)
    final = torch.load(run / "checkpoints/final.pt", weights_only=True)
    assert final["ema"] is not None
    differs = [k for k in final["model"] if final["model"][k].is_floating_point()
               and not torch.equal(final["model"][k], final["ema"][k])]
    assert differs  # an average of weights, not a copy


def test_explicit_class_weights_and_grad_clip_train(trained_run):
    run = trained_run(FEATURES_OVERRIDES)
    results = json.loads((run / "training_results.json").read_text())
    assert results["status"] == "completed"
    config = torch.load(run / "checkpoints/final.pt", weights_only=True)["config"]
    assert config["train"]["class_weights"] == [1.0] * 3 + [5.0] + [1.0] * 6
    assert config["train"]["grad_clip"] == 1.0


def _main(run, overrides, *extra):
    """``python -m model train --run-dir RUN --config configs/default.yaml --override ...``,
    run by the CLI's own ``main`` in this process (the engine is imported here already)."""
    from model.cli import main

    argv = ["train", "--run-dir", str(run), "--config", "configs/default.yaml"]
    for override in overrides:
        argv += ["--override", override]
    return main([*argv, *extra])


def test_a_finished_run_is_not_retrained(trained_run, copy_run, tmp_path, in_repo, capsys):
    run = copy_run(trained_run(CONTRACT_OVERRIDES), tmp_path / "run")
    before = (run / "training_log.csv").read_bytes()
    code = _main(run, CONTRACT_OVERRIDES)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "already finished" in err
    assert (run / "training_log.csv").read_bytes() == before


def test_fresh_starts_over_and_keeps_files_it_does_not_own(trained_run, copy_run, tmp_path, in_repo, capsys):
    run = copy_run(trained_run(CONTRACT_OVERRIDES), tmp_path / "run")
    (run / "acceptance").mkdir()
    (run / "acceptance" / "ledger.jsonl").write_text("{}\n")
    (run / "checkpoints" / "best_old_metric.pt").write_bytes(b"stale")
    code = _main(run, (*ENGINE_OVERRIDES, "train.epochs=1"), "--fresh")
    assert code == 0, capsys.readouterr().err
    _, rows = read_log(run)
    assert [r["epoch"] for r in rows] == ["1"]
    assert not (run / "checkpoints" / "best_old_metric.pt").exists()
    assert (run / "acceptance" / "ledger.jsonl").read_text() == "{}\n"
    assert (run / "train.log").read_text().count("training digits") == 1


# ---- in-process API: the in-flight hook seam and a crash mid-training


def _config(*overrides):
    from model.config import load_config

    return load_config("configs/default.yaml", [*ENGINE_OVERRIDES, *overrides])


@pytest.fixture()
def in_repo(monkeypatch):
    from conftest import REPO_ROOT

    monkeypatch.chdir(REPO_ROOT)


def test_inflight_hook_red_stops_with_aborted_by_gate(tmp_path, in_repo):
    from model.train import train

    calls = []

    def hook(run_dir, epoch):
        calls.append(epoch)
        # the hook sees the epoch's files already written
        assert len(read_log(run_dir)[1]) == epoch
        return "min_recall: val_min_recall = 0.000 at epoch 2; needs > 0.5" if epoch == 2 else None

    results = train(_config("gates.after_epoch=1"), tmp_path / "run", config_path="configs/default.yaml",
                    inflight_hook=hook)
    assert calls == [1, 2]
    assert results["status"] == "aborted_by_gate"
    assert results["reason"].startswith("min_recall: val_min_recall = 0.000")
    on_disk = json.loads((tmp_path / "run" / "training_results.json").read_text())
    assert on_disk["status"] == "aborted_by_gate" and on_disk["epochs_completed"] == 2


def test_a_crash_mid_training_is_recorded_as_failed(tmp_path, in_repo):
    from model.train import train

    def hook(run_dir, epoch):
        raise RuntimeError("disk on fire\nsecond line")

    with pytest.raises(RuntimeError, match="disk on fire"):
        train(_config(), tmp_path / "run", config_path="configs/default.yaml", inflight_hook=hook)
    results = json.loads((tmp_path / "run" / "training_results.json").read_text())
    assert results["status"] == "failed"
    assert results["reason"] == "RuntimeError: disk on fire second line"
    assert "Traceback" in (tmp_path / "run" / "train.log").read_text()  # the details stay in train.log


def test_one_checkpoint_per_epoch_serves_every_metric_that_improved(trained_run):
    """An epoch's checkpoint is serialized once: best_<metric>.pt of each metric that
    improved that epoch is byte for byte its last.pt, and ``monitor`` names them all."""
    run = trained_run(CONTRACT_OVERRIDES)
    results = json.loads((run / "training_results.json").read_text())
    final_epoch = results["final"]["epoch"]
    last = (run / "checkpoints/last.pt").read_bytes()
    last_ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    best_now = {m for m, b in results["best"].items() if b["epoch"] == final_epoch}
    assert set(last_ckpt["monitor"] or {}) == best_now
    by_epoch: dict[int, list[str]] = {}
    for metric in TRACKED:
        by_epoch.setdefault(results["best"][metric]["epoch"], []).append(metric)
        data = (run / f"checkpoints/best_{metric}.pt").read_bytes()
        ckpt = torch.load(run / f"checkpoints/best_{metric}.pt", weights_only=True)
        # it names every metric that was the best so far at its epoch, with that epoch's value
        assert {m for m, b in results["best"].items() if b["epoch"] == ckpt["epoch"]} \
            <= set(ckpt["monitor"])
        for name, record in ckpt["monitor"].items():
            assert record == {"mode": TRACKED[name], "value": ckpt["metrics"][name]}, name
        if metric in best_now:
            assert data == last, metric
    for epoch, metrics in by_epoch.items():  # same epoch, same bytes
        blobs = {(run / f"checkpoints/best_{m}.pt").read_bytes() for m in metrics}
        assert len(blobs) == 1, (epoch, metrics)
