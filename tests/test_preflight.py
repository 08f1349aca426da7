"""`pytest -m preflight`: real pytest sessions on real code and data.

Two kinds of subject: the bundled engine's (a config file, handed over by
``model.mlgates.mlgates_subject`` as this repository's conftest does), and a user's plain
PyTorch code (a conftest returning ``PreflightSubject(...)`` over ``load_wine``).  Each
test runs a whole pytest session in a subprocess and reads which preflight items passed,
failed and were skipped, and why: every injected fault must turn exactly its check RED,
with the checks that depend on it skipped naming the root cause.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

ALL_CHECKS = [
    "subject_builds", "loaders_first_batch", "no_nan_or_inf", "no_missing_band", "split_integrity",
    "classes_in_every_split", "forward_softmax", "loss_at_init", "backward_finite",
    "overfit_small_batch", "logged_metric_names", "grad_accumulation", "shortcut_probe", "run_dir_writable",
]
ENGINE_CONFTEST = "from model.mlgates import mlgates_subject  # noqa: F401\n"
MODEL_CHECKS = ["forward_softmax", "loss_at_init", "backward_finite", "overfit_small_batch",
                "logged_metric_names", "grad_accumulation"]

DIGITS = """\
seed: 0
data: {name: digits, split: stratified, val_fraction: 0.2, test_fraction: 0.1,
       imbalance: {class: 3, keep: 0.1}}
model: {name: cnn, width: 16}
train: {epochs: 2, batch_size: 64, class_weights: balanced}
checkpoint:
  tracked:
    - {metric: val_loss, mode: min}
    - {metric: val_macro_f1, mode: max}
"""


def stamps(faults: str = "") -> str:
    return textwrap.dedent(f"""\
        seed: 0
        data: {{name: stamps, split: group_holdout, val_fraction: 0.2, test_fraction: 0.15,
               n_samples: 240, faults: [{faults}]}}
        model: {{name: cnn, width: 16}}
        train: {{epochs: 2, batch_size: 32}}
        checkpoint:
          tracked:
            - {{metric: val_loss, mode: min}}
            - {{metric: val_auroc, mode: max}}
        """)


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest cuts -v skip reasons at the terminal width; the tests read them whole."""
    monkeypatch.setenv("COLUMNS", "400")


#: What stays out of ``engine_imported``: modules that import another trainer's stack.
_NOT_PRELOADED = ("__main__", "huggingface", "lightning", "subject_hf")


@pytest.fixture()
def engine_imported() -> None:
    """What an engine subject's session imports, imported in this process first.

    An in-process ``pytester.runpytest`` drops the modules its session imported when it
    ends: torch, numpy and scikit-learn cannot be loaded into one process twice, and a
    plugin module imported again would define a second ``CheckFailed`` that the modules
    kept from before do not catch. Modules loaded before the inner session are kept, so
    every module of the plugin and of the engine is imported here, once per process, and
    each session costs no import of its own."""
    import importlib
    import pkgutil

    import sklearn.datasets
    import sklearn.metrics  # noqa: F401
    import torch._dynamo  # noqa: F401  -- the optimizer imports it on its first step

    import model
    import pytest_mlgates

    for package in (pytest_mlgates, model):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not any(part in info.name for part in _NOT_PRELOADED):
                importlib.import_module(info.name)


