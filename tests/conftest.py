"""Shared fixtures: real training runs, trained once per test session.

``trained_run(overrides=(), config="configs/default.yaml")`` returns the path of a
completed run made by a real ``python -m model train`` subprocess. Runs are cached by a
hash of the config file's bytes and the overrides, in a directory that every xdist worker
of one session shares, behind a file lock -- so ten tests asking for the same run cost
one training, whichever worker gets there first. Tests that change a run copy it first::

    def test_something(trained_run, copy_run, tmp_path):
        run = copy_run(trained_run(SMALL_OVERRIDES), tmp_path / "run")
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import user_venv
from user_venv import UserVenv

# Imported here, before any in-process ``pytester.runpytest``: pytester drops the modules an
# inner session imported when it ends, and PyYAML's C extension cannot be loaded twice -- a
# re-imported ``yaml`` then builds nodes its new constructor does not know ("could not
# determine a constructor for the tag None"). Modules loaded before the inner run are kept.
import yaml  # noqa: F401  # isort: skip
# The same for numpy (the run's log is numpy columns since runlog.py): a numpy imported
# inside an inner session and dropped after it cannot be loaded again in this process
# ("cannot load module more than once per process").
import numpy  # noqa: F401  # isort: skip
# And torch: the ``pytester`` fixture itself drops, when its test ends, every module first
# imported during the test, so a test that used it and loaded a checkpoint (torch's first
# import in that process) left the next test's ``import torch`` to load torch._C again
# ("SystemError: bad call flags", then a segfault in garbage collection). The whole suite
# imports torch while collecting test_data.py; a run of a few files did not.
try:  # the suite runs without torch too (its tests skip)
    import torch  # noqa: F401  # isort: skip
except ImportError:
    pass

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "configs/default.yaml"

# A run small enough for tests (seconds on two cores); tests add what they need.
small_overrides: tuple[str, ...] = ("train.epochs=3", "train.progress_bar=false")
SMALL_OVERRIDES = small_overrides


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked slow first, in their files' order. ``make test`` runs two xdist
    workers that take the tests in this order (``--dist worksteal``: one that runs out
    takes half of the other's queue): a 90 s test dealt last left one worker waiting on
    the other for 71 s (the vision trainers' session, last in the alphabet); slow tests
    first leave the short ones, which split well, for the end. Measured on the whole
    suite: 17:08 in alphabetical order, 18:00 slow-first with the default scheduling
    (one worker's queue held the slow ones), 16:01 slow-first with worksteal."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable


def model_command(*args: str) -> list[str]:
    """``python -m model ...`` with this interpreter."""
    return [sys.executable, "-m", "model", *args]


def train_command(run_dir: Path | str, overrides: Sequence[str] = (),
                  config: str | None = DEFAULT_CONFIG, *extra: str) -> list[str]:
    cmd = model_command("train", "--run-dir", str(run_dir))
    if config is not None:
        cmd += ["--config", config]
    for override in overrides:
        cmd += ["--override", override]
    return cmd + list(extra)


def run_model(args: list[str], *, timeout: float = 300, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess[str]:
    """Run a model command from the repo root (configs/ and acceptance/ are relative)."""
    return subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


def _shared_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # under xdist each worker has its own basetemp below one session dir: share that one
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / "mlgates-runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_key(config: str, overrides: Sequence[str]) -> str:
    h = hashlib.sha256((REPO_ROOT / config).read_bytes())
    for override in overrides:
        h.update(b"\0" + override.encode())
    return h.hexdigest()[:16]


def _is_finished(run_dir: Path) -> bool:
    try:
        status = json.loads((run_dir / "training_results.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return False
    return status in ("completed", "early_stopped") and (run_dir / "checkpoints/final.pt").is_file()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``trained_run(overrides=(), config=DEFAULT_CONFIG) -> Path`` of a finished run."""
    from filelock import FileLock

    cache = _shared_cache_dir(tmp_path_factory)

    def make(overrides: Sequence[str] = (), config: str = DEFAULT_CONFIG) -> Path:
        overrides = tuple(overrides)
        run_dir = cache / _run_key(config, overrides)
        with FileLock(str(run_dir) + ".lock"):
            if not _is_finished(run_dir):
                proc = run_model(train_command(run_dir, overrides, config, "--fresh"))
                if proc.returncode != 0 or not _is_finished(run_dir):
                    raise RuntimeError(
                        f"training {config} {list(overrides)} failed (exit {proc.returncode}): "
                        f"{proc.stderr.strip()[-2000:]}")
        return run_dir

    return make


