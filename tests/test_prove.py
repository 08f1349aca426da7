"""``mlgates prove``: every acceptance criterion must turn RED under its mutation."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SMALL_OVERRIDES

MLGATES = [sys.executable, "-m", "pytest_mlgates.cli"]
pytestmark = pytest.mark.slow


def prove(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MLGATES, "prove", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)


def collected_criteria(run: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "acceptance/", "--run-dir", str(run), "--co", "-q",
         "-p", "no:cacheprovider"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return sum(1 for line in out.stdout.splitlines() if "::" in line)


def test_every_acceptance_criterion_turns_red_under_its_mutation(
    trained_run: Callable[..., Path], copy_run: Callable[[Path, Path], Path], tmp_path: Path
) -> None:
    run = copy_run(trained_run(SMALL_OVERRIDES), tmp_path / "run")
    proc = prove(str(run), "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)

    assert report["defects"] == []
    assert report["not_green_before"] == []
    names = [c["criterion"] for c in report["criteria"]]
    assert len(names) == collected_criteria(run) and len(names) >= 20
    assert sorted(report["proven"] + report["no_mutation"]) == sorted(names)
    by_name = {c["criterion"]: c for c in report["criteria"]}
    assert by_name["finite_log"]["mutation"] == "NaN written into val_loss (last epoch)"
    assert by_name["best_checkpoints"]["after"] == "RED"
    assert by_name["checkpoint_softmax"]["mutation"].startswith("model weights of")
    for entry in report["criteria"]:
        if entry["outcome"] == "RED":
            assert entry["before"] == "GREEN" and entry["after"] in ("RED", "ERROR")

    # the proof is kept beside the verdicts, and the run itself was never mutated
    [proof] = (run / "acceptance").glob("proof-*.json")
    assert json.loads(proof.read_text())["proven"] == report["proven"]
    assert (run / "checkpoints" / "best_val_loss.pt").exists()
    source = trained_run(SMALL_OVERRIDES)
    assert (run / "training_log.csv").read_bytes() == (source / "training_log.csv").read_bytes()


def test_a_gate_that_cannot_fail_is_a_defect(
    trained_run: Callable[..., Path], copy_run: Callable[[Path, Path], Path], tmp_path: Path
) -> None:
    run = copy_run(trained_run(SMALL_OVERRIDES), tmp_path / "run")
    gates = tmp_path / "weak.gates.yaml"
    gates.write_text(
        "must_haves:\n"
        "  truths:\n"
        "    - \"the model is good\"\n"            # no check: UNVERIFIED, nothing to prove
        "exit_criteria:\n"
        "  - name: tautology\n"
        "    check: \"len(val_loss) >= 0\"\n"       # true whatever the numbers say
        "  - name: recall_floor\n"
        "    gate: class_recall\n")
    proc = prove(str(run), "--gates", str(gates))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("DEFECT") and "tautology" in line for line in lines)
    assert any(line.startswith("RED") and "recall_floor" in line for line in lines)
    assert any(line.startswith("SKIP") and "the_model_is_good" in line for line in lines)
    assert "defects (gates that cannot fail): tautology" in proc.stdout


@pytest.mark.parametrize("case", ["missing_gates", "no_gate_files", "missing_run"])
def test_prove_bad_input_is_one_line(tmp_path: Path, case: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "training_log.csv").write_text("epoch,val_loss\n1,0.5\n")
    args = {"missing_gates": [str(run), "--gates", str(tmp_path / "nope")],
            "no_gate_files": [str(run), "--gates", str(tmp_path)],
            "missing_run": [str(tmp_path / "absent")]}[case]
    proc = prove(*args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("mlgates: ")


def test_prove_on_a_run_that_fits_two_formats_is_one_line(tmp_path: Path) -> None:
    from pytest_mlgates.prove import ProveError, prove

    run = tmp_path / "version_0"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,step,val_loss\n0,9,0.5\n")
    (run / "training_log.csv").write_text("epoch,val_loss\n1,0.5\n")
    gates = tmp_path / "g.gates.yaml"
    gates.write_text("title: t\nexit_criteria:\n  - name: no_nan\n    gate: finite_log\n")
    with pytest.raises(ProveError, match=r"version_0: looks like both engine \(training_log.csv\) and lightning "
                                         r"\(metrics.csv\); pass --run-format NAME") as exc:
        prove(run, [gates], write=False)
    assert "\n" not in str(exc.value)


def test_each_format_says_where_a_gate_has_no_mutation(tmp_path: Path) -> None:
    """A criterion without a mutation is one line saying why, never a bogus count: the
    engine-only gates on another trainer's run, a shortcut, a truth."""
    from test_formats_lightning_hf import lightning_dir

    from pytest_mlgates.formats import format_module, open_run

    run = open_run(lightning_dir(tmp_path))
    mutations = format_module(run.format).Mutations(run)
    for gate in ("plots", "provenance", "reproduces"):
        tiers, note = mutations.for_criterion(gate, {})
        assert tiers == [] and note == f"no mutation: {gate} reads files only the engine writes; a lightning run has none"
    assert mutations.for_criterion("shortcut", {})[1].startswith("no mutation: a shortcut lives in the trained weights")
    tiers, note = mutations.for_criterion("finite_log", {})
    assert note == "" and tiers[0].description == "NaN written into val_loss (last epoch)"
    tiers, note = mutations.for_criterion("best_checkpoints", {})
    assert tiers[0].description == ("checkpoints/best-epoch=1-val_loss=0.5000.ckpt deleted "
                                    "(the best checkpoint of val_loss)")


