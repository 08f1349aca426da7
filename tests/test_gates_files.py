"""File gates (provenance, plots, artifact, key_link, split_integrity) and the registry."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from gate_helpers import _png, edit_json, make_run, run_gate

from pytest_mlgates.errors import MlgatesError, RunDirError
from pytest_mlgates.gates import GATE_NAMES, get_gate, validate_params


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("good") / "run")


@pytest.fixture
def copy(good: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "run"))


# --------------------------------------------------------------------------- registry


def test_registry_names_and_lazy_import() -> None:
    import subprocess
    import sys

    assert list(GATE_NAMES) == sorted(GATE_NAMES)
    for name in ("finite_log", "best_checkpoints", "shortcut", "provenance", "reproduces", "split_integrity"):
        assert name in GATE_NAMES
    code = ("import sys, pytest_mlgates.gates as g, pytest_mlgates.rundir; g.validate_params('class_recall', {'floor': 0.1});"
            "print(sorted(m for m in ('torch','numpy','sklearn','matplotlib','yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_gate_and_parameter_suggest_the_closest() -> None:
    with pytest.raises(MlgatesError, match=r"unknown gate 'finite_logs'; did you mean 'finite_log'\?"):
        get_gate("finite_logs")
    with pytest.raises(MlgatesError, match=r"gate class_recall: unknown parameter 'flor'; did you mean 'floor'\?"):
        validate_params("class_recall", {"flor": 0})
    with pytest.raises(MlgatesError, match=r"gate class_recall: parameter 'floor' must be a number, got 'high'"):
        validate_params("class_recall", {"floor": "high"})
    with pytest.raises(MlgatesError, match=r"parameter 'at' must be 'final', 'best' or 'all'"):
        validate_params("class_recall", {"at": "last"})
    with pytest.raises(MlgatesError, match=r"gate key_link: parameter 'to' is required"):
        validate_params("key_link", {"from": "x"})
    with pytest.raises(MlgatesError, match=r"loads.*unknown key 'shape'"):
        validate_params("artifact", {"path": "x", "loads": {"softmax": True, "shape": [1]}})
    validate_params("best_checkpoints", {"metrics": ["val_loss", {"metric": "val_dice", "mode": "max"}]})
    validate_params("artifact", {"path": "x.pt", "loads": "softmax", "name": "ignored", "stage": "inflight"})
    validate_params("baseline", {"metrics": {"val_loss": {"mode": "min", "abs": 0.01, "rel": 0.05}}})


def test_every_gate_has_a_spec_with_defaults() -> None:
    for name in GATE_NAMES:
        spec = get_gate(name)
        assert spec.name == name and spec.doc
        assert set(spec.defaults) <= spec.params


# --------------------------------------------------------------------------- provenance


def test_provenance_green(good: Path) -> None:
    r = run_gate(good, "provenance")
    assert r.passed and "from configs/x.yaml" in r.message


def test_provenance_red_cases(copy: Path) -> None:
    (copy / "config.yaml").write_text((copy / "config.yaml").read_text() + "\n# edited later\n")
    r = run_gate(copy, "provenance")
    assert not r.passed and "config.yaml: sha256 = " in r.message and "changed after the run" in r.message
    edit_json(copy / "provenance.json", lambda d: d.update(config_path=None))
    r = run_gate(copy, "provenance")
    assert not r.passed and "config_path = None; needs a run launched from an experiment config" in r.message
    edit_json(copy / "provenance.json", lambda d: d.update(config_path="c.yaml", allow_defaults=True))
    assert "allow_defaults = true" in run_gate(copy, "provenance").message
    (copy / "provenance.json").unlink()
    r = run_gate(copy, "provenance")
    assert not r.passed and r.message.endswith("provenance.json: not found; needs provenance written at launch")


# --------------------------------------------------------------------------- plots


def test_plots_green(good: Path) -> None:
    r = run_gate(good, "plots")
    assert r.passed and r.value == "2 files"


def test_plots_red_cases(copy: Path) -> None:
    (copy / "plots" / "loss_curve.png").write_bytes(b"GIF89a not a png at all")
    r = run_gate(copy, "plots")
    assert not r.passed and "loss_curve.png: not a PNG (bad signature)" in r.message
    _png(copy / "plots" / "loss_curve.png", blank=True)
    r = run_gate(copy, "plots")
    assert not r.passed and "loss_curve.png: blank image" in r.message
    (copy / "plots" / "recall_curve.png").unlink()
    r = run_gate(copy, "plots", {"files": "plots/recall_curve.png"})
    assert not r.passed and "recall_curve.png: not found" in r.message
    data = (copy / "plots" / "loss_curve.png").read_bytes()
    (copy / "plots" / "x.png").write_bytes(data[:60])
    r = run_gate(copy, "plots", {"files": ["plots/x.png"], "min_size": 10})
    assert not r.passed and "x.png: PNG does not decode" in r.message


# --------------------------------------------------------------------------- artifact and key_link


def test_artifact(good: Path) -> None:
    assert run_gate(good, "artifact", {"path": "training_log.csv", "contains": "epoch,train_loss,val_loss"}).passed
    r = run_gate(good, "artifact", {"path": "training_log.csv", "contains": "val_dice"})
    assert not r.passed and "'val_dice' not found" in r.message
    r = run_gate(good, "artifact", {"path": "checkpoints/best_val_dice.pt", "provides": "best by dice"})
    assert not r.passed and r.message.endswith("checkpoints/best_val_dice.pt: not found; needs best by dice")
    with pytest.raises(RunDirError, match="'..' refused"):
        run_gate(good, "artifact", {"path": "../../etc/passwd"})


def test_artifact_loads_softmax(good: Path) -> None:
    r = run_gate(good, "artifact", {"path": "checkpoints/best_val_loss.pt", "loads": "softmax"})
    assert r.passed and "gives a valid softmax over 2 classes" in r.message


def test_key_link(good: Path, tmp_path: Path) -> None:
    root = tmp_path / "code"
    (root / "src").mkdir(parents=True)
    (root / "src" / "engine.py").write_text("def save_checkpoint(obj, path):\n    pass\n")
    params = {"from": "checkpoints/best_val_loss.pt", "to": "src/engine.py", "pattern": "save_checkpoint"}
    assert run_gate(good, "key_link", params, rootdir=root).passed
    assert run_gate(good, "key_link", {**params, "pattern": r"def save_\w+\("}, rootdir=root).passed
    r = run_gate(good, "key_link", {**params, "pattern": "torch.save"}, rootdir=root)
    assert not r.passed and "pattern 'torch.save' not found" in r.message
    r = run_gate(good, "key_link", {**params, "from": "checkpoints/best_val_dice.pt"}, rootdir=root)
    assert not r.passed and "best_val_dice.pt: not found" in r.message
    with pytest.raises(RunDirError, match="'..' refused"):
        run_gate(good, "key_link", {**params, "to": "../outside.py"}, rootdir=root)
    os.symlink(tmp_path, root / "escape")
    with pytest.raises(RunDirError, match="symlink leads outside the rootdir"):
        run_gate(good, "key_link", {**params, "to": "escape/x.py"}, rootdir=root)


# --------------------------------------------------------------------------- split_integrity


def test_split_integrity_green(good: Path) -> None:
    r = run_gate(good, "split_integrity")
    assert r.passed and r.value == "0"


def test_split_integrity_red_on_shared_index_and_group(copy: Path) -> None:
    def leak(d: dict) -> None:
        d["val"] = d["val"] + d["train"][:3]
    edit_json(copy / "splits.json", leak)
    r = run_gate(copy, "split_integrity")
    assert not r.passed and r.value == "3"
    assert r.message.startswith("indices in two splits = 3 (train & val: ")
    assert r.message.endswith("splits.json; needs 0")


def test_split_integrity_groups_and_foreign_path(tmp_path: Path, good: Path) -> None:
    d = make_run(tmp_path / "r", checkpoints=False)
    (d / "my_splits.json").write_text(json.dumps({
        "train": [0, 1, 2, 3], "val": [4, 5], "test": [6],
        "groups": {"train": [10, 10, 11, 12], "val": [13, 12], "test": [14]},
    }))
    r = run_gate(d, "split_integrity", {"path": "my_splits.json"})
    assert not r.passed
    assert "group ids in two splits = 1 (train & val: 12)" in r.message
    assert run_gate(d, "split_integrity", {"path": "my_splits.json", "splits": ["train", "test"]}).passed
    (d / "bad.json").write_text(json.dumps({"train": [0, "x", None], "val": [1]}))
    with pytest.raises(RunDirError, match=r"bad.json: train: None is not an integer or string id"):
        run_gate(d, "split_integrity", {"path": "bad.json"})
    with pytest.raises(RunDirError, match=r"no split 'holdout'"):
        run_gate(d, "split_integrity", {"path": "my_splits.json", "splits": ["train", "holdout"]})
