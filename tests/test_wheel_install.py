"""The plugin as a user installs it: a wheel built from this checkout, in a fresh venv.

``pip install pytest-mlgates`` must install the import package ``pytest_mlgates`` and the
``mlgates`` command, and nothing else: a top-level ``model`` from us would shadow the
``model.py`` that many ML projects have (examples/wine_project has one on purpose).  Gates
that need torch import it when they run, and without it fail in one line naming the extra.

The venvs are built once per session (tests/user_venv.py): ``bare`` holds the wheel and its
required dependencies, ``full`` what examples/wine_project/requirements.txt asks for.
"""

from __future__ import annotations

import ast
import json
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from user_venv import REPO_ROOT, UserVenv, junit_results

PLUGIN_SOURCES = REPO_ROOT / "src" / "pytest_mlgates"
HEAVY = ("torch", "sklearn", "matplotlib", "lightning", "PIL", "model")

# what gates on the log alone need: no checkpoint, no model
LOG_ONLY_GATES = """\
title: Wine classifier, log-only criteria
{run}exit_criteria:
  - name: no_nan
    gate: finite_log
  - name: every_class_learned
    gate: class_recall
    floor: 0.5
  - name: val_loss_improves
    check: "min(val_loss) < 0.5 * first(val_loss)"
  - name: splits_disjoint
    gate: split_integrity
"""
PLAIN_RUN_SECTION = """\
run:
  format: plain
  log: logs/metrics.csv
  epochs_from: 1
  splits: splits.json
"""

# loaded with -p: which heavy modules a whole session imported, written at its very end
HEAVY_PROBE = f"""
import json, os, sys

def pytest_unconfigure(config):
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
    with open(os.environ["HEAVY_PROBE_OUT"], "w") as fh:
        json.dump(heavy, fh)
"""



# --------------------------------------------------------------------------- the wheel


@pytest.mark.slow
def test_wheel_holds_only_pytest_mlgates(plugin_wheel: Path) -> None:
    with zipfile.ZipFile(plugin_wheel) as whl:
        names = whl.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        entry_points = whl.read(f"{dist_info}/entry_points.txt").decode()
        top_level = whl.read(f"{dist_info}/top_level.txt").decode().split() if f"{dist_info}/top_level.txt" in names else None
    assert {n.split("/")[0] for n in names} == {"pytest_mlgates", dist_info}
    assert not any(n == "model.py" or n.startswith("model/") for n in names)
    assert top_level in (None, ["pytest_mlgates"])
    assert "mlgates = pytest_mlgates.plugin" in entry_points  # pytest11
    assert "mlgates = pytest_mlgates.cli:main" in entry_points  # console script


