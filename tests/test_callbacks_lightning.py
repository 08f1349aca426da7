"""PyTorch Lightning: ``GatesCallback`` on real training, and ``PreflightSubject.from_lightning``.

The runs are real Lightning fits of the digits MLP (tests/trainers/lightning_gated_run.py,
a subprocess each, seconds): a run whose minority class collapses from epoch 2 is stopped
within two epochs of ``after_epoch``, its stop recorded in ``mlgates_inflight.json``, and the
plugin's own acceptance gates then find its resume point and its log in agreement; a healthy
run trains to the end.  The adapter is tested the way a user meets it: a conftest that
returns ``PreflightSubject.from_lightning(module, datamodule, trainer)`` and tests on it, in a
real pytest session.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import TRAINER_SCRIPTS_DIR, gated_script_runs, need_package, trainer_env

INFLIGHT_GATES = """\
title: in-flight gates of the digits run
exit_criteria:
  - name: no_nan
    gate: finite_log
  - name: minority_not_collapsed
    gate: class_recall
    classes: [3]
  - name: val_loss_was_sane
    check: "min(val_loss) < 5"
"""

# what acceptance says about a stopped run: consistent files, and the criterion still RED
ACCEPTANCE_GATES = """\
title: acceptance of the digits run
exit_criteria:
  - name: resume_point
    gate: resume_point
  - name: log_complete
    gate: log_complete
  - name: minority_not_collapsed
    gate: class_recall
    classes: [3]