def test_a_mutation_that_cannot_be_applied_is_no_defect(tmp_path: Path) -> None:
    """An engine run read from metric_history.json alone: its log mutations edit
    training_log.csv, which it lacks. Reported as such, never as a gate that stayed GREEN
    (that count would be bogus); a check on the epoch column alone has no mutation."""
    from pytest_mlgates.prove import prove

    run = tmp_path / "run"
    run.mkdir()
    (run / "metric_history.json").write_text(json.dumps(
        {"columns": ["epoch", "val_loss"], "rows": [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.2}]}))
    gates = tmp_path / "g.gates.yaml"
    gates.write_text("exit_criteria:\n  - name: improves\n    gate: converged\n"
                     "  - name: few\n    check: 'len(epoch) < 3'\n")
    report = prove(run, [gates], write=False)
    assert report["defects"] == [] and report["mutation_failed"] == ["improves"] and report["no_mutation"] == ["few"]
    by_name = {c["criterion"]: c for c in report["criteria"]}
    assert by_name["improves"]["note"] == "mutation failed: MutationError: training_log.csv: not in the run"
    assert by_name["few"]["note"] == "no mutation: the check names no logged column"


def test_the_proof_is_never_written_through_a_symlinked_archive(tmp_path: Path) -> None:
    """``<run>/acceptance`` a symlink to a folder outside the run: the proof is refused in
    one line, nothing lands outside."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "training_log.csv").write_text("epoch,train_loss,val_loss\n1,0.9,0.8\n2,0.6,0.4\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "acceptance").symlink_to(outside)
    gates = tmp_path / "g.gates.yaml"
    gates.write_text("title: t\nexit_criteria:\n  - name: loss_falls\n    check: \"min(val_loss) < first(val_loss)\"\n")
    proc = prove(str(run), "--gates", str(gates), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("mlgates: proof not written: ") and "symlink" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert list(outside.iterdir()) == []


TINY_LOG = "epoch,train_loss,val_loss\n1,0.9,0.8\n2,0.6,0.4\n"
TINY_GATES = ("title: t\n"
              "must_haves:\n  truths:\n    - \"the model is good\"\n"
              "exit_criteria:\n"
              "  - name: loss_falls\n    check: \"min(val_loss) < first(val_loss)\"\n"
              "  - name: loss_tiny\n    check: \"min(val_loss) < 0.01\"\n"
              "  - name: no_such_column\n    check: \"min(val_acc) > 0.5\"\n")


def test_prove_reads_its_sessions_results_json_not_junit(tmp_path: Path) -> None:
    """prove's pytest subprocess writes a JSON list of statuses (``-p
    pytest_mlgates.prove_results``), never a JUnit XML for prove to parse."""
    from pytest_mlgates.prove import Job, plan_targets, run_jobs

    run = tmp_path / "run"
    run.mkdir()
    (run / "training_log.csv").write_text(TINY_LOG)
    gates = tmp_path / "g.gates.yaml"
    gates.write_text(TINY_GATES)
    targets = plan_targets(run.resolve(), [gates.resolve()])
    work = tmp_path / "work"
    work.mkdir()
    statuses = run_jobs([Job(str(run), targets)], baseline=run, timeout_s=300, workers=2, work=work)
    assert statuses == {(str(run), "the_model_is_good"): "UNVERIFIED", (str(run), "loss_falls"): "GREEN",
                        (str(run), "loss_tiny"): "RED", (str(run), "no_such_column"): "ERROR"}
    assert sorted(p.name for p in work.iterdir()) == ["batch-0.json"]


def test_the_results_plugin_writes_each_gate_items_status(pytester: pytest.Pytester) -> None:
    """What prove's subprocess loads: one {run, criterion, status} per gate item, with the
    JUnit reading's rules kept (a GREEN item that then fails is RED, one whose teardown
    errors is ERROR, one skipped after its verdict SKIPPED); ordinary tests are left out."""
    (pytester.path / "run").mkdir()
    (pytester.path / "run" / "training_log.csv").write_text(TINY_LOG)
    falls = "    check: \"min(val_loss) < first(val_loss)\"\n"
    pytester.makefile(".gates.yaml", g=TINY_GATES + "".join(
        f"  - name: {name}\n{falls}" for name in ("skipped_after", "broken_teardown", "failed_after")))
    pytester.makepyfile(test_plain="def test_ordinary():\n    pass\n")
    pytester.makeconftest("""
