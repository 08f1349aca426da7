"""Hugging Face Trainer: ``GatesCallback`` on real training, and ``PreflightSubject.from_hf_trainer``.

The runs are real ``Trainer.train()`` calls on the digits MLP (tests/trainers/hf_gated_run.py,
a subprocess each, seconds): a run whose minority class collapses from epoch 2 is stopped
in the save of that epoch, recorded in ``mlgates_inflight.json``, and the plugin's own
acceptance gates then find its resume point (the newest ``checkpoint-N/``) and its log in
agreement; a healthy run trains to the end.  The adapter is tested the way a user meets it:
a conftest returning ``PreflightSubject.from_hf_trainer(trainer)`` for a tiny BERT built from
a config (no download), and tests on it, in a real pytest session.
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

from conftest import gated_script_runs, need_package, trainer_env

# the HF Trainer logs eval_<name> and the training loss as loss
ALIASES = """\
metrics:
  val_loss: eval_loss
  train_loss: loss
  val_recall_3: eval_recall_3
"""

INFLIGHT_GATES = ALIASES + """\
exit_criteria:
  - name: no_nan
    gate: finite_log
  - name: minority_not_collapsed
    gate: class_recall
    classes: [3]
  - name: val_loss_was_sane
    check: "min(val_loss) < 5"
"""

ACCEPTANCE_GATES = ALIASES + """\
exit_criteria:
  - name: resume_point
    gate: resume_point
  - name: log_complete
    gate: log_complete
  - name: minority_not_collapsed
    gate: class_recall
    classes: [3]