def run_preflight(pytester: pytest.Pytester, config_text: str | None, *args: str) -> tuple[dict[str, str], str]:
    """Run `pytest -m preflight [--config exp.yaml]`; {check: outcome}, output. With a
    config the engine's subject is used (unless the test wrote its own conftest). In this
    process (see ``engine_imported``), but for ``-n``: xdist's workers are processes."""
    config_args: tuple[str, ...] = ()
    if config_text is not None:
        pytester.makefile(".yaml", exp=config_text)
        config_args = ("--config", "exp.yaml")
        if not (pytester.path / "conftest.py").exists():
            pytester.makeconftest(ENGINE_CONFTEST)
    argv = ("-m", "preflight", *config_args, "-p", "no:cacheprovider", "-v", "-rfs", *args)
    if "-n" in args:
        result = pytester.runpytest_subprocess(*argv, timeout=240)
    else:
        result = pytester.runpytest(*argv)
    out = result.stdout.str()
    outcomes: dict[str, str] = {}
    for check, status in re.findall(r"::preflight\[(\w+)\] (PASSED|FAILED|SKIPPED|ERROR)", out):
        outcomes[check] = status
    for status, check in re.findall(r"(PASSED|FAILED|SKIPPED|ERROR) \S*::preflight\[(\w+)\]", out):
        outcomes[check] = status  # the -v line of xdist puts the status first
    return outcomes, out


def failure_line(out: str, check: str) -> str:
    """The one-line reason of a failed item from the short summary (-rf)."""
    match = re.search(rf"^FAILED \S*::preflight\[{check}\] - (.*)$", out, re.MULTILINE)
    assert match, f"no summary line for {check} in:\n{out}"
    return match.group(1)


def skip_reason(out: str, check: str) -> str:
    """With -rs pytest names no item in skip lines, so take the reason from the -v line."""
    match = re.search(rf"::preflight\[{check}\] SKIPPED \((.*)\)", out)
    assert match, f"no skip line for {check} in:\n{out}"
    return match.group(1)


def red(outcomes: dict[str, str]) -> set[str]:
    return {c for c, s in outcomes.items() if s in ("FAILED", "ERROR")}


# --------------------------------------------------------------------------- the engine's subject


@pytest.mark.usefixtures("engine_imported")
@pytest.mark.slow
def test_digits_config_passes_every_check(pytester: pytest.Pytester) -> None:
    outcomes, out = run_preflight(pytester, DIGITS, "-p", "no:xdist")
    assert sorted(outcomes) == sorted(ALL_CHECKS), out
    assert red(outcomes) == set(), out
    # the core probe means nothing on an 8x8 digit: skipped with the reason, not faked GREEN
    assert outcomes["shortcut_probe"] == "SKIPPED"
    assert "covers" in skip_reason(out, "shortcut_probe")
    assert all(outcomes[c] == "PASSED" for c in ALL_CHECKS if c != "shortcut_probe"), out
    assert "exp.yaml::preflight[subject_builds] PASSED" in out  # the suite sits under the config


@pytest.mark.usefixtures("engine_imported")
def test_not_preflight_deselects_the_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    assert 1 + 1 == 2\n")
    outcomes, out = run_preflight(pytester, DIGITS, "-m", "not preflight")
    assert outcomes == {}, out
    assert "1 passed" in out and f"{len(ALL_CHECKS)} deselected" in out, out


@pytest.mark.slow
@pytest.mark.usefixtures("engine_imported")
@pytest.mark.parametrize(
    ("fault", "failing", "reason"),
    [
        ("nan_pixels", {"no_nan_or_inf"},
         r"^preflight no_nan_or_inf: \d+ of 240 samples with NaN/Inf \(train: \d+, first at positions \[\d+"),
        ("missing_band", {"no_missing_band"},
         r"^preflight no_missing_band: \d+ of 240 samples with a constant \(missing\) band"),
        ("leaked_groups", {"split_integrity"}, r"^preflight split_integrity: \d+ group ids in train and val \["),
        ("shortcut", {"shortcut_probe"},
         r"^preflight shortcut_probe: central-crop probe AUC = 0\.[6-9]\d* .*needs <= 0\.65"),
    ],
    ids=["nan_pixels", "missing_band", "leaked_groups", "shortcut"],
)
def test_each_stamps_fault_turns_exactly_its_check_red(
    pytester: pytest.Pytester, fault: str, failing: set[str], reason: str
) -> None:
    """Every other check passes on the same stamps, so each RED item is its fault's doing."""
    args = ("-n", "2") if fault == "nan_pixels" else ("-p", "no:xdist")  # lazy dependencies under xdist too
    outcomes, out = run_preflight(pytester, stamps(fault), *args)
    assert sorted(outcomes) == sorted(ALL_CHECKS), out
    assert red(outcomes) == failing, out
    for check in failing:
        line = failure_line(out, check)
        assert re.search(reason, line), line
    if fault == "nan_pixels":  # a forward pass on NaN data says nothing new: skipped, not RED
        for check in MODEL_CHECKS:
            assert outcomes[check] == "SKIPPED", out
        # -rs groups equal reasons: all six dependents, one root cause
        assert re.search(rf"SKIPPED \[{len(MODEL_CHECKS)}\] exp.yaml:\d+: depends on no_nan_or_inf, which failed", out), out
        passed = set(ALL_CHECKS) - failing - set(MODEL_CHECKS)
    else:
        passed = set(ALL_CHECKS) - failing
    assert {c for c in passed if outcomes[c] != "PASSED"} == set(), out