import pytest

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    if item.name.startswith("skipped_after"):
        pytest.skip("skipped after its verdict")
    if item.name.startswith("failed_after"):
        raise AssertionError("failed after its verdict")
    return result

@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item):
    result = yield
    if item.name.startswith("broken_teardown"):
        raise RuntimeError("teardown broke")
    return result
""")
    result = pytester.runpytest_subprocess(
        "--run-dir", "run", "-p", "no:cacheprovider", "--mlgates-archive=off",
        "-p", "pytest_mlgates.prove_results", "--mlgates-prove-results=out/results.json")
    result.assert_outcomes(passed=3, failed=3, skipped=2, errors=1)
    records = json.loads((pytester.path / "out" / "results.json").read_text())
    assert sorted((r["criterion"], r["status"]) for r in records) == [
        ("broken_teardown", "ERROR"), ("failed_after", "RED"), ("loss_falls", "GREEN"),
        ("loss_tiny", "RED"), ("no_such_column", "ERROR"), ("skipped_after", "SKIPPED"),
        ("the_model_is_good", "UNVERIFIED")]
    assert {r["run"] for r in records} == {"run"} and all(len(r) == 3 for r in records)
    assert [p.name for p in (pytester.path / "out").iterdir()] == ["results.json"]  # no temp file left


@pytest.mark.parametrize("case", ["missing", "unreadable"])
def test_a_session_without_a_readable_result_is_one_line(tmp_path: Path, case: str) -> None:
    """The gate session dies before writing its JSON, or leaves one that is not a list of
    records: ProveError in one line, never a traceback or an empty proof."""
    from pytest_mlgates.prove import Job, ProveError, plan_targets, run_jobs

    run = tmp_path / "run"
    run.mkdir()
    (run / "training_log.csv").write_text(TINY_LOG)
    gates = tmp_path / "gates" / "g.gates.yaml"
    gates.parent.mkdir()
    gates.write_text(TINY_GATES)
    (gates.parent / "conftest.py").write_text({
        "missing": "import os\n\ndef pytest_collection_finish(session):\n    os._exit(3)\n",
        "unreadable": "def pytest_unconfigure(config):\n"
                      "    with open(config.getoption('mlgates_prove_results'), 'w') as fh:\n"
                      "        fh.write('{\"run\": ')\n"}[case])
    targets = plan_targets(run.resolve(), [gates.resolve()])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ProveError) as exc:
        run_jobs([Job(str(run), targets)], baseline=run, timeout_s=300, workers=1, work=work)
    message = str(exc.value)
    assert "\n" not in message
    if case == "missing":
        assert message.startswith("pytest on the gate files wrote no result (exit 3)"), message
    else:
        assert message.startswith(f"pytest on the gate files wrote an unreadable result {work / 'batch-0.json'}: "
                                  "JSONDecodeError"), message
