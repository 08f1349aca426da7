"""Lightning and Hugging Face run dirs, built file by file the way the trainers write them.

These pin the readers' edge cases (a best checkpoint saved on another machine, a deleted
best file, a best_metric of another metric, a pickle that must never be opened) without
importing the trainers; tests/test_trainers_real.py runs the real ones.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from gate_helpers import run_gate

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import detect, open_run

torch = pytest.importorskip("torch")

VAL = [0.9, 0.5, 0.6]  # best val_loss at Lightning epoch 1 (epochs count from 0, in the log too)
MC_KEY = ("ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, "
          "'every_n_epochs': 1, 'train_time_interval': None}")


def _tiny_state(prefix: str = "model.") -> dict[str, Any]:
    net = torch.nn.Linear(4, 3)
    return {f"{prefix}{k}": v for k, v in net.state_dict().items()}


def lightning_dir(root: Path, *, best_score: float = 0.5, delete_best: bool = False,
                  monitor: str = "val_loss") -> Path:
    run = root / "lightning_logs" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    lines = ["epoch,step,train_loss,val_loss,val_recall_0,val_recall_1,val_recall_2"]
    for e, v in enumerate(VAL):
        lines.append(f"{e},{10 * e + 9},,{v},0.5,0.6,0.7")
        lines.append(f"{e},{10 * e + 9},{1.0 - 0.1 * e},,,,")
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    (run / "hparams.yaml").write_text("lr: 0.01\nhidden: 8\n")
    best_name = "best-epoch=1-val_loss=0.5000.ckpt"
    key = MC_KEY.replace("'val_loss'", f"'{monitor}'")

    def state(best_path: str) -> dict[str, Any]:
        return {"monitor": monitor, "best_model_score": torch.tensor(best_score),
                "best_model_path": best_path, "current_score": torch.tensor(VAL[-1]),
                "dirpath": "/home/alice/exp/lightning_logs/version_0/checkpoints",
                "best_k_models": {best_path: torch.tensor(best_score)}, "kth_best_model_path": best_path,
                "kth_value": torch.tensor(best_score), "last_model_path": ""}

    remote = f"/home/alice/exp/lightning_logs/version_0/checkpoints/{best_name}"
    torch.save({"epoch": 1, "global_step": 20, "state_dict": _tiny_state(), "callbacks": {key: state(remote)}},
               run / "checkpoints" / best_name)
    torch.save({"epoch": 2, "global_step": 30, "state_dict": _tiny_state(), "callbacks": {key: state(remote)}},
               run / "checkpoints" / "last.ckpt")
    if delete_best:
        (run / "checkpoints" / best_name).unlink()
    return run


def hf_dir(root: Path, *, best_of: str = "eval_loss", null_best: bool = False, delete_best: bool = False,
           top_state: bool = True) -> Path:
    from safetensors.torch import save_file

    out = root / "out"
    out.mkdir()
    history: list[dict[str, Any]] = []
    evals = [{"eval_loss": 0.9, "eval_accuracy": 0.7}, {"eval_loss": 0.4, "eval_accuracy": 0.8},
             {"eval_loss": 0.6, "eval_accuracy": 0.9}]
    for i, ev in enumerate(evals, start=1):
        history.append({"epoch": float(i), "step": 10 * i, "loss": 1.0 / i, "learning_rate": 0.01, "grad_norm": 1.0})
        history.append({"epoch": float(i), "step": 10 * i, **ev, "eval_runtime": 0.1})
    history.append({"epoch": 3.0, "step": 30, "train_runtime": 1.0, "train_loss": 0.5})
    best_step = 20 if best_of == "eval_loss" else 30
    state = {"epoch": 3.0, "global_step": 30, "log_history": history,
             "best_metric": None if null_best else evals[best_step // 10 - 1][best_of],
             "best_global_step": None if null_best else best_step,
             "best_model_checkpoint": None if null_best else f"/data/bob/runs/out/checkpoint-{best_step}"}
    for step in (20, 30):
        ck = out / f"checkpoint-{step}"
        ck.mkdir()
        save_file(_tiny_state(""), str(ck / "model.safetensors"))
        inner = dict(state, epoch=step / 10, global_step=step, log_history=history[: 2 * step // 10])
        (ck / "trainer_state.json").write_text(json.dumps(inner))
    if top_state:
        (out / "trainer_state.json").write_text(json.dumps(state))
    save_file(_tiny_state(""), str(out / "model.safetensors"))
    if delete_best:
        import shutil

        shutil.rmtree(out / f"checkpoint-{best_step}")
    return out


class Boom:
    """Unpickling this writes a marker file: proof that a pickle was opened."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (self.marker, "w"))


