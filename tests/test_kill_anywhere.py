"""A SIGKILL at any moment of a run, then the same command again, gives the same run.

Twenty kills of a real engine process, each in its own run dir: three during a forward
pass, three mid backward pass, three between a checkpoint's temp write and its rename,
three between a log file's temp write and its rename, two while the plot child draws
(engine and plot child killed together), six at random times from outside (the whole
process group). Each moment is drawn from ``random.Random`` seeded with ``SEED`` and the
case number, over the event counts of an uninterrupted run, so the test is reproducible;
every assertion message starts with the moment.

After each kill the same command runs again (no ``--fresh``) and must finish the run with
exit 0, and the run must equal an uninterrupted run of the same seed: every tensor of
``final.pt["model"]`` ``torch.equal``, every logged column but ``epoch_seconds`` equal,
epochs 1..N exactly once in ``training_log.csv`` and ``metric_history.json``, the same
best values and test metrics, both plots present, no temp file left.

The engine processes come from ``tests/engine_forkserver.py`` (imports paid once, each run
a forked child running ``model.cli.main``); ``tests/test_resume.py`` does the same with
fresh ``python -m model train`` interpreters.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_forkserver import ForkServer

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # forty real engine runs

SEED = 20261125
EPOCHS = 4
OVERRIDES = ("train.epochs=4", "train.progress_bar=false", "model.name=mlp", "model.width=8",
             "gates.inflight=null", "model.dropout=0.2")  # dropout: the RNG state must resume too
PLAN = (["forward"] * 3 + ["backward"] * 3 + ["checkpoint_write"] * 3 + ["log_write"] * 3
        + ["plot"] * 2 + ["random_time"] * 6)
PLOTS = ("loss_curve.png", "recall_curve.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def command(run_dir: Path) -> list[str]:
    """``python -m model train ...`` arguments; the resume is this very command again."""
    argv = ["train", "--config", "configs/default.yaml", "--run-dir", str(run_dir)]
    for override in OVERRIDES:
        argv += ["--override", override]
    return argv


@pytest.fixture(scope="module")
def forkserver():
    server = ForkServer(str(REPO_ROOT))
    yield server
    server.close()


@pytest.fixture(scope="module")
def reference(forkserver, tmp_path_factory) -> dict[str, Any]:
    """An uninterrupted run (the reference) and the event counts of another (the survey)."""
    base = tmp_path_factory.mktemp("kill-reference")
    counts_file = base / "counts.json"
    survey = forkserver.run(command(base / "survey"), str(base / "survey.log"),
                            count=str(counts_file))
    assert survey["returncode"] == 0, (base / "survey.log").read_text()
    ref = forkserver.run(command(base / "ref"), str(base / "ref.log"))
    assert ref["returncode"] == 0, (base / "ref.log").read_text()
    return {"dir": base / "ref", "counts": json.loads(counts_file.read_text()),
            "seconds": survey["seconds"]}


def moment_for(case: int, counts: dict[str, float]) -> tuple[str, dict[str, Any]]:
    """The kill request of case `case`, and how to say it in a failure message."""
    phase = PLAN[case]
    rng = random.Random(f"{SEED}:{case}")
    if phase == "random_time":
        seconds = round(rng.uniform(0.0, float(counts["plot_started_s"]) + 0.3), 3)
        return f"case {case}: SIGKILL from outside at {seconds} s", {"after": seconds}
    if phase == "plot":
        ms = rng.randint(0, 700)
        return (f"case {case}: SIGKILL of engine and plot child {ms} ms into the plots",
                {"event": "plot", "n": ms})
    n = rng.randint(1, int(counts[phase]))
    return (f"case {case}: SIGKILL at {phase} event {n} of {int(counts[phase])}",
            {"event": phase, "n": n})


def read_csv(run: Path) -> list[dict[str, str]]:
    with open(run / "training_log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_same_run(run: Path, ref: Path, moment: str) -> None:
    got, want = read_csv(run), read_csv(ref)
    epochs = [str(e) for e in range(1, EPOCHS + 1)]
    assert [r["epoch"] for r in got] == epochs, f"{moment}: training_log.csv epochs {[r['epoch'] for r in got]}"
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), f"{moment}: columns differ"
        diff = {c: (g[c], w[c]) for c in w if c != "epoch_seconds" and g[c] != w[c]}
        assert not diff, f"{moment}: epoch {g['epoch']} differs from the uninterrupted run: {diff}"

    history, ref_history = (json.loads((p / "metric_history.json").read_text()) for p in (run, ref))
    assert [r["epoch"] for r in history["rows"]] == list(range(1, EPOCHS + 1)), \
        f"{moment}: metric_history.json epochs {[r['epoch'] for r in history['rows']]}"
    assert history["columns"] == ref_history["columns"], f"{moment}: metric_history columns"
    for g, w in zip(history["rows"], ref_history["rows"]):
        diff = {c: (g[c], w[c]) for c in w if c != "epoch_seconds" and g[c] != w[c]}
        assert not diff, f"{moment}: metric_history.json epoch {g['epoch']} differs: {diff}"

    final = torch.load(run / "checkpoints/final.pt", weights_only=True)
    ref_final = torch.load(ref / "checkpoints/final.pt", weights_only=True)
    assert final["model"].keys() == ref_final["model"].keys(), f"{moment}: final.pt keys"
    unequal = [k for k in ref_final["model"] if not torch.equal(final["model"][k], ref_final["model"][k])]
    assert not unequal, f"{moment}: final.pt tensors differ from the uninterrupted run: {unequal}"

    results = json.loads((run / "training_results.json").read_text())
    ref_results = json.loads((ref / "training_results.json").read_text())
    assert results["status"] == "completed", f"{moment}: status {results['status']}"
    assert results["epochs_completed"] == EPOCHS, f"{moment}: epochs_completed"
    assert results["best"] == ref_results["best"], f"{moment}: best values differ"
    assert results["test"] == ref_results["test"], f"{moment}: test metrics differ"

    for name in PLOTS:
        png = run / "plots" / name
        assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC, f"{moment}: plots/{name} missing or broken"
    leftovers = sorted(str(p.relative_to(run)) for p in run.rglob("*.tmp"))
    assert not leftovers, f"{moment}: temp files left after the resume: {leftovers}"


@pytest.mark.parametrize("case", range(len(PLAN)), ids=[f"{i:02d}-{p}" for i, p in enumerate(PLAN)])
def test_sigkill_at_any_moment_then_the_same_command_finishes_the_same_run(
        case, forkserver, reference, tmp_path):
    moment, kill = moment_for(case, reference["counts"])
    run, log = tmp_path / "run", str(tmp_path / "engine.log")

    killed = forkserver.run(command(run), log, kill=kill)
    for attempt in range(2, 4):  # a random time past the end of a run faster than the survey's
        if killed["killed"] or "after" not in kill:
            break
        kill = {"after": round(kill["after"] / 2, 3)}
        moment = f"{moment} (run ended first; attempt {attempt} at {kill['after']} s)"
        run = tmp_path / f"run{attempt}"
        killed = forkserver.run(command(run), log, kill=kill)
    assert killed["killed"], f"{moment}: the kill never happened ({killed}): {Path(log).read_text()[-1500:]}"
    if PLAN[case] in ("checkpoint_write", "log_write"):  # it did land mid-write
        temps = [p.name for p in run.rglob(".*.tmp")]
        assert temps, f"{moment}: no half-done write left behind by the kill"

    resumed = forkserver.run(command(run), log)  # the same command, no --fresh
    output = Path(log).read_text()
    assert resumed["returncode"] == 0, f"{moment}: resume failed ({resumed}): {output[-2000:]}"
    assert_same_run(run, reference["dir"], moment)