@pytest.mark.usefixtures("engine_imported")
@pytest.mark.slow
def test_tracked_metric_the_engine_never_logs(pytester: pytest.Pytester) -> None:
    config = DIGITS.replace("val_macro_f1, mode: max", "val_dice, mode: max")
    outcomes, out = run_preflight(pytester, config, "-p", "no:xdist")
    assert red(outcomes) == {"logged_metric_names"}, out
    line = failure_line(out, "logged_metric_names")
    assert "monitor 'val_dice' is not a key evaluate returns" in line
    assert "val_macro_f1" in line  # says what one validation pass does return


@pytest.mark.usefixtures("engine_imported")
def test_a_config_that_does_not_validate_is_one_line(pytester: pytest.Pytester) -> None:
    outcomes, out = run_preflight(pytester, DIGITS.replace("epochs: 2", "epochz: 2"), "-p", "no:xdist")
    assert red(outcomes) == {"subject_builds"}, out
    line = failure_line(out, "subject_builds")
    assert line.startswith("preflight subject_builds: exp.yaml") and "epochz" in line and "epochs" in line, line
    assert skip_reason(out, "loaders_first_batch") == "depends on subject_builds, which failed"
    assert "Traceback" not in out


@pytest.mark.usefixtures("engine_imported")
@pytest.mark.slow
def test_user_tests_marked_preflight_join_the_selection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="""
        import pytest

        @pytest.mark.preflight
        def test_my_own_preflight():
            assert True

        def test_not_preflight():
            assert True
    """)
    outcomes, out = run_preflight(pytester, DIGITS, "-p", "no:xdist", "-k", "subject_builds or my_own")
    assert outcomes == {"subject_builds": "PASSED"}, out
    assert "test_mine.py::test_my_own_preflight PASSED" in out
    assert "test_not_preflight PASSED" not in out


@pytest.mark.usefixtures("engine_imported")
@pytest.mark.slow
def test_ini_option_alone_needs_m_preflight(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", exp=DIGITS)
    pytester.makeconftest(ENGINE_CONFTEST)
    pytester.makeini("[pytest]\nmlgates_config = exp.yaml\n")
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    plain = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:xdist", "-q")
    plain.assert_outcomes(passed=1)  # an ini default does not add the suite to every run
    selected = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:xdist", "-v",
                                             "-m", "preflight", "-k", "subject_builds")
    selected.assert_outcomes(passed=1)
    assert "exp.yaml::preflight[subject_builds] PASSED" in selected.stdout.str()


