"""Every built-in gate against every broken run dir of another trainer, in real pytest sessions.

``tests/broken_foreign.py`` copies real healthy Lightning, HF Trainer, MLflow (SQLite and
file store) and TensorBoard runs and breaks one thing in each copy (ragged or 2 GB
``metrics.csv``, callback state of the wrong types, hostile pickles, corrupt safetensors
headers, a truncated ``mlflow.db``, garbage event files...). Two pytest sessions run one
criterion per built-in gate against all entries: 18 gates x 36 broken entries = 648 items
(plus the 5 healthy controls, 90 more). The promise is the one of
``test_broken_corpus.py``: a failed item with one line naming the file -- never an
INTERNALERROR, a traceback into the plugin, a hang, a slow item, or code run from the run dir.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from broken_foreign import BREAKAGES, HEALTHY_OF, SOURCES, build_foreign_corpus
from broken_runs import MARKER_NAME
from test_broken_corpus import CONFTEST, check_sessions, gate_file_text, item_problems, run_sessions

from conftest import TRAINER_SCRIPTS, need_package, trainer_env
from pytest_mlgates.gates import GATE_NAMES

pytestmark = pytest.mark.slow

SESSION_TIMEOUT_S = 180
#: Gate parameters: the ones every gate needs, and the model class the trainers trained, so
#: that checkpoint_softmax really loads (and is refused) weights instead of stopping early.
PARAMS: dict[str, dict[str, Any]] = {
    "artifact": {"path": "metrics.csv", "contains": "epoch"},
    "key_link": {"from": "checkpoints/final.pt", "to": "src/train.py", "pattern": "save_checkpoint"},
    "checkpoint_softmax": {"model": "digits_model:DigitsMLP", "input_shape": [16, 64]},
}
#: The gate file's name map of examples/any-trainer.gates.yaml: HF logs eval_* names.
METRICS_MAP = {"val_loss": "eval_loss", "train_loss": "loss", "val_min_recall": "eval_min_recall",
               "val_recall_*": "eval_recall_*"}
#: (gate, entry) -> a piece of the one line it must fail with: what each breakage found
#: before this corpus existed (a garbled or misleading line, a followed symlink) now says.
EXPECTED_LINES = {
    ("best_checkpoints", "l_cb_best_path_int"): "last.ckpt: ModelCheckpoint(monitor='val_loss') best_model_path is 7 (int)",
    ("best_checkpoints", "l_cb_state_not_dict"): "last.ckpt: callbacks[ModelCheckpoint] is a str",
    ("best_checkpoints", "l_cb_monitor_int"): "last.ckpt: callbacks[ModelCheckpoint] monitor 7 (int)",
    ("best_checkpoints", "l_cb_best_score_string"): "best_model_score 'very good' is not a number",
    ("best_checkpoints", "l_ckpt_runs_code"): "last.ckpt: refused to load",
    ("checkpoint_softmax", "l_checkpoints_symlink_out"): "checkpoints/last.ckpt: symlink leads outside the run dir",
    ("shortcut", "l_checkpoints_symlink_out"): "checkpoints/last.ckpt: symlink leads outside the run dir",
    ("best_checkpoints", "hf_best_metric_string"): "trainer_state.json: best_metric 'low'",
    ("best_checkpoints", "hf_log_history_not_list"): "trainer_state.json: no 'log_history' list",
    ("best_checkpoints", "hf_checkpoint_a_file"): "checkpoint-80: a file, not a checkpoint folder",
    ("checkpoint_softmax", "hf_bin_runs_code"): "pytorch_model.bin: refused to load",
    ("checkpoint_softmax", "hf_index_dotdot_shard"): "shard name '../x.safetensors' refused",
    ("finite_log", "m_db_two_runs"): "mlflow.db: 2 runs",
    ("finite_log", "tb_garbage_file"): "events.out.tfevents.x: corrupt event file",
}
FOREIGN_CONFTEST = CONFTEST + """
    import digits_model, safetensors.torch, tensorboard.compat.proto.event_pb2  # noqa: F401