"""


def gated_run(tmp_path: Path, *args: str) -> tuple[dict[str, Any], Path]:
    """Train tests/trainers/lightning_gated_run.py under INFLIGHT_GATES: (its summary, the run dir)."""
    need_package("lightning")
    gates = tmp_path / "inflight.gates.yaml"
    gates.write_text(INFLIGHT_GATES, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(TRAINER_SCRIPTS_DIR / "lightning_gated_run.py"), str(tmp_path / "out"),
                           "--gates", str(gates), *args],
                          capture_output=True, text=True, timeout=600, env=trainer_env(), cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-2]), Path(lines[-1])



@pytest.fixture(scope="session")
def gated_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], Path]]:
    """The collapsing and the healthy run of lightning_gated_run.py under INFLIGHT_GATES, trained in one
    process (its library imported once), once per session: label -> (summary, run dir)."""
    need_package("lightning")
    return gated_script_runs(tmp_path_factory, "lightning_gated_run.py", INFLIGHT_GATES, "rank0.json")


def acceptance(pytester: pytest.Pytester, run_dir: Path, gates: str = ACCEPTANCE_GATES) -> dict[str, str]:
    """criterion -> PASSED/FAILED from a real pytest session of ``gates`` on ``run_dir``."""
    path = pytester.path / "acceptance.gates.yaml"
    path.write_text(gates, encoding="utf-8")
    result = pytester.runpytest_subprocess(str(path), "--run-dir", str(run_dir), "-rA", "-p", "no:cacheprovider",
                                           "--mlgates-archive=off", timeout=300)
    out = result.stdout.str()
    assert "INTERNALERROR" not in out, out[-3000:]
    return {name: status for status, name in re.findall(r"^(PASSED|FAILED|ERROR) \S*::(\w+)\[", out, re.MULTILINE)}


@pytest.mark.slow
def test_a_collapsing_class_stops_the_run_and_the_stopped_run_is_consistent(
        gated_runs: dict[str, tuple[dict[str, Any], Path]], pytester: pytest.Pytester) -> None:
    summary, run_dir = gated_runs["collapsing"]
    verdict = summary["verdict"]
    assert verdict is not None and verdict["criterion"] == "minority_not_collapsed", summary
    # after_epoch and the verdict count completed epochs from 1; the message names the log's own
    # epoch, 0-based in Lightning's metrics.csv: the second epoch is "epoch 1"
    assert verdict["epoch"] == 2 and "val_recall_3 = 0.000 at epoch 1" in verdict["reason"]

    record = json.loads((run_dir / "mlgates_inflight.json").read_text(encoding="utf-8"))
    assert record["status"] == "aborted_by_gate" and record["criterion"] == "minority_not_collapsed"
    assert record["epoch"] == 2 and record["reason"] == verdict["reason"]

    from pytest_mlgates.formats import open_run

    run = open_run(run_dir)
    last_logged = int(run.log.epochs[-1])
    # within two epochs after after_epoch (the log counts from 0: after_epoch 1 is its epoch 0), of six
    assert 1 <= last_logged <= 0 + 2, run.log.epochs
    assert run.resume_state()[1] == last_logged  # last.ckpt holds the last logged epoch

    verdicts = acceptance(pytester, run_dir)
    assert verdicts == {"resume_point": "PASSED", "log_complete": "PASSED", "minority_not_collapsed": "FAILED"}


@pytest.mark.slow
def test_a_healthy_run_trains_to_the_end(gated_runs: dict[str, tuple[dict[str, Any], Path]],
                                          pytester: pytest.Pytester) -> None:
    summary, run_dir = gated_runs["healthy"]
    assert summary["verdict"] is None and summary["current_epoch"] == 4, summary
    assert not (run_dir / "mlgates_inflight.json").exists()
    verdicts = acceptance(pytester, run_dir)
    assert verdicts["log_complete"] == verdicts["minority_not_collapsed"] == "PASSED", verdicts


@pytest.mark.slow
def test_under_ddp_rank_zero_judges_and_every_rank_stops(tmp_path: Path) -> None:
    """Two CPU processes (DDP, gloo): rank 0 reads the run dir, both ranks get its verdict and
    stop at the same step -- a rank that did not would hang the other in its next all-reduce."""
    summary, run_dir = gated_run(tmp_path, "--collapse-from", "2", "--epochs", "6", "--devices", "2")
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]
    assert ranks[0] == ranks[1] == summary, ranks
    assert summary["verdict"]["criterion"] == "minority_not_collapsed"
    assert json.loads((run_dir / "mlgates_inflight.json").read_text(encoding="utf-8"))["epoch"] == 2


# --------------------------------------------------------------------------- in one user session

CONFTEST = '''
import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning_digits import DigitsDataModule, DigitsModule

from pytest_mlgates import PreflightSubject

warnings.filterwarnings("ignore", message=".*does not have many workers.*")
torch.set_num_threads(1)


def make_trainer(*monitors, accumulate=4):
    callbacks = [ModelCheckpoint(monitor=monitors[0]), *(EarlyStopping(monitor=m) for m in monitors[1:])]
    return pl.Trainer(max_epochs=1, accumulate_grad_batches=accumulate, logger=False, callbacks=callbacks,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")


@pytest.fixture(scope="session")
def mlgates_subject():
    # a monitor typo: EarlyStopping watches val_dice, which validation never logs
    return PreflightSubject.from_lightning(DigitsModule(), DigitsDataModule(), make_trainer("val_loss", "val_dice"),
                                           loss=torch.nn.CrossEntropyLoss())
'''

USER_TESTS = '''
import math
import textwrap

import pytest
import torch
from conftest import make_trainer
from lightning_digits import DigitsDataModule, DigitsModule

from pytest_mlgates import PreflightSubject, SubjectError
from pytest_mlgates.errors import GateFileError
from pytest_mlgates.inflight import InflightGateWarning, Verdict
from pytest_mlgates.lightning import GatesCallback

LOGGED = {"val_loss", "val_acc", "val_min_recall", *(f"val_recall_{c}" for c in range(10))}


def test_fields_come_from_the_trainer_and_the_datamodule(mlgates_subject):
    s = mlgates_subject
    assert sorted(s.monitors) == ["val_dice", "val_loss"]
    assert s.accumulate == 4 and s.num_classes == 10
    assert sorted(s.loaders) == ["train", "val"]
    x, y = next(iter(s.loaders["train"]))
    assert tuple(x.shape) == (64, 64) and tuple(y.shape) == (64,)


def test_evaluate_is_one_validation_pass_returning_the_logged_names(mlgates_subject):
    metrics = mlgates_subject.evaluate(mlgates_subject.model())
    # the names ModelCheckpoint matches monitors against; val_dice is not among them, so the
    # names training_step logs are looked for too
    assert set(metrics) == LOGGED | {"train_loss"}
    assert all(math.isfinite(v) for v in metrics.values())
    assert "val_dice" in mlgates_subject.monitors and "val_dice" not in metrics  # the typo shows


def test_a_monitor_logged_in_training_step_is_found():
    s = PreflightSubject.from_lightning(DigitsModule(), DigitsDataModule(), make_trainer("train_loss"),
                                        loss=torch.nn.CrossEntropyLoss())
    assert s.monitors == ["train_loss"]
    assert set(s.evaluate(s.model())) == LOGGED | {"train_loss"}
    s = PreflightSubject.from_lightning(DigitsModule(), DigitsDataModule(), make_trainer("val_loss"),
                                        loss=torch.nn.CrossEntropyLoss())
    assert set(s.evaluate(s.model())) == LOGGED  # every monitor found: validation alone


def test_the_model_factory_gives_fresh_weights_each_call(mlgates_subject):
    a, b = mlgates_subject.model(), mlgates_subject.model()
    assert isinstance(a, DigitsModule) and a is not b
    assert not torch.equal(a.model.net[0].weight, b.model.net[0].weight)


class Recording(torch.optim.SGD):
    def __init__(self, params, seen):
        super().__init__(params, lr=0.0)
        self.seen, self.steps = seen, []

    def step(self, closure=None):
        self.steps.append(self.seen[0])


def steps_of(subject, accumulate, n=8):
    batches = [b for _, b in zip(range(n), subject.loaders["train"])]
    seen = [0]

    def counted():
        for batch in batches:
            seen[0] += 1
            yield batch

    model = subject.model()
    optimizer = Recording(model.parameters(), seen)
    subject.train_epoch(model, counted(), optimizer, accumulate)
    return optimizer.steps


def test_train_epoch_steps_once_per_accumulate_batches(mlgates_subject):
    assert steps_of(mlgates_subject, 4) == [4, 8]


def test_train_epoch_runs_manual_optimization_through_the_module():
    # the module steps every batch itself: accumulate=4 is not wired, and it shows
    s = PreflightSubject.from_lightning(DigitsModule(manual_steps_every=1), DigitsDataModule(),
                                        loss=torch.nn.CrossEntropyLoss(), accumulate=4)
    assert steps_of(s, 4) == [1, 2, 3, 4, 5, 6, 7, 8]
    s = PreflightSubject.from_lightning(DigitsModule(manual_steps_every=4), DigitsDataModule(),
                                        loss=torch.nn.CrossEntropyLoss(), accumulate=4)
    assert steps_of(s, 4) == [4, 8]


def test_what_cannot_be_found_is_one_line_naming_the_keyword():
    with pytest.raises(SubjectError) as err:
        PreflightSubject.from_lightning(DigitsModule(), DigitsDataModule())
    assert "pass loss=" in str(err.value) and "\\n" not in str(err.value)
    with pytest.raises(SubjectError, match="no train_dataloader.*pass datamodule="):
        PreflightSubject.from_lightning(DigitsModule(), loss=torch.nn.CrossEntropyLoss())
    with pytest.raises(SubjectError, match="unknown field 'monitor' .did you mean monitors"):
        PreflightSubject.from_lightning(DigitsModule(), DigitsDataModule(), monitor=["val_loss"])


def test_a_broken_gate_file_fails_when_the_callback_is_made(tmp_path):
    bad = tmp_path / "bad.gates.yaml"
    bad.write_text("exit_criteria:\\n  - name: x\\n    check: 'final.val_loss <'\\n")
    with pytest.raises(GateFileError) as err:
        GatesCallback(bad)
    assert str(bad) in str(err.value) and "\\n" not in str(err.value)


def test_a_criterion_not_judgeable_yet_warns_and_the_run_goes_on(tmp_path):
    gates = tmp_path / "later.gates.yaml"
    gates.write_text("exit_criteria:\\n  - name: later\\n    check: 'epoch[5].val_loss < 9'\\n")
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    callback = GatesCallback(gates)
    trainer = pl.Trainer(max_epochs=2, logger=CSVLogger(tmp_path), callbacks=[callback], accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with pytest.warns(InflightGateWarning, match="criterion later not judged"):
        trainer.fit(DigitsModule(), datamodule=DigitsDataModule())
    assert trainer.current_epoch == 2 and callback.verdict is None
    assert callback.gates.run_dir == tmp_path / "lightning_logs" / "version_0"


class FakeStrategy:
    def __init__(self, verdict):
        self.verdict = verdict

    def broadcast(self, obj, src=0):
        assert obj is None, "a rank other than 0 judged"
        return self.verdict


class FakeTrainer:
    """Rank 1 of a DDP run: rank 0's verdict arrives through strategy.broadcast."""

    def __init__(self, verdict):
        self.is_global_zero, self.strategy, self.loggers = False, FakeStrategy(verdict), []
        self.current_epoch, self.global_step, self.should_stop = 2, 40, False


