"""Every built-in gate against every broken run dir of the ultralytics, timm, keras, dvclive
and wandb formats (tests/broken_new_formats.py), in real pytest sessions: a failed item with
one line naming the file -- never an INTERNALERROR, a traceback, or code run from the run dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from broken_new_formats import BREAKAGES, HEALTHY_OF, build_corpus
from broken_runs import MARKER_NAME
from test_broken_corpus import CONFTEST, check_sessions, gate_file_text, item_problems, run_sessions
from trainer_sessions import SOURCE_FAULTS, make_runs

from conftest import need_package, trainer_env
from pytest_mlgates.gates import GATE_NAMES

pytestmark = pytest.mark.slow

PARAMS: dict[str, dict[str, Any]] = {
    "artifact": {"path": "args.yaml", "contains": "epoch"},
    "key_link": {"from": "last.pth.tar", "to": "src/train.py", "pattern": "save_checkpoint"},
    "checkpoint_softmax": {"model": "digits_model:DigitsMLP", "input_shape": [16, 64]},
}


def _never_outside(gate: str, run: str, line: str) -> str | None:
    if "/_outside/" in line and "refused" not in line:  # a file reached through a symlink out of the run dir
        return "followed a symlink out of the run dir"
    return None


def _source(script: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    healthy = make_runs(script, tmp_path_factory, SOURCE_FAULTS[script])["healthy"]
    if script == "wandb_run.py":
        (healthy,) = (healthy / "wandb").glob("offline-run-*")
    return healthy


def test_every_gate_meets_every_broken_new_format_run_in_one_line(tmp_path_factory: pytest.TempPathFactory) -> None:
    for package in ("keras", "h5py", "dvclive", "wandb"):
        need_package(package)
    sources = {"ultralytics": _source("ultralytics_files.py", tmp_path_factory),
               "timm": _source("timm_files.py", tmp_path_factory),
               "keras": _source("keras_run.py", tmp_path_factory),
               "dvclive": _source("dvclive_run.py", tmp_path_factory),
               "wandb": _source("wandb_run.py", tmp_path_factory)}
    root = tmp_path_factory.mktemp("broken-new")
    entries = build_corpus(root / "runs", sources)
    (root / "acc.gates.yaml").write_text(gate_file_text(PARAMS, None, "every gate against the new formats"))
    (root / "conftest.py").write_text(CONFTEST + "\n    import digits_model, h5py  # noqa: F401\n")
    (root / "src").mkdir()
    (root / "src" / "train.py").write_text("def save_checkpoint(): ...\n")
    names = list(entries)
    first = [n for n in names if BREAKAGES[n][0] in ("ultralytics", "timm", "keras")]
    sessions = [(first, "t_healthy"), ([n for n in names if n not in first], "d_healthy")]
    items, outputs, codes = run_sessions(root, sessions, env=trainer_env())
    check_sessions(outputs, codes)
    assert {(g, r) for (g, r) in items} == {(g, n) for g in GATE_NAMES for n in names}
    problems = item_problems(items, root, lambda run: BREAKAGES[run][2], lambda run: HEALTHY_OF[run], _never_outside)
    assert not problems, "\n".join(problems)
    assert not (root / "runs" / MARKER_NAME).exists()
    # the healthy controls are read, and so is a run still being written
    for control in ("u_healthy", "t_healthy", "k_healthy", "d_healthy", "w_healthy", "w_cut_mid_record"):
        assert not items[("finite_log", control)]["failed"], (control, items[("finite_log", control)]["line"])
    # a timm checkpoint that pickles code is refused, never loaded
    assert "refused" in str(items[("checkpoint_softmax", "t_best_runs_code")]["line"])
    assert "never opened" in str(items[("checkpoint_softmax", "u_best_runs_code")]["line"])
    # the hostile entries (a FIFO, a symlink out of the run) are refused where a reader meets them
    # a last.pt that would run code is read as opcodes only: stopped early, the marker never made
    assert "training stopped before its end" in str(items[("log_complete", "u_last_runs_code")]["line"])
    for name, piece in (("u_last_fifo", "FIFO"), ("u_last_symlink_out", "outside")):
        assert piece in str(items[("log_complete", name)]["line"]), (name, items[("log_complete", name)]["line"])
    for name, piece in (("u_results_symlink_out", "outside"), ("t_summary_symlink_out", "outside"),
                        ("d_tsv_fifo", "FIFO"), ("w_wandb_fifo", "FIFO"), ("w_wandb_symlink_out", "outside")):
        assert piece in str(items[("finite_log", name)]["line"]), (name, items[("finite_log", name)]["line"])