@pytest.mark.usefixtures("engine_imported")
@pytest.mark.slow
def test_gate_file_preflight_section(pytester: pytest.Pytester) -> None:
    gate_file = pytester.path / "strict.gates.yaml"
    gate_file.write_text(textwrap.dedent("""
        preflight:
          - {name: one_step_overfit, check: overfit_small_batch, steps: 1}
          - loss_at_init
    """), encoding="utf-8")
    outcomes, out = run_preflight(pytester, DIGITS, "-p", "no:xdist", "strict.gates.yaml", "-k", "one_step or loss_at")
    assert outcomes.get("one_step_overfit") == "FAILED", out
    line = failure_line(out, "one_step_overfit")
    assert line.startswith("preflight one_step_overfit (overfit_small_batch): loss on a batch of 16 is "), line
    assert "after 1 Adam steps" in line
    assert outcomes.get("loss_at_init") == "PASSED", out

    gate_file.write_text("preflight:\n  - {check: overfit_small_batch, stpes: 3}\n", encoding="utf-8")
    result = pytester.runpytest("-m", "preflight", "--config", "exp.yaml", "strict.gates.yaml",
                                           "-p", "no:cacheprovider", "-p", "no:xdist")
    assert "'overfit_small_batch' has no parameter 'stpes'" in result.stdout.str()
    assert result.ret != 0


@pytest.mark.usefixtures("engine_imported")
def test_config_without_a_subject_fixture_says_what_is_missing(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("# no mlgates_subject here\n")
    outcomes, out = run_preflight(pytester, DIGITS, "-p", "no:xdist")
    assert red(outcomes) == {"subject_builds"}, out
    line = failure_line(out, "subject_builds")
    assert "no mlgates_subject fixture: define one in conftest.py that builds your subject from --config exp.yaml" in line


@pytest.mark.usefixtures("engine_imported")
def test_m_preflight_without_a_subject_runs_only_marked_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="import pytest\n\n@pytest.mark.preflight\ndef test_mine():\n    pass\n")
    outcomes, out = run_preflight(pytester, None, "-p", "no:xdist")
    assert outcomes == {}, out
    assert "1 passed" in out, out