def _imports_of_model(path: Path) -> list[str]:
    """``import model...`` / ``from model... import`` / ``import_module("model...")`` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            names = [str(node.args[0].value)]
        found += [f"{path.relative_to(REPO_ROOT)}:{getattr(node, 'lineno', 0)}: {n}" for n in names
                  if n == "model" or n.startswith("model.")]
    return found


def test_plugin_sources_import_nothing_from_model() -> None:
    """The plugin never imports the engine: in a user's venv ``model`` is the user's module."""
    found = [hit for path in sorted(PLUGIN_SOURCES.rglob("*.py")) for hit in _imports_of_model(path)]
    assert found == []


# --------------------------------------------------------------------------- the bare venv


@pytest.mark.slow
def test_bare_venv_has_the_plugin_and_no_model(bare_venv: UserVenv, tmp_path: Path) -> None:
    probe = ("import importlib.util as u, json, pytest_mlgates\n"
             "print(json.dumps({'file': pytest_mlgates.__file__,"
             " 'found': {m: u.find_spec(m) is not None for m in ('model', 'torch', 'sklearn', 'lightning')}}))")
    proc = bare_venv.run(["python", "-c", probe], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert Path(result["file"]).is_relative_to(bare_venv.path)  # the installed copy, not src/
    assert result["found"] == {"model": False, "torch": False, "sklearn": False, "lightning": False}


@pytest.mark.slow
def test_mlgates_command_and_pytest_options(bare_venv: UserVenv, tmp_path: Path) -> None:
    proc = bare_venv.run(["mlgates", "--help"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for command in ("verdict", "history", "prove"):
        assert command in proc.stdout
    proc = bare_venv.run(["pytest", "--help"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--run-dir" in proc.stdout  # the pytest11 entry point registered the plugin


@pytest.mark.slow
def test_checkpoint_gate_without_torch_names_the_extra(
        bare_venv: UserVenv, wine_project: Path, wine_run: Callable[[str, str], Path],
        copy_run: Callable[[Path, Path], Path], tmp_path: Path) -> None:
    """Log gates are GREEN without torch; each gate that opens a checkpoint fails its item
    with one line naming ``pytest-mlgates[torch]``, never a traceback."""
    run = copy_run(wine_run("lightning", "healthy"), tmp_path / "run")
    # --run-format: this test is about the missing extra, not about format detection
    proc = bare_venv.run(["pytest", "acceptance/lightning.gates.yaml", "--run-dir", run, "--run-format",
                          "lightning", "-p", "no:cacheprovider", f"--junitxml={tmp_path / 'j.xml'}"],
                         cwd=wine_project)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    results = junit_results(tmp_path / "j.xml")
    for criterion in ("no_nan", "every_class_learned", "val_loss_improves", "good_enough", "splits_disjoint"):
        assert results[criterion][0] == "GREEN", (criterion, results[criterion])
    for criterion in ("one_best_checkpoint_per_tracked_metric", "best_model_gives_a_softmax"):
        status, line = results[criterion]
        assert status != "GREEN", (criterion, line)
        assert "\n" not in line.strip() and "needs torch" in line and "pip install 'pytest-mlgates[torch]'" in line


# --------------------------------------------------------------------------- the full venv


@pytest.mark.slow
def test_users_own_tests_import_their_model(full_venv: UserVenv, wine_project: Path) -> None:
    """``pytest`` in the project (the plugin loaded) runs the user's tests against their model.py."""
    proc = full_venv.run(["pytest", "-p", "no:cacheprovider", "-q"], cwd=wine_project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" in proc.stdout


@pytest.mark.slow
def test_users_model_beside_in_flight_and_preflight_api(
        full_venv: UserVenv, wine_project: Path, wine_run: Callable[[str, str], Path],
        copy_run: Callable[[Path, Path], Path], tmp_path: Path) -> None:
    """Every plugin module imported, then the project's own ``import model``; the in-flight
    gates judge a real run and ``PreflightSubject`` takes the user's factory from it."""
    run = copy_run(wine_run("lightning", "healthy"), tmp_path / "run")
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys, warnings
        warnings.simplefilter("error")   # an in-flight criterion that cannot be judged warns
        import pytest_mlgates
        for info in pkgutil.walk_packages(pytest_mlgates.__path__, "pytest_mlgates."):
            # the modules that import a trainer library or pytest-xdist (not in this venv; the
            # plugin imports sweep only from xdist's own hook)
            if info.name.split(".")[-1] not in ("lightning", "huggingface", "subject_lightning", "subject_hf",
                                                "sweep"):
                importlib.import_module(info.name)
        assert "model" not in sys.modules, sys.modules["model"]
        from pytest_mlgates import PreflightSubject
        from pytest_mlgates.inflight import Gates

        import model
        import torch
        from wine.data import load_data
        data = load_data()
        subject = PreflightSubject(
            model=model.build_model,
            loaders={{"train": [(data.x["train"], data.y["train"])], "val": [(data.x["val"], data.y["val"])]}},
            loss=torch.nn.CrossEntropyLoss(), num_classes=3)
        verdict = Gates("acceptance/lightning.gates.yaml", run_dir={str(run)!r}, run_format="lightning").check(15)
        assert not verdict.red, verdict.reason
        print(sys.modules["model"].__file__)
    """)
    proc = full_venv.run(["python", "-c", script], cwd=wine_project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Path(proc.stdout.strip().splitlines()[-1]) == wine_project / "model.py"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lightning", "plain"])
def test_log_only_session_imports_no_torch(
        kind: str, full_venv: UserVenv, wine_project: Path, wine_run: Callable[[str, str], Path],
        copy_run: Callable[[Path, Path], Path], tmp_path: Path) -> None:
    """torch is installed, and a session of log-only gates still never imports it (nor
    scikit-learn, Lightning, the user's model.py)."""
    run = copy_run(wine_run(kind, "healthy"), tmp_path / "run")
    gates = tmp_path / "gates" / "log_only.gates.yaml"
    gates.parent.mkdir()
    gates.write_text(LOG_ONLY_GATES.format(run=PLAIN_RUN_SECTION if kind == "plain" else ""))
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "heavy_probe.py").write_text(HEAVY_PROBE)
    extra = ["--run-format", "lightning"] if kind == "lightning" else []
    proc = full_venv.run(["pytest", gates, "--run-dir", run, *extra, "-p", "heavy_probe", "-p", "no:cacheprovider"],
                         cwd=wine_project, env={"PYTHONPATH": str(tmp_path / "probe"),
                                                "HEAVY_PROBE_OUT": str(tmp_path / "heavy.json")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout
    assert json.loads((tmp_path / "heavy.json").read_text()) == []