def log_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's training_log.csv so far ([] while it does not exist yet)."""
    try:
        with open(run_dir / "training_log.csv", newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return []


def copy_run(src: Path | str, dst: Path | str) -> Path:
    """Copy a run dir (e.g. a cached ``trained_run``) so a test may change it."""
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.lock"))
    return Path(dst)


@pytest.fixture(name="copy_run")
def copy_run_fixture() -> Callable[[Path | str, Path | str], Path]:
    return copy_run


# --------------------------------------------------------------------------- other trainers

TRAINER_SCRIPTS_DIR = REPO_ROOT / "tests" / "trainers"
TRAINER_EPOCHS = 4
# trainer -> (script in tests/trainers/, extra args, the package it needs)
TRAINER_SCRIPTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "lightning": ("lightning_run.py", (), "lightning"),
    "huggingface": ("hf_run.py", (), "transformers"),
    "mlflow-sqlite": ("mlflow_run.py", ("--store", "sqlite"), "mlflow"),
    "mlflow-file": ("mlflow_run.py", ("--store", "file"), "mlflow"),
    "tensorboard": ("tb_run.py", (), "tensorboard"),
    # Lightning logging to MLflow by global step (MLFlowLogger), not to CSV
    "lightning-mlflow": ("lightning_run.py", ("--mlflow",), "lightning"),
    # two ModelCheckpoint callbacks: val_loss (min) and val_min_recall (max)
    "lightning-2ckpt": ("lightning_run.py", ("--track-recall",), "lightning"),
    # the same, 3 epochs: val_min_recall improves in the last one, so last.ckpt (saved by the
    # val_loss callback first) holds a stale best path of the recall callback
    "lightning-2ckpt-3": ("lightning_run.py", ("--track-recall", "--epochs", "3"), "lightning"),
    # last.ckpt written by trainer.save_checkpoint after fit: its epoch is one past the log's
    "lightning-after-fit": ("lightning_run.py", ("--save-after-fit",), "lightning"),
    # val_loss gets worse in the last epoch: ModelCheckpoint(save_last=True) leaves last.ckpt stale
    "lightning-worse-last": ("lightning_run.py", ("--worse-last",), "lightning"),
    # ... and the fix: save_last on a ModelCheckpoint(monitor=None) of its own
    "lightning-worse-last-fixed": ("lightning_run.py", ("--worse-last", "--last-every-epoch"), "lightning"),
    # a hand-written loop: its gate file's run: section says where the log and files are
    "plain": ("plain_run.py", (), "torch"),
    "plain-15": ("plain_run.py", ("--epochs", "15"), "torch"),
    # a TensorBoardLogger beside the CSVLogger: its event file in the same version dir
    "lightning-tb": ("lightning_run.py", ("--tb",), "lightning"),
}


