"""`pytest -m preflight --config C`: real pytest sessions on real configs and data.

Each test writes a small config into a pytester dir and runs a whole pytest session in a
subprocess, then reads which preflight items passed, failed and were skipped, and why.
The faults of the `stamps` data must turn exactly the matching checks RED, with dependent
checks skipped naming the root cause.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

ALL_CHECKS = [
    "config_validates", "loaders_first_batch", "no_nan_or_inf", "no_missing_band", "split_integrity",
    "split_proportions", "classes_in_every_split", "forward_softmax", "loss_at_init", "backward_finite",
    "overfit_small_batch", "logged_metric_names", "grad_accumulation", "tracked_from_config",
    "shortcut_probe", "run_dir_writable",
]
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


def run_preflight(pytester: pytest.Pytester, config_text: str, *args: str) -> tuple[dict[str, str], str]:
    """Run `pytest -m preflight --config exp.yaml` in a subprocess; {check: outcome}, output."""
    pytester.makefile(".yaml", exp=config_text)
    result = pytester.runpytest_subprocess(
        "-m", "preflight", "--config", "exp.yaml", "-p", "no:cacheprovider", "-v", "-rfs", *args,
        timeout=240,
    )
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


def test_digits_config_passes_every_check(pytester: pytest.Pytester) -> None:
    outcomes, out = run_preflight(pytester, DIGITS, "-p", "no:xdist")
    assert sorted(outcomes) == sorted(ALL_CHECKS), out
    assert red(outcomes) == set(), out
    # the core probe means nothing on an 8x8 digit: skipped with the reason, not faked GREEN
    assert outcomes["shortcut_probe"] == "SKIPPED"
    assert "covers" in skip_reason(out, "shortcut_probe")
    assert all(outcomes[c] == "PASSED" for c in ALL_CHECKS if c != "shortcut_probe"), out


def test_not_preflight_deselects_the_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    assert 1 + 1 == 2\n")
    outcomes, out = run_preflight(pytester, DIGITS, "-m", "not preflight")
    assert outcomes == {}, out
    assert "1 passed" in out and "16 deselected" in out, out


@pytest.mark.parametrize(
    ("fault", "failing", "reason"),
    [
        ("nan_pixels", {"no_nan_or_inf"},
         r"^preflight no_nan_or_inf: \d+ of 240 samples with NaN/Inf \(train: \d+, first indices \[\d+"),
        ("missing_band", {"no_missing_band"},
         r"^preflight no_missing_band: \d+ of 240 samples with a constant \(missing\) band"),
        ("leaked_groups", {"split_integrity"}, r"^preflight split_integrity: \d+ group ids in train and val \["),
        ("shortcut", {"shortcut_probe"}, r"^preflight shortcut_probe: central-crop probe AUC = 0\.[6-9]\d* .*needs <= 0\.65"),
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


def test_tracked_metric_the_engine_never_logs(pytester: pytest.Pytester) -> None:
    config = DIGITS.replace("val_macro_f1, mode: max", "val_dice, mode: max")
    outcomes, out = run_preflight(pytester, config, "-p", "no:xdist")
    assert red(outcomes) == {"logged_metric_names"}, out
    line = failure_line(out, "logged_metric_names")
    assert "checkpoint.tracked metric 'val_dice' is not a logged key" in line
    assert "val_macro_f1" in line  # says what one validation step does log


def test_default_tracking_is_red(pytester: pytest.Pytester) -> None:
    config = DIGITS.split("checkpoint:")[0]  # no checkpoint section: the engine's default tracking
    outcomes, out = run_preflight(pytester, config, "-p", "no:xdist")
    assert red(outcomes) == {"tracked_from_config"}, out
    assert "checkpoint.tracked is the default [val_loss]" in failure_line(out, "tracked_from_config")


BROKEN_MODEL_CONFTEST = """
import torch


class NotADistribution(torch.nn.Module):
    '''Logits that overflow to inf: the softmax rows are NaN, not a distribution.'''

    def __init__(self, num_classes):
        super().__init__()
        self.head = torch.nn.LazyLinear(num_classes)

    def forward(self, x):
        return self.head(x.flatten(1)) * float("inf")


def pytest_mlgates_preflight_model(config, mlgates_config, dataset):
    return NotADistribution(dataset.num_classes)
"""


def test_model_whose_output_is_not_a_distribution(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(BROKEN_MODEL_CONFTEST)
    outcomes, out = run_preflight(pytester, DIGITS, "-p", "no:xdist")
    assert red(outcomes) == {"forward_softmax"}, out
    assert "NaN/Inf logits in 64 of 64 rows" in failure_line(out, "forward_softmax")
    for check in MODEL_CHECKS[1:]:
        assert outcomes[check] == "SKIPPED", out
        assert skip_reason(out, check) == "depends on forward_softmax, which failed"


def test_hung_loader_is_red_not_a_frozen_terminal(pytester: pytest.Pytester) -> None:
    outcomes, out = run_preflight(pytester, DIGITS, "-p", "no:xdist", "--mlgates-preflight-timeout", "1e-9")
    assert red(outcomes) == {"loaders_first_batch"}, out
    # Which split misses a 1 ns budget first is a race (a tiny train batch can win it),
    # so the line is checked for its shape, not for one split's name.
    assert re.fullmatch(
        r"preflight loaders_first_batch: first batch of split '(train|val|test)' did not arrive within 1e-09 s",
        failure_line(out, "loaders_first_batch")), out
    assert skip_reason(out, "no_nan_or_inf") == "depends on loaders_first_batch, which failed"


def test_user_tests_marked_preflight_join_the_selection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="""
        import pytest

        @pytest.mark.preflight
        def test_my_own_preflight():
            assert True

        def test_not_preflight():
            assert True
    """)
    outcomes, out = run_preflight(pytester, DIGITS, "-p", "no:xdist", "-k", "config_validates or my_own")
    assert outcomes == {"config_validates": "PASSED"}, out
    assert "test_mine.py::test_my_own_preflight PASSED" in out
    assert "test_not_preflight PASSED" not in out


def test_ini_option_alone_needs_m_preflight(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", exp=DIGITS)
    pytester.makeini("[pytest]\nmlgates_config = exp.yaml\n")
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    plain = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", "-q")
    plain.assert_outcomes(passed=1)  # an ini default does not add the suite to every run
    selected = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", "-v",
                                             "-m", "preflight", "-k", "tracked_from_config")
    selected.assert_outcomes(passed=1)
    assert "exp.yaml::preflight[tracked_from_config] PASSED" in selected.stdout.str()


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
    result = pytester.runpytest_subprocess("-m", "preflight", "--config", "exp.yaml", "strict.gates.yaml",
                                           "-p", "no:cacheprovider", "-p", "no:xdist")
    assert "'overfit_small_batch' has no parameter 'stpes'" in result.stdout.str()
    assert result.ret != 0


def test_preflight_module_is_light_at_import() -> None:
    code = ("import sys, pytest_mlgates.preflight, pytest_mlgates.inflight; "
            "heavy = [m for m in ('torch', 'numpy', 'sklearn', 'matplotlib', 'yaml', 'model') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