"""


def _sessions(names: list[str]) -> list[list[str]]:
    """Lightning + TensorBoard in one session, HF + MLflow in the other (about half each)."""
    first = [n for n in names if BREAKAGES[n][0] in ("lightning", "tensorboard")]
    return [first, [n for n in names if n not in first]]


@dataclass
class ForeignResults:
    root: Path
    entries: list[str]
    items: dict[tuple[str, str], dict[str, object]]  # (gate, entry) -> what JUnit said
    outputs: list[str]
    codes: list[int]


def _run_sessions(root: Path, entries: list[str]) -> ForeignResults:
    sessions = [(names, next(n for n in names if n.endswith("_healthy"))) for names in _sessions(entries)]
    items, outputs, codes = run_sessions(root, sessions, env=trainer_env())
    return ForeignResults(root, entries, items, outputs, codes)


@pytest.fixture(scope="module")
def foreign_results(tmp_path_factory: pytest.TempPathFactory,
                    trainer_run: Callable[[str, str], Path]) -> ForeignResults:
    for trainer in SOURCES:
        need_package(TRAINER_SCRIPTS[trainer][2])
    sources = {trainer: trainer_run(trainer, "healthy") for trainer in SOURCES}
    root = tmp_path_factory.mktemp("foreign")
    entries = build_foreign_corpus(root / "runs", sources)
    (root / "acc.gates.yaml").write_text(
        gate_file_text(PARAMS, METRICS_MAP, "every gate against the broken foreign corpus"))
    (root / "conftest.py").write_text(FOREIGN_CONFTEST)
    (root / "src").mkdir()
    (root / "src" / "train.py").write_text("def save_checkpoint(): ...\n")
    return _run_sessions(root, list(entries))


def _foreign_only(gate: str, run: str, line: str) -> str | None:
    if "/_outside/" in line and "refused" not in line:  # a file reached through a symlink out of the run dir
        return "followed a symlink out of the run dir"
    if "/config.yaml:" in line:  # the engine's file: other trainers write none
        return "blames the engine's config.yaml"
    return None


def test_every_gate_meets_every_broken_foreign_run_in_one_line(foreign_results: ForeignResults) -> None:
    root, entries, items = foreign_results.root, foreign_results.entries, foreign_results.items
    check_sessions(foreign_results.outputs, foreign_results.codes)

    broken = [n for n in entries if not n.endswith("_healthy")]
    tried = {(g, r) for (g, r) in items if not r.endswith("_healthy")}
    print(f"\n{len(GATE_NAMES)} gates x {len(broken)} broken foreign run dirs = {len(tried)} combinations tried")
    assert tried == {(g, n) for g in GATE_NAMES for n in broken}

    problems = item_problems(items, root, lambda run: BREAKAGES[run][2], lambda run: HEALTHY_OF[run],
                             _foreign_only)
    assert not problems, "\n".join(problems)

    wrong = {key: items[key]["line"] for key, piece in EXPECTED_LINES.items()
             if not items[key]["failed"] or piece not in str(items[key]["line"])}
    assert not wrong, wrong

    # Healthy controls really are read: the log gates pass on each trainer's healthy copy.
    for control in sorted(set(HEALTHY_OF.values())):
        assert not items[("finite_log", control)]["failed"], (control, items[("finite_log", control)]["line"])

    # No hostile pickle (checkpoint, pytorch_model.bin, training_args.bin) and no YAML python
    # tag ran. (Checked here, not in a test of its own, so xdist never runs the sessions twice.)
    assert not (root / "runs" / MARKER_NAME).exists()
    for hostile in ("l_ckpt_runs_code", "hf_bin_runs_code"):
        refused = [i["line"] for (g, r), i in items.items() if r == hostile and "refused" in str(i["line"])]
        assert refused, f"no gate reported the weights of {hostile} as refused"