def need_package(package: str) -> None:
    """Skip without ``package`` -- found, not imported: importing Lightning and transformers
    into one test process costs seconds and has crashed the interpreter at exit."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install -e '.[trainers]')")


def trainer_env() -> dict[str, str]:
    """The environment the trainer scripts and gate sessions on their runs need: the digits
    model importable as ``digits_model``, MLflow's file store allowed, synchronous logging."""
    path = os.pathsep.join(p for p in (str(TRAINER_SCRIPTS_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
            "MLFLOW_ALLOW_FILE_STORE": "true"}


#: The faults the suite asks of each trainer (the rest: "healthy" only). Every run of one
#: script is trained in ONE process (``--batch``: the trainer library is imported once, and
#: that import is most of a run's cost), each run still a run of its own.
TRAINER_FAULTS: dict[str, tuple[str, ...]] = {
    **{t: ("healthy", "collapsed", "nan", "no_best")
       for t in ("lightning", "huggingface", "mlflow-sqlite", "mlflow-file", "tensorboard", "plain")},
    "plain-15": ("collapsed",),
}


#: a package a run needs besides its trainer's: without it, that run is left out of its batch
ALSO_NEEDS = {"lightning-mlflow": "mlflow", "lightning-tb": "tensorboard"}


def _script_batch(trainer: str, fault: str) -> list[tuple[str, str]]:
    """Every (trainer, fault) run made by ``trainer``'s script, ``(trainer, fault)`` among them."""
    script = TRAINER_SCRIPTS[trainer][0]
    import importlib.util

    batch = [(t, f) for t, (s, _, _) in TRAINER_SCRIPTS.items()
             if s == script and (t not in ALSO_NEEDS or importlib.util.find_spec(ALSO_NEEDS[t]) is not None)
             for f in TRAINER_FAULTS.get(t, ("healthy",))]
    return batch if (trainer, fault) in batch else [(trainer, fault)]


def _train_batch(script: str, jobs: list[list[str]], spec: Path,
                 ) -> tuple[subprocess.CompletedProcess[str], dict[int, str]]:
    """``tests/trainers/<script> --batch SPEC``: every job (a command line) one run, all in one
    process, run in SPEC's folder; the process, and ``{job index: run dir}`` of the runs it
    finished (each printed as ``run-dir <index> <path>``, so a failure keeps those before it)."""
    spec.write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, str(TRAINER_SCRIPTS_DIR / script), "--batch", str(spec)],
                          capture_output=True, text=True, timeout=900, env=trainer_env(), cwd=spec.parent,
                          check=False)
    made = {int(i): path for i, path in re.findall(r"^run-dir (\d+) (.+)$", proc.stdout, re.MULTILINE)}
    return proc, made


@pytest.fixture(scope="session")
def trainer_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """Factory: ``trainer_run(trainer, fault) -> run dir`` of a real Lightning / HF Trainer /
    MLflow / TensorBoard run (tests/trainers/), trained once per session and shared by the
    xdist workers like ``trained_run``. Faults: healthy, collapsed, nan, no_best. The first
    call for a script trains every run of that script the suite asks for (TRAINER_FAULTS) in
    one process of it; later calls find theirs done."""
    from filelock import FileLock

    cache = _shared_cache_dir(tmp_path_factory) / "trainers"
    cache.mkdir(exist_ok=True)

    def make(trainer: str, fault: str = "healthy") -> Path:
        script, _, package = TRAINER_SCRIPTS[trainer]
        need_package(package)
        done = cache / f"{trainer}-{fault}.done"
        with FileLock(str(cache / script) + ".lock"):
            if not done.exists():
                todo = [(t, f) for t, f in _script_batch(trainer, fault) if not (cache / f"{t}-{f}.done").exists()]
                jobs = []
                for t, f in todo:
                    shutil.rmtree(cache / f"{t}-{f}", ignore_errors=True)
                    jobs.append([str(cache / f"{t}-{f}"), "--fault", f, "--epochs", str(TRAINER_EPOCHS),
                                 *TRAINER_SCRIPTS[t][1]])
                proc, made = _train_batch(script, jobs, cache / f"{script}.jobs.json")
                for i, (t, f) in enumerate(todo):  # the runs finished before a failure count
                    if i in made:
                        (cache / f"{t}-{f}.done").write_text(made[i])
                if proc.returncode != 0:
                    raise RuntimeError(f"{script} {[' '.join(j) for j in jobs]} failed ({proc.returncode}): "
                                       f"{proc.stderr[-2000:]}")
        return Path(done.read_text().strip())

    return make