# --------------------------------------------------------------------------- Lightning


def test_lightning_dir_detected_and_read_from_its_save_dir(tmp_path: Path) -> None:
    run_dir = lightning_dir(tmp_path)
    assert detect(run_dir) == "lightning"
    run = open_run(tmp_path)  # the save_dir with one version_N is enough
    assert run.format == "lightning" and run.path == run_dir
    assert run.log.epochs == [0.0, 1.0, 2.0]  # Lightning's own numbers
    assert run.log.columns["val_loss"] == VAL and run.log.columns["train_loss"] == [1.0, 0.9, 0.8]
    assert run.tracked == [("val_loss", "min")] and run.monitor == ("val_loss", "min")
    assert run.best_epoch == 1
    assert run.config == {"lr": 0.01, "hidden": 8}


def test_lightning_best_checkpoint_green_by_basename_of_a_remote_path(tmp_path: Path) -> None:
    r = run_gate(lightning_dir(tmp_path), "best_checkpoints")
    assert r.passed, r.message
    assert "best-epoch=1-val_loss=0.5000.ckpt" in r.message


def test_lightning_best_checkpoint_red_when_the_file_is_gone(tmp_path: Path) -> None:
    r = run_gate(lightning_dir(tmp_path, delete_best=True), "best_checkpoints")
    assert not r.passed
    assert ("checkpoints/best-epoch=1-val_loss=0.5000.ckpt: not found; "
            "ModelCheckpoint(monitor='val_loss') names it as its best_model_path") in r.message


def test_lightning_best_checkpoint_red_when_no_callback_tracks_the_metric(tmp_path: Path) -> None:
    r = run_gate(lightning_dir(tmp_path), "best_checkpoints", {"metrics": ["val_loss", "val_recall_1"]})
    assert not r.passed
    assert "no ModelCheckpoint monitors 'val_recall_1' (monitors: val_loss)" in r.message


def test_lightning_best_checkpoint_red_when_the_score_is_not_the_logged_best(tmp_path: Path) -> None:
    r = run_gate(lightning_dir(tmp_path, best_score=0.55), "best_checkpoints")
    assert not r.passed and "best val_loss = 0.550; needs 0.500" in r.message


def test_lightning_softmax_strips_the_module_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    run = lightning_dir(tmp_path)
    params = {"model": "torch.nn:Linear", "kwargs": {"in_features": 4, "out_features": 3}, "input_shape": [5, 4]}
    r = run_gate(run, "checkpoint_softmax", {"checkpoint": "best_val_loss", **params})
    assert r.passed and "best-epoch=1" in r.message, r.message
    with pytest.raises(RunDirError, match="no ModelCheckpoint monitors 'val_acc'"):
        run_gate(run, "checkpoint_softmax", {"checkpoint": "best_val_acc", **params})


def test_lightning_callback_key_is_parsed_never_evaluated(tmp_path: Path) -> None:
    run = lightning_dir(tmp_path)
    marker = tmp_path / "evaluated"
    key = f"ModelCheckpoint{{'monitor': 'val_loss', 'mode': __import__('pathlib').Path('{marker}').touch()}}"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["callbacks"] = {key: next(iter(ckpt["callbacks"].values()))}
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    for p in (run / "checkpoints").glob("best-*.ckpt"):
        p.unlink()
    got = open_run(run)
    assert got.tracked == [("val_loss", "min")]
    assert not marker.exists()


