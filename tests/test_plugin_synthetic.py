"""Small synthetic run dirs for the plugin's pytester tests (no training needed).

``write_run(path, val_recall_1=[...])`` writes a ``training_log.csv`` the way the engine
does (header, one row per epoch); the tests below check that the plugin's run reader
accepts it, so a failure elsewhere is not a broken fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Imported here, before any pytester session: in-process pytester runs restore sys.modules
# afterwards, and PyYAML's C parser does not survive being imported a second time.
import yaml  # noqa: F401  isort: skip
import pytest_mlgates.collect  # noqa: F401  isort: skip

COLUMNS = ("epoch", "train_loss", "val_loss", "val_recall_0", "val_recall_1")


def write_run(path: Path, *, val_loss: list[float] | None = None,
              val_recall_1: list[float] | None = None) -> Path:
    """A run dir with a 3-epoch log; override a column to make a criterion RED."""
    val_loss = val_loss or [1.0, 0.6, 0.4]
    val_recall_1 = val_recall_1 or [0.2, 0.5, 0.7]
    path.mkdir(parents=True, exist_ok=True)
    lines = [",".join(COLUMNS)]
    for i, (loss, recall) in enumerate(zip(val_loss, val_recall_1), start=1):
        lines.append(f"{i},{1.2 / i!r},{loss!r},0.9,{recall!r}")
    (path / "training_log.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GATES = """\
title: synthetic
must_haves:
  truths:
    - "Nobody looked at the confusion matrix"
    - truth: "val_loss decreases"
      check: "min(val_loss) < first(val_loss)"
exit_criteria:
  - name: minority_not_collapsed
    check: "final.val_recall_1 > 0"
  - name: no_nan
    gate: finite_log
"""


def test_synthetic_run_is_read_by_the_plugin(tmp_path: Path) -> None:
    from pytest_mlgates.formats import open_run

    run = open_run(write_run(tmp_path / "r", val_recall_1=[0.1, 0.0, 0.0]))
    assert run.log.columns["val_recall_1"] == [0.1, 0.0, 0.0]
    assert run.final.val_recall_1 == 0.0


def make_gate_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester dir with ``acc.gates.yaml`` and two run dirs: ``good`` and ``collapsed``.

    Each test module wraps it in its own ``gate_project`` fixture."""
    pytester.makefile(".gates.yaml", acc=GATES)
    write_run(pytester.path / "runs" / "good")
    write_run(pytester.path / "runs" / "collapsed", val_recall_1=[0.3, 0.1, 0.0])
    return pytester