def script_runs(tmp_path_factory: pytest.TempPathFactory, script: str, name: str,
                jobs: dict[str, Sequence[str]]) -> dict[str, Path]:
    """``{label: run dir}``: ``tests/trainers/<script> --batch`` trains every job (OUT is
    <shared cache>/<name>/<label>, then the job's own options) in ONE process, once per
    session, shared by the xdist workers like ``trainer_run``; each job a run of its own."""
    from filelock import FileLock

    root = _shared_cache_dir(tmp_path_factory) / name
    done = root.with_suffix(".done")
    with FileLock(str(root) + ".lock"):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            proc, made = _train_batch(script, [[str(root / label), *args] for label, args in jobs.items()],
                                      root / "jobs.json")
            if proc.returncode != 0:
                raise RuntimeError(f"{script} --batch failed ({proc.returncode}): {proc.stderr[-3000:]}")
            done.write_text(json.dumps({label: made[i] for i, label in enumerate(jobs)}))
    return {label: Path(path) for label, path in json.loads(done.read_text()).items()}


def gated_script_runs(tmp_path_factory: pytest.TempPathFactory, script: str, gates_text: str,
                      summary_name: str) -> dict[str, tuple[dict[str, Any], Path]]:
    """The collapsing and the healthy run of a callback script (``tests/trainers/<script>``,
    in-flight gates ``gates_text``), trained in one process once per session by
    :func:`script_runs`: ``{"collapsing" | "healthy": (the summary it wrote, run dir)}``."""
    name = Path(script).stem
    gates = _shared_cache_dir(tmp_path_factory) / f"{name}.inflight.gates.yaml"
    tmp = gates.with_name(f"{gates.name}.{os.getpid()}")
    tmp.write_text(gates_text, encoding="utf-8")
    os.replace(tmp, gates)  # whole, whichever xdist worker writes it
    runs = script_runs(tmp_path_factory, script, name, {
        "collapsing": ["--gates", str(gates), "--collapse-from", "2", "--after-epoch", "1", "--epochs", "6"],
        "healthy": ["--gates", str(gates), "--after-epoch", "1", "--epochs", "4"]})
    # Lightning's run dir is <out>/lightning_logs/version_N; the summary lies in <out>
    return {label: (json.loads((run_dir.parents[1] if run_dir.name.startswith("version_") else run_dir)
                               .joinpath(summary_name).read_text(encoding="utf-8")), run_dir)
            for label, run_dir in runs.items()}


#: timm and Ultralytics import torchvision, and the registry's torchvision has no build for
#: this venv's CPU torch (``operator torchvision::nms does not exist``): their runs are
#: trained in a venv of their own, with a torch/torchvision pair built for each other (on
#: this machine both lie on disk; a CUDA build, which runs on the CPU). Override with
#: MLGATES_VISION_SPEC="torch==X torchvision==Y".
VISION_SPEC = os.environ.get("MLGATES_VISION_SPEC", "torch==2.14.1 torchvision==0.29.1").split()
VISION_PACKAGES = ("timm", "ultralytics", "scikit-learn", "pyyaml")