def test_preflight_module_is_light_at_import() -> None:
    code = ("import sys, pytest_mlgates.preflight, pytest_mlgates.inflight, pytest_mlgates.subject; "
            "heavy = [m for m in ('torch', 'numpy', 'sklearn', 'matplotlib', 'yaml', 'model') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- a user's own code

#: A user's plain PyTorch project on load_wine, as a conftest; FAULT picks one injected fault.
PLAIN_CONFTEST = """
import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine

from pytest_mlgates import PreflightSubject

FAULT = {fault!r}


class Net(torch.nn.Module):
    def __init__(self, features=13, classes=3):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(features, 32), torch.nn.ReLU(), torch.nn.Linear(32, classes))

    def forward(self, x):
        out = self.net(x)
        return out * float("inf") if FAULT == "not_a_distribution" else out


def split_ids():
    x, y = load_wine(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, val = order[:130], order[130:]
    if FAULT == "leaked_ids":
        val = np.concatenate([val, train[:5]])
    if FAULT == "class_missing_from_val":
        val = val[y[val] != 2]
    return x, y, train, val


def batches(x, y, ids, size=16):
    xs = torch.tensor((x[ids] - x.mean(0)) / x.std(0), dtype=torch.float32)
    if FAULT == "nan_row" and len(ids) == 130:
        xs[7, 3] = float("nan")
    if FAULT == "constant_feature" and len(ids) == 130:  # a dead sensor in the training data
        xs[:, 5] = 1.0
    ys = torch.tensor(y[ids], dtype=torch.long)
    if FAULT == "dict_batches":
        return [{{"x": xs[i:i + size], "y": ys[i:i + size]}} for i in range(0, len(ids), size)]
    return [(xs[i:i + size], ys[i:i + size]) for i in range(0, len(ids), size)]


class Hangs:
    def __iter__(self):
        time.sleep(3600)
        yield None


def evaluate(model):
    x, y, _, val = split_ids()
    model.eval()
    with torch.no_grad():
        xs, ys = zip(*batches(x, y, val))
        logits = model(torch.cat(xs))
        loss = torch.nn.functional.cross_entropy(logits, torch.cat(ys))
    return {{"val_loss": float(loss), "val_accuracy": float((logits.argmax(1) == torch.cat(ys)).float().mean())}}


def train_epoch(model, loader, optimizer, accumulate):
    model.train()
    optimizer.zero_grad()
    for i, (xb, yb) in enumerate(loader, start=1):
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        if FAULT == "accumulation_not_wired":  # steps every micro-batch
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            continue
        (loss / accumulate).backward()
        if i % accumulate == 0:
            optimizer.step()
            optimizer.zero_grad()


@pytest.fixture(scope="session")
def mlgates_subject():
    x, y, train, val = split_ids()
    groups = {{"train": train % 40, "val": val % 40 + 40}}
    if FAULT == "group_in_two_splits":
        groups["val"] = val % 40
    return PreflightSubject(
        model=Net() if FAULT == "instance_not_factory" else (lambda: Net()),
        loaders={{"train": Hangs() if FAULT == "hung_loader" else batches(x, y, train),
                  "val": batches(x, y, val)}},
        loss=torch.nn.CrossEntropyLoss(),
        num_classes=3,
        sample_ids={{"train": train, "val": val}},
        groups=groups,
        evaluate=evaluate,
        monitors="val_loss" if FAULT == "monitors_string" else ["val_dice" if FAULT == "monitor_typo" else "val_loss"],
        accumulate=2,
        train_epoch=train_epoch,
    )
"""

PLAIN_FAULTS = ("healthy", "nan_row", "constant_feature", "leaked_ids", "group_in_two_splits",
                "class_missing_from_val", "not_a_distribution", "monitor_typo", "accumulation_not_wired",
                "instance_not_factory", "monitors_string", "dict_batches", "hung_loader")


@pytest.fixture(scope="module")
def plain_session(tmp_path_factory: pytest.TempPathFactory) -> str:
    """ONE `pytest -m preflight` session over a project with a folder per fault, each with
    its own conftest (its own subject, so its own suite): the output of every fault.  Shared
    by the xdist workers (a file lock), so it runs once per test session."""
    import os

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "plain-preflight"
    with FileLock(str(root) + ".lock"):
        done = root / "output.txt"
        if not done.exists():
            root.mkdir(exist_ok=True)
            for fault in PLAIN_FAULTS:
                (root / fault).mkdir(exist_ok=True)
                (root / fault / "conftest.py").write_text(PLAIN_CONFTEST.format(fault=fault), encoding="utf-8")
            (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-m", "preflight", "-p", "no:cacheprovider", "-p", "no:xdist",
                 "-v", "-rfs", "--mlgates-preflight-timeout", "2"],
                cwd=root, capture_output=True, text=True, timeout=600, check=False,
                env={**os.environ, "COLUMNS": "400"})
            done.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    return done.read_text(encoding="utf-8")


def plain_outcomes(out: str, fault: str) -> dict[str, str]:
    return {check: status for check, status in
            re.findall(rf"^{fault}/conftest.py::preflight\[(\w+)\] (PASSED|FAILED|SKIPPED|ERROR)", out, re.MULTILINE)}


def plain_failure(out: str, fault: str, check: str) -> str:
    match = re.search(rf"^FAILED {fault}/conftest.py::preflight\[{check}\] - (.*)$", out, re.MULTILINE)
    assert match, f"no summary line for {fault}/{check} in:\n{out}"
    return match.group(1)


def plain_skip(out: str, fault: str, check: str) -> str:
    match = re.search(rf"^{fault}/conftest.py::preflight\[{check}\] SKIPPED \((.*)\)", out, re.MULTILINE)
    assert match, f"no skip line for {fault}/{check} in:\n{out}"
    return match.group(1)


@pytest.mark.slow
def test_plain_pytorch_subject_is_green(plain_session: str) -> None:
    outcomes = plain_outcomes(plain_session, "healthy")
    assert sorted(outcomes) == sorted(ALL_CHECKS), plain_session
    assert red(outcomes) == set(), plain_session
    skipped = {c for c, s in outcomes.items() if s == "SKIPPED"}
    assert skipped == {"shortcut_probe", "run_dir_writable"}, plain_session  # tabular data; no run dir
    assert "not images" in plain_skip(plain_session, "healthy", "shortcut_probe")
    assert "pass --run-dir DIR" in plain_skip(plain_session, "healthy", "run_dir_writable")
    # one suite per conftest that defines the fixture, each beside its own conftest
    assert all(len(plain_outcomes(plain_session, fault)) == len(ALL_CHECKS) for fault in PLAIN_FAULTS)
    assert "Traceback" not in plain_session and "INTERNALERROR" not in plain_session