def test_run_format_forces_a_reader(tmp_path: Path) -> None:
    run_dir = lightning_dir(tmp_path)
    with pytest.raises(RunDirError, match="trainer_state.json: not found"):
        _ = open_run(run_dir, "huggingface").log
    with pytest.raises(RunDirError, match="--run-format 'caffe'"):
        open_run(run_dir, "caffe")


# --------------------------------------------------------------------------- Hugging Face


def test_hf_dir_detected_and_read(tmp_path: Path) -> None:
    out = hf_dir(tmp_path)
    run = open_run(out)
    assert run.format == "huggingface"
    assert run.log.epochs == [1.0, 2.0, 3.0]
    assert run.log.columns["eval_loss"] == [0.9, 0.4, 0.6]
    assert run.tracked == [("eval_loss", "min")] and run.best_epoch == 2


def test_hf_best_checkpoint_green_with_a_metric_map(tmp_path: Path) -> None:
    out = hf_dir(tmp_path)
    r = run_gate(out, "best_checkpoints", {"metrics": ["val_loss"]}, aliases={"val_loss": "eval_loss"})
    assert r.passed, r.message
    assert "checkpoint-20" in r.message


def test_hf_best_checkpoint_red_when_the_folder_is_gone(tmp_path: Path) -> None:
    r = run_gate(hf_dir(tmp_path, delete_best=True), "best_checkpoints", {"metrics": ["eval_loss"]})
    assert not r.passed
    assert "out/checkpoint-20: not found; " in r.message and "names it as best_model_checkpoint" in r.message


def test_hf_best_checkpoint_red_when_best_metric_is_another_metric(tmp_path: Path) -> None:
    out = hf_dir(tmp_path, best_of="eval_accuracy")
    assert open_run(out).tracked == [("eval_accuracy", "max")]
    r = run_gate(out, "best_checkpoints", {"metrics": ["eval_loss"]})
    assert not r.passed
    assert "checkpoint-30 is the best of 'eval_accuracy', not 'eval_loss'" in r.message


def test_hf_best_checkpoint_red_when_the_trainer_kept_none(tmp_path: Path) -> None:
    r = run_gate(hf_dir(tmp_path, null_best=True), "best_checkpoints", {"metrics": ["eval_loss"]})
    assert not r.passed and "best_model_checkpoint is null" in r.message


def test_hf_state_read_from_the_newest_checkpoint_without_save_state(tmp_path: Path) -> None:
    run = open_run(hf_dir(tmp_path, top_state=False))
    assert run.log.epochs == [1.0, 2.0, 3.0] and str(run.log.source).endswith("checkpoint-30/trainer_state.json")


def test_hf_softmax_from_safetensors_and_never_opens_training_args(tmp_path: Path) -> None:
    out = hf_dir(tmp_path)
    marker = tmp_path / "unpickled"
    (out / "training_args.bin").write_bytes(pickle.dumps(Boom(str(marker))))
    params = {"model": "torch.nn:Linear", "kwargs": {"in_features": 4, "out_features": 3}, "input_shape": [5, 4]}
    for checkpoint in ("best", "best_eval_loss", "final", "last"):
        r = run_gate(out, "checkpoint_softmax", {"checkpoint": checkpoint, **params})
        assert r.passed, r.message
    from pytest_mlgates.fingerprint import fingerprint

    fingerprint(out)
    for gate in ("finite_log", "log_complete", "best_checkpoints"):
        try:
            run_gate(out, gate)
        except Exception:  # noqa: BLE001, S110 - only the marker matters here
            pass
    assert not marker.exists()