def test_a_rank_other_than_zero_never_reads_the_run_and_stops_on_rank_zeros_verdict(tmp_path, monkeypatch):
    gates = tmp_path / "g.gates.yaml"
    gates.write_text("exit_criteria:\\n  - name: a\\n    check: 'final.val_loss < 1'\\n")
    callback = GatesCallback(gates)
    monkeypatch.setattr(callback.gates, "check", lambda epoch: pytest.fail("rank 1 judged"))
    trainer = FakeTrainer(Verdict(red=True, epoch=2, reason="criterion a: ...", criterion="a"))
    callback.on_train_epoch_start(trainer, None)
    assert callback.verdict.criterion == "a" and not trainer.should_stop  # not before a step
    trainer.global_step += 1
    callback.on_train_batch_end(trainer, None, None, None, 0)
    assert trainer.should_stop
'''


@pytest.mark.slow
def test_the_subject_and_callback_in_a_user_session(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    need_package("lightning")
    monkeypatch.setenv("PYTHONPATH", trainer_env()["PYTHONPATH"])
    pytester.makeconftest(textwrap.dedent(CONFTEST))
    pytester.makepyfile(test_user=textwrap.dedent(USER_TESTS))
    result = pytester.runpytest_subprocess("test_user.py", "-p", "no:cacheprovider", "-q", timeout=600)
    result.assert_outcomes(passed=USER_TESTS.count("\ndef test_"))


def test_importing_the_plugin_imports_no_trainer_library() -> None:
    probe = ("import sys, pytest_mlgates, pytest_mlgates.subject, pytest_mlgates.inflight, pytest_mlgates.plugin\n"
             "print([m for m in ('lightning', 'pytorch_lightning', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_without_lightning_the_adapter_says_what_to_install() -> None:
    probe = ("import sys\nsys.modules['lightning'] = sys.modules['pytorch_lightning'] = None\n"
             "try:\n    import pytest_mlgates.lightning\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "pytest_mlgates.lightning needs PyTorch Lightning: pip install lightning"
    probe = ("import sys\nsys.modules['lightning'] = sys.modules['pytorch_lightning'] = None\n"
             "from pytest_mlgates import PreflightSubject\n"
             "try:\n    PreflightSubject.from_lightning(object())\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "PreflightSubject.from_lightning needs PyTorch Lightning: pip install lightning"