@pytest.mark.slow  # the one session of plain_session
@pytest.mark.parametrize(
    ("fault", "check", "reason"),
    [
        ("nan_row", "no_nan_or_inf", r"1 of 178 samples with NaN/Inf \(train: 1, first at positions \[7\]"),
        ("constant_feature", "no_missing_band",
         r"1 of 13 features constant over the train split but not in val: columns \[5\] \(a dead input in training\)"),
        ("leaked_ids", "split_integrity", r"5 sample ids in train and val \["),
        ("group_in_two_splits", "split_integrity", r"\d+ group ids in train and val \["),
        ("class_missing_from_val", "classes_in_every_split", r"val lacks class 2"),
        ("not_a_distribution", "forward_softmax", r"NaN/Inf logits in 16 of 16 rows"),
        ("monitor_typo", "logged_metric_names",
         r"monitor 'val_dice' is not a key evaluate returns.*\(one validation pass returns val_loss, val_accuracy\)"),
        ("accumulation_not_wired", "grad_accumulation",
         r"train_epoch stepped the optimizer after micro-batches \[1, 2, 3, 4\]; accumulate 2 needs a step after \[2, 4\]"),
        # a subject of the wrong shape: one line naming the field and what it needs
        ("instance_not_factory", "subject_builds",
         r"mlgates_subject.model: needs a factory that builds a fresh model \(e.g. lambda: Net\(...\)\)"),
        ("monitors_string", "subject_builds",
         r"mlgates_subject.monitors: needs a list of metric names; got the string 'val_loss'"),
        ("dict_batches", "loaders_first_batch",
         r"mlgates_subject.loaders\['train'\] batch 0: a dict with keys \[x, y\]; needs \(x, y\) pairs"),
        # a loader that hangs is RED within the budget, not a frozen terminal
        ("hung_loader", "loaders_first_batch",
         r"^preflight loaders_first_batch: mlgates_subject.loaders\['train'\]: batch 0 did not arrive within 2 s$"),
    ],
)
def test_each_fault_in_user_code_turns_exactly_its_check_red(plain_session: str, fault: str, check: str,
                                                             reason: str) -> None:
    outcomes = plain_outcomes(plain_session, fault)
    assert red(outcomes) == {check}, plain_session
    line = plain_failure(plain_session, fault, check)
    assert re.search(reason, line), line
    dependents = {"forward_softmax": ("loss_at_init", "backward_finite", "logged_metric_names"),
                  "loaders_first_batch": ("no_nan_or_inf", "forward_softmax"),
                  "subject_builds": ("loaders_first_batch", "split_integrity")}.get(check, ())
    for dependent in dependents:  # the checks that need the failed one say why they did not run
        assert plain_skip(plain_session, fault, dependent) == f"depends on {check}, which failed"


@pytest.mark.usefixtures("engine_imported")
@pytest.mark.slow
def test_a_subject_conftest_works_with_the_plugin_disabled(pytester: pytest.Pytester) -> None:
    """The old conftest hook broke every `-p no:mlgates` run (unknown hook); a fixture cannot."""
    pytester.makeconftest(PLAIN_CONFTEST.format(fault="healthy"))
    pytester.makepyfile(test_x="def test_x(mlgates_subject):\n    assert mlgates_subject.num_classes == 3\n")
    result = pytester.runpytest("-p", "no:mlgates", "-p", "no:cacheprovider", "-p", "no:xdist", "-q")
    result.assert_outcomes(passed=1)
    assert "INTERNALERROR" not in result.stdout.str()