def test_hf_corrupt_safetensors_is_one_line(tmp_path: Path) -> None:
    out = hf_dir(tmp_path)
    (out / "checkpoint-20" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(RunDirError, match=r"checkpoint-20/model.safetensors: not a loadable safetensors file") as exc:
        open_run(out).checkpoint("best")
    assert "\n" not in str(exc.value)


def test_hf_missing_metric_name_in_log_is_a_clear_red(tmp_path: Path) -> None:
    r = run_gate(hf_dir(tmp_path), "best_checkpoints", {"metrics": ["val_loss"]})
    assert not r.passed and "tracked metric 'val_loss' is not a logged column" in r.message


@pytest.mark.parametrize("best", ["/elsewhere/..", "..", "/", "out/."])
def test_hf_best_model_checkpoint_cannot_leave_the_run_dir(tmp_path: Path, best: str) -> None:
    out = hf_dir(tmp_path)
    state = json.loads((out / "trainer_state.json").read_text())
    state["best_model_checkpoint"] = best
    (out / "trainer_state.json").write_text(json.dumps(state))
    r = run_gate(out, "best_checkpoints", {"metrics": ["eval_loss"]})
    assert not r.passed and "names no checkpoint folder" in r.message
    with pytest.raises(RunDirError, match="names no checkpoint folder"):
        open_run(out).checkpoint("best")


def test_hf_best_model_checkpoint_symlink_out_is_refused(tmp_path: Path) -> None:
    out = hf_dir(tmp_path, delete_best=True)
    outside = tmp_path / "outside"
    (out / "checkpoint-30").rename(outside)
    (out / "checkpoint-20").symlink_to(outside, target_is_directory=True)
    r = run_gate(out, "best_checkpoints", {"metrics": ["eval_loss"]})
    assert not r.passed and "symlink leads outside" in r.message


@pytest.mark.slow
def test_load_model_fixture_on_a_lightning_run(tmp_path: Path, pytester: pytest.Pytester) -> None:
    run = lightning_dir(tmp_path)
    pytester.makepyfile(test_lt="""
        import pytest
        import torch

        @pytest.mark.mlgates("lightning_best_loads")
        def test_best(run, load_model):
            assert run.format == "lightning"
            net = load_model("best_val_loss", model="torch.nn:Linear",
                             kwargs={"in_features": 4, "out_features": 3})
            assert not net.training and net(torch.zeros(2, 4)).shape == (2, 3)
            with pytest.raises(Exception, match="weights do not fit"):
                load_model("best_val_loss", model="torch.nn:Linear",
                           kwargs={"in_features": 5, "out_features": 3})
    """)
    result = pytester.runpytest_subprocess("--run-dir", str(run), "-p", "no:cacheprovider", "--mlgates-archive=off")
    result.assert_outcomes(passed=1)


@pytest.mark.slow
def test_run_format_option_in_a_session(tmp_path: Path, pytester: pytest.Pytester) -> None:
    run = lightning_dir(tmp_path)
    pytester.makefile(".gates.yaml", g="title: t\nexit_criteria:\n  - name: no_nan\n    gate: finite_log\n")
    common = ("--run-dir", str(run), "-p", "no:cacheprovider", "--mlgates-archive=off")
    pytester.runpytest_subprocess(*common).assert_outcomes(passed=1)
    pytester.runpytest_subprocess(*common, "--run-format", "lightning").assert_outcomes(passed=1)
    forced = pytester.runpytest_subprocess(*common, "--run-format", "huggingface")
    forced.assert_outcomes(failed=1)
    forced.stdout.fnmatch_lines(["*version_0/trainer_state.json: not found*"])
    bad = pytester.runpytest_subprocess(*common, "--run-format", "caffe")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--run-format*invalid choice*caffe*"])


def test_best_checkpoints_without_metrics_on_a_run_that_tracks_none(tmp_path: Path) -> None:
    from pytest_mlgates.errors import GateFailure

    with pytest.raises(GateFailure, match=r"out: a huggingface run with no best_model_checkpoint .* give metrics:"):
        run_gate(hf_dir(tmp_path, null_best=True), "best_checkpoints")


def test_resume_point_of_a_lightning_run(tmp_path: Path) -> None:
    run = lightning_dir(tmp_path)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt.update(optimizer_states=[{"state": {}, "param_groups": []}], loops={"fit_loop": {}})
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    r = run_gate(run, "resume_point")
    assert r.passed and "last.ckpt: epoch 2 with model, optimizer, loops state (no RNG state" in r.message, r.message
    del ckpt["optimizer_states"]
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    r = run_gate(run, "resume_point")
    assert not r.passed and "last.ckpt: no optimizer state" in r.message
    ckpt.update(optimizer_states=[{"state": {}}], epoch=1, global_step=20)  # saved an epoch early
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    r = run_gate(run, "resume_point")
    assert not r.passed and "epoch = 1; needs 2" in r.message, r.message


def test_resume_point_of_a_lightning_checkpoint_saved_after_fit(tmp_path: Path) -> None:
    """issue 17: ``trainer.save_checkpoint`` after ``fit`` writes ``epoch`` one past the last
    logged epoch (the loop finished it); its global_step still places it at the log's last
    epoch, so a healthy run is GREEN (it read ``last.ckpt: epoch = 9; needs 8``)."""
    run = lightning_dir(tmp_path)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt.update(optimizer_states=[{"state": {}, "param_groups": []}], loops={"fit_loop": {}}, epoch=3)
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    r = run_gate(run, "resume_point")
    assert r.passed and "last.ckpt: epoch 2 with" in r.message, r.message
    ckpt.update(global_step=20)  # a step the log places at epoch 1: a stale resume point
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    r = run_gate(run, "resume_point")
    assert not r.passed and "last.ckpt: epoch = 1; needs 2" in r.message, r.message


def test_resume_point_of_an_hf_run_never_opens_its_pickles(tmp_path: Path) -> None:
    out = hf_dir(tmp_path)
    marker = tmp_path / "unpickled"
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (out / "checkpoint-30" / name).write_bytes(pickle.dumps(Boom(str(marker))))
    r = run_gate(out, "resume_point")
    assert r.passed and "checkpoint-30: epoch 3 with model, optimizer, scheduler, rng, trainer state" in r.message
    (out / "checkpoint-30" / "rng_state.pth").unlink()
    r = run_gate(out, "resume_point")
    assert not r.passed and "checkpoint-30: no rng state" in r.message
    assert not marker.exists()


def test_hf_sharded_safetensors_are_joined(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    out = hf_dir(tmp_path)
    folder = out / "checkpoint-20"
    state = _tiny_state("")
    (folder / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[:1], "model-00002-of-00002.safetensors": names[1:]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(folder / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = open_run(out).checkpoint("best")["state_dict"]
    assert sorted(loaded) == names and all(torch.equal(loaded[k], state[k]) for k in names)
    params = {"model": "torch.nn:Linear", "kwargs": {"in_features": 4, "out_features": 3}, "input_shape": [5, 4]}
    assert run_gate(out, "checkpoint_softmax", {"checkpoint": "best", **params}).passed


def test_artifact_loads_an_hf_checkpoint_folder(tmp_path: Path) -> None:
    out = hf_dir(tmp_path)
    loads = {"softmax": True, "model": "torch.nn:Linear", "kwargs": {"in_features": 4, "out_features": 3},
             "input_shape": [5, 4]}
    r = run_gate(out, "artifact", {"path": "checkpoint-20", "loads": loads})
    assert r.passed and "checkpoint-20: loads and gives a valid softmax over 3 classes" in r.message
    from pytest_mlgates.errors import GateFailure

    with pytest.raises(GateFailure, match=r"checkpoint-20: weights do not fit torch.nn:Linear"):
        run_gate(out, "artifact", {"path": "checkpoint-20",
                                   "loads": {**loads, "kwargs": {"in_features": 5, "out_features": 3}}})


def test_check_expressions_use_lightnings_own_epoch_numbers(tmp_path: Path) -> None:
    """``epoch[n]`` selects by the log's own number: Lightning's first epoch is epoch[0]."""
    from pytest_mlgates.expr import compile_check

    env = open_run(lightning_dir(tmp_path)).eval_env()
    assert compile_check("epoch[0].val_loss == 0.9 and epoch[2].val_loss == 0.6").evaluate(env).passed
    outcome = compile_check("final.val_loss < 0.5").evaluate(env)
    assert not outcome.passed and outcome.text == "val_loss = 0.600 at epoch 2 (final); needs < 0.5"
    assert compile_check("best.val_loss == 0.5").evaluate(env).passed


def hf_tied_dir(root: Path, *, best_step: int = 40) -> Path:
    """An HF run with metric_for_best_model='f1_macro' whose F1 (and accuracy) tie at 1.0
    from epoch 4 on: the Trainer keeps checkpoint-40, the first epoch at the maximum
    (``operator.gt``: a tie never replaces the best)."""
    from safetensors.torch import save_file

    out = root / "out"
    out.mkdir()
    f1 = [0.6, 0.8, 0.95, 1.0, 1.0, 1.0]
    acc = [0.7, 0.85, 0.97, 1.0, 1.0, 1.0]
    history: list[dict[str, Any]] = []
    for i, (f, a) in enumerate(zip(f1, acc), start=1):
        history.append({"epoch": float(i), "step": 10 * i, "loss": 1.0 / i, "learning_rate": 0.01})
        history.append({"epoch": float(i), "step": 10 * i, "eval_loss": 0.5 / i, "eval_accuracy": a,
                        "eval_f1_macro": f, "eval_runtime": 0.1})
    state = {"epoch": 6.0, "global_step": 60, "log_history": history, "best_metric": 1.0,
             "best_global_step": best_step, "best_model_checkpoint": f"/x/out/checkpoint-{best_step}"}
    for step in (best_step, 60):
        ck = out / f"checkpoint-{step}"
        ck.mkdir(exist_ok=True)
        save_file(_tiny_state(""), str(ck / "model.safetensors"))
        (ck / "trainer_state.json").write_text(json.dumps(dict(state, epoch=step / 10, global_step=step)))
    (out / "trainer_state.json").write_text(json.dumps(state))
    return out


def test_hf_best_checkpoint_green_when_two_metrics_tie_at_the_best_step(tmp_path: Path) -> None:
    """issue 17: best_metric 1.0 at checkpoint-40 is both eval_accuracy and eval_f1_macro;
    it is F1's best by the Trainer's own rule (first epoch at the maximum), so GREEN -- it
    was RED: ``checkpoint-40 is the best of 'eval_accuracy', not 'eval_f1_macro'``."""
    out = hf_tied_dir(tmp_path)
    r = run_gate(out, "best_checkpoints", {"metrics": ["eval_f1_macro"]})
    assert r.passed, r.message
    r = run_gate(out, "best_checkpoints", {"metrics": [{"metric": "val_f1", "mode": "max"}]},
                 aliases={"val_f1": "eval_f1_macro"})
    assert r.passed, r.message
    assert open_run(out).checkpoint_path("best_eval_f1_macro").name == "checkpoint-40"


def test_hf_best_checkpoint_red_when_a_tie_is_not_the_trainers_first(tmp_path: Path) -> None:
    """checkpoint-50 also holds 1.0, but the Trainer keeps the first epoch at the maximum
    (40): a best_model_checkpoint at 50 is not what the Trainer's rule gives for either."""
    out = hf_tied_dir(tmp_path, best_step=50)
    r = run_gate(out, "best_checkpoints", {"metrics": ["eval_f1_macro"]})
    assert not r.passed
    assert "checkpoint-50: epoch = 5; needs 4, the best eval_f1_macro (max) epoch" in r.message, r.message
    assert "epoch 5 ties at 1.000; the first epoch at the best value is kept" in r.message, r.message