"""


@pytest.fixture(scope="session")
def gated_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], Path]]:
    """The collapsing and the healthy run of hf_gated_run.py under INFLIGHT_GATES, trained in one
    process (its library imported once), once per session: label -> (summary, run dir)."""
    need_package("transformers")
    return gated_script_runs(tmp_path_factory, "hf_gated_run.py", INFLIGHT_GATES, "summary.json")


def acceptance(pytester: pytest.Pytester, run_dir: Path) -> dict[str, str]:
    """criterion -> PASSED/FAILED from a real pytest session of ACCEPTANCE_GATES on ``run_dir``."""
    path = pytester.path / "acceptance.gates.yaml"
    path.write_text(ACCEPTANCE_GATES, encoding="utf-8")
    result = pytester.runpytest_subprocess(str(path), "--run-dir", str(run_dir), "-rA", "-p", "no:cacheprovider",
                                           "--mlgates-archive=off", timeout=300)
    out = result.stdout.str()
    assert "INTERNALERROR" not in out, out[-3000:]
    return {name: status for status, name in re.findall(r"^(PASSED|FAILED|ERROR) \S*::(\w+)\[", out, re.MULTILINE)}


@pytest.mark.slow
def test_a_collapsing_class_stops_the_run_in_that_epochs_save(gated_runs: dict[str, tuple[dict[str, Any], Path]],
                                          pytester: pytest.Pytester) -> None:
    summary, run_dir = gated_runs["collapsing"]
    verdict = summary["verdict"]
    assert verdict is not None and verdict["criterion"] == "minority_not_collapsed", summary
    assert verdict["epoch"] == 2 and "eval_recall_3 = 0.000 at epoch 2" in verdict["reason"]
    assert summary["epoch"] == 2.0  # stopped right after the save of epoch 2, of six

    record = json.loads((run_dir / "mlgates_inflight.json").read_text(encoding="utf-8"))
    assert record["status"] == "aborted_by_gate" and record["criterion"] == "minority_not_collapsed"
    assert record["epoch"] == 2 and record["reason"] == verdict["reason"]

    from pytest_mlgates.formats import open_run

    run = open_run(run_dir)
    assert run.format == "huggingface" and int(run.log.epochs[-1]) == 2
    assert run.resume_state()[1] == 2  # the newest checkpoint-N/ is the stopped epoch's

    verdicts = acceptance(pytester, run_dir)
    assert verdicts == {"resume_point": "PASSED", "log_complete": "PASSED", "minority_not_collapsed": "FAILED"}


@pytest.mark.slow
def test_a_healthy_run_trains_to_the_end(gated_runs: dict[str, tuple[dict[str, Any], Path]],
                                          pytester: pytest.Pytester) -> None:
    summary, run_dir = gated_runs["healthy"]
    assert summary["verdict"] is None and summary["epoch"] == 4.0, summary
    assert not (run_dir / "mlgates_inflight.json").exists()
    assert set(acceptance(pytester, run_dir).values()) == {"PASSED"}


# --------------------------------------------------------------------------- in one user session

CONFTEST = '''
import pytest
import torch
from hf_digits import make_trainer, pixel_bert

from pytest_mlgates import PreflightSubject

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def trainer(tmp_path_factory):
    # a tiny BERT from a config; best model by accuracy, two micro-batches per step
    return make_trainer(tmp_path_factory.mktemp("bert"), model=pixel_bert(), tokens=True,
                        metric_for_best_model="acc", greater_is_better=True, gradient_accumulation_steps=2)


@pytest.fixture(scope="session")
def mlgates_subject(trainer):
    return PreflightSubject.from_hf_trainer(trainer)
'''

USER_TESTS = '''
import math

import pytest
import torch
from hf_digits import CollapsingMLP, make_trainer
from transformers import BertForSequenceClassification

from pytest_mlgates import PreflightSubject, SubjectError
from pytest_mlgates.errors import GateFileError
from pytest_mlgates.huggingface import GatesCallback
from pytest_mlgates.inflight import InflightGateWarning

LOGGED = {"eval_loss", "eval_acc", "eval_min_recall", *(f"eval_recall_{c}" for c in range(10))}


def test_fields_come_from_the_trainer(mlgates_subject, trainer):
    s = mlgates_subject
    assert s.monitors == ["eval_acc"]  # metric_for_best_model="acc", as the Trainer looks it up
    assert s.accumulate == 2 and s.num_classes == 10
    # the labels' names, for class_recall's recomputed counts: the config's id2label in label order
    assert s.class_names == [trainer.model.config.id2label[i] for i in range(10)] and len(set(s.class_names)) == 10
    assert sorted(s.loaders) == ["train", "val"]
    x, y = next(iter(s.loaders["train"]))
    assert sorted(x) == ["input_ids"] and tuple(x["input_ids"].shape) == (64, 64) and tuple(y.shape) == (64,)


def test_the_loss_is_the_models_own(mlgates_subject):
    model = mlgates_subject.model()
    model.eval()
    x, y = next(iter(mlgates_subject.loaders["train"]))
    with torch.no_grad():
        out = model(**x, labels=y)
        assert float(mlgates_subject.loss(out.logits, y)) == pytest.approx(float(out.loss), rel=1e-6)


def test_evaluate_is_one_real_evaluation_returning_its_keys(mlgates_subject, trainer):
    history = list(trainer.state.log_history)
    own_model = trainer.model
    metrics = mlgates_subject.evaluate(mlgates_subject.model())
    assert LOGGED <= set(metrics) and "eval_acc" in metrics
    assert all(math.isfinite(metrics[k]) for k in LOGGED)
    assert trainer.model is own_model and trainer.state.log_history == history  # put back


def test_a_monitor_typo_is_missing_from_evaluates_keys(tmp_path):
    s = PreflightSubject.from_hf_trainer(make_trainer(tmp_path, metric_for_best_model="dice"),
                                         loss=torch.nn.CrossEntropyLoss(), num_classes=10)
    assert s.monitors == ["eval_dice"]
    keys = s.evaluate(s.model())
    assert "eval_dice" not in keys and "eval_loss" in keys


def test_the_model_factory_gives_fresh_weights_each_call(mlgates_subject):
    a, b = mlgates_subject.model(), mlgates_subject.model()
    assert isinstance(a, BertForSequenceClassification) and a is not b
    assert not torch.equal(a.classifier.weight, b.classifier.weight)


def test_a_plain_module_needs_its_loss_named_in_one_line(tmp_path):
    trainer = make_trainer(tmp_path)
    with pytest.raises(SubjectError) as err:
        PreflightSubject.from_hf_trainer(trainer)
    assert "CollapsingMLP computes its loss inside forward; pass loss=" in str(err.value)
    s = PreflightSubject.from_hf_trainer(trainer, loss=torch.nn.CrossEntropyLoss(), num_classes=10)
    assert s.monitors == ["eval_loss"] and isinstance(s.model(), CollapsingMLP) and s.train_epoch is None
    assert s.class_names is None  # a plain module has no id2label: nothing is guessed


def test_a_broken_gate_file_fails_when_the_callback_is_made(tmp_path):
    bad = tmp_path / "bad.gates.yaml"
    bad.write_text("exit_criteria:\\n  - name: x\\n    check: 'final.val_loss <'\\n")
    with pytest.raises(GateFileError) as err:
        GatesCallback(bad)
    assert str(bad) in str(err.value) and "\\n" not in str(err.value)


def test_a_criterion_not_judgeable_yet_warns_and_the_run_goes_on(tmp_path):
    gates = tmp_path / "later.gates.yaml"
    gates.write_text("exit_criteria:\\n  - name: later\\n    check: 'epoch[5].eval_loss < 9'\\n")
    callback = GatesCallback(gates)
    trainer = make_trainer(tmp_path / "out", epochs=2, callbacks=[callback])
    with pytest.warns(InflightGateWarning, match="criterion later not judged"):
        trainer.train()
    assert trainer.state.epoch == 2.0 and callback.verdict is None
    assert callback.gates.run_dir == tmp_path / "out"


def test_save_strategy_no_is_named_at_the_start(tmp_path):
    gates = tmp_path / "g.gates.yaml"
    gates.write_text("exit_criteria:\\n  - name: a\\n    check: 'final.eval_loss < 9'\\n")
    trainer = make_trainer(tmp_path / "out", epochs=1, callbacks=[GatesCallback(gates)], save_strategy="no",
                           load_best_model_at_end=False)
    with pytest.warns(InflightGateWarning, match="save_strategy='no'.*never judged"):
        trainer.train()
'''


@pytest.mark.slow
def test_the_subject_and_callback_in_a_user_session(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    need_package("transformers")
    monkeypatch.setenv("PYTHONPATH", trainer_env()["PYTHONPATH"])
    pytester.makeconftest(textwrap.dedent(CONFTEST))
    pytester.makepyfile(test_user=textwrap.dedent(USER_TESTS))
    result = pytester.runpytest_subprocess("test_user.py", "-p", "no:cacheprovider", "-q", timeout=600)
    result.assert_outcomes(passed=USER_TESTS.count("\ndef test_"))


DDP_PROBE = '''
import json, os, sys
import torch.distributed as dist
from types import SimpleNamespace
from pytest_mlgates.huggingface import GatesCallback
from pytest_mlgates.inflight import Verdict

rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[2], rank=rank, world_size=2)
callback = GatesCallback(sys.argv[3])
callback.on_train_begin(SimpleNamespace(output_dir=sys.argv[4], save_strategy="epoch"),
                        SimpleNamespace(is_world_process_zero=rank == 0), None)
judged = []
def check(epoch):
    judged.append(epoch)
    return Verdict(red=True, epoch=epoch, reason="criterion a: RED", criterion="a")
callback.gates.check = check
control = SimpleNamespace(should_training_stop=False)
callback.on_save(None, SimpleNamespace(epoch=2.0, is_world_process_zero=rank == 0), control)
print(json.dumps({"judged": judged, "stop": control.should_training_stop,
                  "criterion": None if callback.verdict is None else callback.verdict.criterion}))
'''


@pytest.mark.slow
def test_under_ddp_process_zero_judges_and_every_rank_stops(tmp_path: Path) -> None:
    """Two gloo processes: only process zero judges, and both set should_training_stop."""
    need_package("transformers")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    gates = tmp_path / "g.gates.yaml"
    gates.write_text("exit_criteria:\n  - name: a\n    check: 'final.eval_loss < 9'\n", encoding="utf-8")
    probe = tmp_path / "probe.py"
    probe.write_text(DDP_PROBE, encoding="utf-8")
    procs = [subprocess.Popen([sys.executable, str(probe), str(rank), port, str(gates), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=trainer_env())
             for rank in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    views = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert views == [{"judged": [2], "stop": True, "criterion": "a"}, {"judged": [], "stop": True, "criterion": "a"}]


def test_without_transformers_the_adapter_says_what_to_install() -> None:
    probe = ("import sys\nsys.modules['transformers'] = None\n"
             "try:\n    import pytest_mlgates.huggingface\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "pytest_mlgates.huggingface needs transformers: pip install transformers accelerate"
