"""Checkpoint gates on synthetic run dirs holding real torch checkpoints of a real engine
model: best_checkpoints, resume_point, checkpoint_softmax (engine and foreign models)."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from gate_helpers import make_run, run_gate

from pytest_mlgates.errors import GateFailure, MlgatesError, RunDirError


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("good") / "run")


@pytest.fixture
def copy(good: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "run"))


def _resave(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    import torch

    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


# --------------------------------------------------------------------------- best_checkpoints


def test_best_checkpoints_green(good: Path) -> None:
    r = run_gate(good, "best_checkpoints")
    assert r.passed, r.message
    assert r.value == "2 files"


def test_best_checkpoints_missing_file_is_named(copy: Path) -> None:
    (copy / "checkpoints" / "best_val_macro_f1.pt").unlink()
    r = run_gate(copy, "best_checkpoints")
    assert not r.passed
    assert r.message.endswith("checkpoints/best_val_macro_f1.pt: not found; needs one best checkpoint "
                              "per tracked metric (val_macro_f1, max)")


def test_best_checkpoints_wrong_epoch_value_and_monitor(copy: Path) -> None:
    _resave(copy / "checkpoints" / "best_val_loss.pt", lambda c: c.update(epoch=4))
    r = run_gate(copy, "best_checkpoints")
    assert not r.passed and "best_val_loss.pt: epoch = 4; needs 3, the best val_loss (min) epoch" in r.message
    _resave(copy / "checkpoints" / "best_val_loss.pt",
            lambda c: c.update(epoch=3, monitor={"metric": "val_loss", "mode": "min", "value": 0.5}))
    r = run_gate(copy, "best_checkpoints")
    assert not r.passed and "best_val_loss.pt: monitor.value = 0.500; needs 0.450" in r.message
    _resave(copy / "checkpoints" / "best_val_loss.pt", lambda c: c.update(monitor=None))
    assert "monitor names no metric; needs 'val_loss'" in run_gate(copy, "best_checkpoints").message
    # model-checkpoint/2: the monitor maps every metric the checkpoint is the best for
    _resave(copy / "checkpoints" / "best_val_loss.pt",
            lambda c: c.update(monitor={"val_macro_f1": {"mode": "max", "value": 0.9}}))
    assert "monitor names val_macro_f1; needs 'val_loss'" in run_gate(copy, "best_checkpoints").message
    _resave(copy / "checkpoints" / "best_val_loss.pt",
            lambda c: c.update(monitor={"val_macro_f1": {"mode": "max", "value": 0.9},
                                        "val_loss": {"mode": "min", "value": 0.45}}))
    assert run_gate(copy, "best_checkpoints").passed


def test_best_checkpoints_tracked_name_not_logged(good: Path) -> None:
    r = run_gate(good, "best_checkpoints", {"metrics": ["val_loss", {"metric": "val_dice", "mode": "max"}]})
    assert not r.passed
    assert "tracked metric 'val_dice' is not a logged column" in r.message


def test_best_checkpoints_truncated_file(copy: Path) -> None:
    p = copy / "checkpoints" / "best_val_loss.pt"
    p.write_bytes(p.read_bytes()[:200])
    r = run_gate(copy, "best_checkpoints")
    assert not r.passed and "best_val_loss.pt: not a loadable checkpoint" in r.message


# --------------------------------------------------------------------------- resume_point


def test_resume_point(copy: Path) -> None:
    r = run_gate(copy, "resume_point")
    assert r.passed and r.value == "epoch 5"
    _resave(copy / "checkpoints" / "last.pt", lambda c: c.update(optimizer=None))
    r = run_gate(copy, "resume_point")
    assert not r.passed and "last.pt: no optimizer state" in r.message
    _resave(copy / "checkpoints" / "last.pt", lambda c: c.update(optimizer={"state": {}, "param_groups": [{}]}, epoch=4))
    r = run_gate(copy, "resume_point")
    assert not r.passed and "last.pt: epoch = 4; needs 5, the last epoch" in r.message
    import torch

    rows = torch.load(copy / "checkpoints" / "last.pt", weights_only=True)["history"]
    _resave(copy / "checkpoints" / "last.pt", lambda c: c.update(epoch=5, history=c["history"][:3]))
    assert "history has 3 rows; needs 5" in run_gate(copy, "resume_point").message
    # model-checkpoint/2 keeps the rows as one tensor
    from model.checkpoint import pack_history
    _resave(copy / "checkpoints" / "last.pt", lambda c: c.update(history=pack_history(rows[:3])))
    assert "history has 3 rows; needs 5" in run_gate(copy, "resume_point").message
    _resave(copy / "checkpoints" / "last.pt", lambda c: c.update(history=pack_history(rows)))
    assert run_gate(copy, "resume_point").passed
    (copy / "checkpoints" / "last.pt").unlink()
    assert run_gate(copy, "resume_point").message.endswith("last.pt: not found; needs a resume point")


# --------------------------------------------------------------------------- checkpoint_softmax


def test_checkpoint_softmax_green_on_real_val_samples(good: Path) -> None:
    r = run_gate(good, "checkpoint_softmax")
    assert r.passed
    assert r.message.endswith("checkpoints/best_val_loss.pt: loads and gives a valid softmax over 2 classes on 16 val samples")


def test_checkpoint_softmax_wrong_shape_weights(copy: Path) -> None:
    import torch

    def shrink(c: dict) -> None:
        key = next(iter(c["model"]))
        c["model"][key] = torch.zeros(1, 1)
    _resave(copy / "checkpoints" / "final.pt", shrink)
    with pytest.raises(GateFailure, match=r"final.pt: weights do not fit the model of engine run \S+.model_from_checkpoint \(.*size mismatch"):
        run_gate(copy, "checkpoint_softmax", {"checkpoint": "final"})


def test_checkpoint_softmax_nan_weights_are_red(copy: Path) -> None:
    def poison(c: dict) -> None:
        for v in c["model"].values():
            v.fill_(float("nan"))
    _resave(copy / "checkpoints" / "final.pt", poison)
    r = run_gate(copy, "checkpoint_softmax", {"checkpoint": "final"})
    assert not r.passed and "= nan in 16 of 16 rows" in r.message


def test_checkpoint_softmax_foreign_model_with_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    pkg = tmp_path / "code"
    pkg.mkdir()
    (pkg / "tinynets.py").write_text(textwrap.dedent("""
        import torch
        class Tiny(torch.nn.Module):
            def __init__(self, n_in=4, n_out=3):
                super().__init__()
                self.fc = torch.nn.Linear(n_in, n_out)
            def forward(self, x):
                return self.fc(x.flatten(1))
    """))
    monkeypatch.syspath_prepend(str(pkg))
    sys.modules.pop("tinynets", None)
    import tinynets  # type: ignore[import-not-found]

    run = tmp_path / "lightning"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,step,val_loss\n0,1,0.5\n")
    net = tinynets.Tiny(4, 3)
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}, "epoch": 0},
               run / "epoch=0-step=1.ckpt")
    params = {"checkpoint": "epoch=0-step=1.ckpt", "model": "tinynets:Tiny", "kwargs": {"n_in": 4, "n_out": 3},
              "input_shape": [2, 4]}
    r = run_gate(run, "checkpoint_softmax", params)
    assert r.passed and "valid softmax over 3 classes on random inputs" in r.message
    with pytest.raises(GateFailure, match=r"weights do not fit tinynets:Tiny"):
        run_gate(run, "checkpoint_softmax", {**params, "kwargs": {"n_in": 5, "n_out": 3}})
    with pytest.raises(GateFailure, match=r"cannot import"):
        run_gate(run, "checkpoint_softmax", {**params, "model": "tinynets:Nope"})
    # a class that builds something other than a torch module (found by the fuzz test)
    with pytest.raises(GateFailure, match=r"collections:OrderedDict built a OrderedDict, not a torch.nn.Module"):
        run_gate(run, "checkpoint_softmax", {**params, "model": "collections:OrderedDict", "kwargs": {}})
    r = run_gate(run, "artifact", {"path": "epoch=0-step=1.ckpt",
                                   "loads": {"softmax": True, "model": "tinynets:Tiny", "input_shape": [1, 4]}})
    assert r.passed


def test_checkpoint_gates_on_an_empty_checkpoints_dir(tmp_path: Path) -> None:
    d = make_run(tmp_path / "r", checkpoints=False)
    for gate in ("checkpoint_softmax", "resume_point", "best_checkpoints", "reproduces"):
        try:
            result = run_gate(d, gate)
        except MlgatesError as err:
            message = str(err)
        else:
            assert not result.passed
            message = result.message
        assert "checkpoints" in message and "internal error" not in message, (gate, message)


def test_reproduces_is_red_for_weights_that_do_not_give_the_logged_numbers(good: Path) -> None:
    # the synthetic log's numbers were made up; the random weights cannot reproduce them
    r = run_gate(good, "reproduces")
    assert not r.passed
    assert "re-evaluated from" in r.message and "needs |difference| <= 0.0001" in r.message


def test_truncated_checkpoint_is_a_run_dir_error(copy: Path) -> None:
    p = copy / "checkpoints" / "final.pt"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(RunDirError, match="checkpoints/final.pt: not a loadable checkpoint"):
        run_gate(copy, "checkpoint_softmax", {"checkpoint": "final"})


# --------------------------------------------------------------------------- conventions


def test_best_checkpoints_names_every_wrong_metric_in_its_one_line(copy: Path) -> None:
    """Both best files gone: both named, so the user learns them without a rerun (issue 17)."""
    (copy / "checkpoints" / "best_val_loss.pt").unlink()
    (copy / "checkpoints" / "best_val_macro_f1.pt").unlink()
    r = run_gate(copy, "best_checkpoints")
    assert not r.passed and r.value == "2 of 2 wrong"
    assert "best_val_loss.pt: not found" in r.message and "best_val_macro_f1.pt: not found" in r.message
    assert "more)" not in r.message and "\n" not in r.message


@pytest.mark.parametrize("key", ["model", "state_dict", "model_state_dict", None])
def test_state_dict_of_finds_the_weights_under_every_convention(key: str | None) -> None:
    import torch

    from pytest_mlgates.checkpoint_io import state_dict_of

    weights = torch.nn.Linear(3, 2).state_dict()
    ckpt = dict(weights) if key is None else {"epoch": 4, key: weights, "optimizer_state_dict": {"state": {}}}
    assert state_dict_of(ckpt, "c.pt") is (ckpt if key is None else weights)
    with pytest.raises(RunDirError, match=r"^c.pt: no model weights \(no state dict under state_dict, "
                                          r"model_state_dict, model"):
        state_dict_of({"epoch": 4, "note": "no weights"}, "c.pt")


def test_resume_point_reads_a_hand_written_loops_keys(copy: Path) -> None:
    """model_state_dict / optimizer_state_dict / scheduler_state_dict / rng_state: the keys
    of the common hand-written loop are the same state as the engine's own."""
    renames = {"model": "model_state_dict", "optimizer": "optimizer_state_dict",
               "scheduler": "scheduler_state_dict", "rng": "rng_state"}

    def rename(c: dict) -> None:  # type: ignore[type-arg]
        for old, new in renames.items():
            c[new] = c.pop(old)
    _resave(copy / "checkpoints" / "last.pt", rename)
    r = run_gate(copy, "resume_point")
    assert r.passed, r.message
    _resave(copy / "checkpoints" / "last.pt", lambda c: c.pop("optimizer_state_dict"))
    r = run_gate(copy, "resume_point")
    assert not r.passed and "last.pt: no optimizer state; needs model, optimizer, scheduler, rng" in r.message
