"""Every gate against a corpus of broken run dirs: each gives a verdict or one MlgatesError
line -- never another exception, never a multi-line message, never an internal error."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gate_helpers import make_run, run_gate

from pytest_mlgates.errors import MlgatesError
from pytest_mlgates.gates import GATE_NAMES


def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _dir_instead(path: Path) -> None:
    path.unlink()
    path.mkdir()


BREAKAGES: dict[str, Callable[[Path], None]] = {
    "no log": lambda d: [(d / f).unlink() for f in ("training_log.csv", "metric_history.json")],
    "ragged csv": lambda d: (d / "training_log.csv").write_text("epoch,train_loss,val_loss\n1,0.5\n"),
    "non-numeric cell": lambda d: (d / "training_log.csv").write_text("epoch,val_loss\n1,oops\n"),
    "header only": lambda d: (d / "training_log.csv").write_text("epoch,train_loss,val_loss\n"),
    "nan strings": lambda d: (d / "training_log.csv").write_text(
        (d / "training_log.csv").read_text().replace("0.46", "nan").replace("0.3,", "inf,")),
    "truncated results": lambda d: _truncate(d / "training_results.json", 30),
    "truncated checkpoints": lambda d: [_truncate(p) for p in (d / "checkpoints").glob("*.pt")],
    "directories for files": lambda d: [_dir_instead(d / "training_log.csv"), _dir_instead(d / "checkpoints" / "final.pt")],
    "png that is not a png": lambda d: [(d / "plots" / n).write_text("hello") for n in ("loss_curve.png", "recall_curve.png")],
    "splits not an object": lambda d: (d / "splits.json").write_text("[1, 2, 3]"),
    "config a list": lambda d: (d / "config.yaml").write_text("- a\n- b\n"),
    "config python tag": lambda d: (d / "config.yaml").write_text("!!python/object/apply:os.getcwd []\n"),
    "metric history garbage": lambda d: (d / "metric_history.json").write_text(json.dumps({"rows": [1, 2]})),
    "provenance truncated": lambda d: _truncate(d / "provenance.json", 10),
}

PARAMS = {
    "artifact": {"path": "training_log.csv", "contains": "epoch"},
    "key_link": {"from": "checkpoints/final.pt", "to": "src/model/train.py", "pattern": "save_checkpoint"},
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("pristine") / "run")


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_every_gate_survives(breakage: str, pristine: Path, tmp_path: Path) -> None:
    d = Path(shutil.copytree(pristine, tmp_path / "run"))
    BREAKAGES[breakage](d)
    tried = 0
    for gate in GATE_NAMES:
        started = time.perf_counter()
        try:
            result = run_gate(d, gate, PARAMS.get(gate), baseline=d if gate == "baseline" else None)
            message = result.message
        except MlgatesError as err:
            message = str(err)
        tried += 1
        assert "\n" not in message, (gate, message)
        assert "internal error" not in message, (gate, message)
        assert time.perf_counter() - started < 60, gate
    assert tried == len(GATE_NAMES)