@pytest.fixture(scope="session")
def vision_python() -> str:
    """The python of a venv where timm and Ultralytics import (see VISION_SPEC): built once
    per machine under ~/.cache/pytest-mlgates (about 6 GB, 2-3 minutes from this disk),
    shared by xdist workers; the tests that need it skip, saying why, when pip cannot
    install it."""
    from filelock import FileLock

    wanted = " ".join([*VISION_SPEC, *VISION_PACKAGES])
    key = hashlib.sha256(wanted.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-mlgates"
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"vision-venv-{key}"
    done = venv / ".installed"
    python = venv / "bin" / "python"
    with FileLock(str(venv) + ".lock"):
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
            proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *VISION_SPEC, *VISION_PACKAGES],
                                  capture_output=True, text=True, timeout=1800, check=False)
            if proc.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                last = next((ln for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "")
                pytest.skip(f"cannot install {wanted} for timm/Ultralytics: {last[:300]}")
            done.write_text(wanted)
    return str(python)


# --------------------------------------------------------------------------- as a user installs it

# examples/wine_project's runs: (script, flags) per fault; the NaN epoch is each log's own
# numbering (the plain loop counts from 1, Lightning from 0), so both are the third epoch
WINE_FAULTS: dict[str, dict[str, tuple[str, ...]]] = {
    "plain": {"healthy": (), "collapsed": ("--drop-class", "2"), "nan": ("--nan-at-epoch", "3"),
              "gated": ("--drop-class", "2", "--gates", "acceptance/plain.gates.yaml")},
    "lightning": {"healthy": (), "collapsed": ("--drop-class", "2"), "nan": ("--nan-at-epoch", "2"),
                  "gated": ("--drop-class", "2", "--gates", "acceptance/lightning.gates.yaml")},
}


@pytest.fixture(scope="session")
def plugin_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel --no-deps .`` builds from (a clean copy of) this checkout."""
    return user_venv.shared_wheel(user_venv.shared_dir(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def bare_venv(tmp_path_factory: pytest.TempPathFactory, plugin_wheel: Path) -> UserVenv:
    """A fresh venv with the wheel and its required dependencies only (no torch)."""
    folder = user_venv.shared_dir(tmp_path_factory.getbasetemp())
    return user_venv.make_venv(folder / "bare", user_venv.bare_requirements(plugin_wheel))


@pytest.fixture(scope="session")
def full_venv(tmp_path_factory: pytest.TempPathFactory, plugin_wheel: Path) -> UserVenv:
    """A fresh venv with examples/wine_project/requirements.txt installed, the wheel for the
    release: torch (CPU), scikit-learn, Lightning and the plugin with its torch extra."""
    folder = user_venv.shared_dir(tmp_path_factory.getbasetemp())
    return user_venv.make_venv(folder / "full", user_venv.full_requirements(plugin_wheel))


@pytest.fixture(scope="session")
def wine_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/wine_project (the user's project, its own model.py included),
    shared by the session's workers; its runs are trained into its runs/."""
    from filelock import FileLock

    dest = user_venv.shared_dir(tmp_path_factory.getbasetemp()) / "wine_project"
    with FileLock(str(dest) + ".lock"):
        if not (dest / "model.py").exists():
            # what `make example` leaves there is not the project's
            shutil.copytree(user_venv.EXAMPLE, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
                "runs", ".venv", "__pycache__", ".*_cache"))
    return dest


@pytest.fixture(scope="session")
def wine_run(full_venv: UserVenv, wine_project: Path) -> Callable[[str, str], Path]:
    """Factory: ``wine_run("plain" | "lightning", "healthy" | "collapsed" | "nan")`` -> the run
    dir that the example's own script trained in the full venv, once per session."""
    from filelock import FileLock

    def make(kind: str, fault: str = "healthy") -> Path:
        flags = WINE_FAULTS[kind][fault]
        out = wine_project / "runs" / f"{kind}-{fault}"
        done = out.parent / f"{out.name}.done"
        out.parent.mkdir(exist_ok=True)
        with FileLock(str(out) + ".lock"):
            if not done.exists():
                shutil.rmtree(out, ignore_errors=True)
                where = ("--run-dir" if kind == "plain" else "--out", out)
                proc = full_venv.run(["python", "-m", f"wine.train_{kind}", *where, *flags],
                                     cwd=wine_project, timeout=600)
                if proc.returncode != 0:
                    raise RuntimeError(f"wine.train_{kind} {' '.join(flags)} failed ({proc.returncode}): "
                                       f"{proc.stderr[-2000:]}")
                # the plain loop's run dir is --run-dir; Lightning prints its version dir last
                run_dir = out if kind == "plain" else Path(proc.stdout.strip().splitlines()[-1])
                done.write_text(str(run_dir))
        return Path(done.read_text())

    return make
