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
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "configs/default.yaml"

# A run small enough for tests (seconds on two cores); tests add what they need.
small_overrides: tuple[str, ...] = ("train.epochs=3", "train.progress_bar=false")
SMALL_OVERRIDES = small_overrides


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
