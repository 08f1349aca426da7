"""The plugin the way a user gets it: a wheel built from this checkout, pip-installed into a
fresh virtual environment (not editable, not the dev venv), beside a copy of
``examples/wine_project``.

Two venvs, each built once per test session and shared by every xdist worker behind a file
lock (as ``trained_run`` in conftest.py shares its runs):

- **bare**: the wheel and its required dependencies only (pytest, PyYAML, numpy,
  filelock) -- a user who gates logs, and where a checkpoint gate must name the extra;
- **full**: what the example's README tells a user to install,
  ``pip install -r examples/wine_project/requirements.txt``, with the built wheel standing
  in for the release and torch pinned to the CPU build this machine keeps on disk.

Measured on this project's 2-core machine with pip's local indexes (wall times vary 2-3x
with what else runs; CPU times less): ``python -m venv`` 6-10 s; the bare install 10-14 s
(6 s of CPU); the full install about 60 s on an idle machine (75 s of CPU), and 40 s
(29 s of CPU) with ``--no-compile``, which the tests use.  Each venv records how long it
took in ``<name>.ready`` next to it.

Every command in a user venv runs with an environment scrubbed of this checkout:
no ``PYTHONPATH`` (the dev setup puts ``src/``, and so the engine's ``model`` package, on it),
no ``PYTEST_*`` of the outer session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "wine_project"
# torch unpinned pulls a multi-GB CUDA build; this machine keeps the CPU wheel on disk
TORCH_PIN = os.environ.get("MLGATES_TEST_TORCH_SPEC", "torch==2.13.0")
INSTALL_TIMEOUT_S = 1200

# variables of the outer session that must not reach a user's process
_SCRUBBED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "VIRTUAL_ENV",
             "MLGATES_LEDGER_KEY", "GITHUB_STEP_SUMMARY")


class UserVenvError(RuntimeError):
    """A wheel or venv that could not be built: the command and the end of its output."""


def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-3000:]
        raise UserVenvError(f"{what} failed (exit {proc.returncode}): {tail}")


def copy_checkout(dest: Path) -> Path:
    """The checkout's files as a fresh clone (plus uncommitted ones) would have them: no
    ``build/`` left by an earlier build, whose stale ``build/lib`` would end up in a wheel."""
    proc = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others",
                           "--exclude-standard"], capture_output=True, text=True, check=False)
    if proc.returncode == 0 and proc.stdout:
        for rel in filter(None, proc.stdout.split("\0")):
            src = REPO_ROOT / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
    else:  # not a git checkout (an unpacked sdist): everything but what builds leave behind
        shutil.copytree(REPO_ROOT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "runs", "*.egg-info", "__pycache__", ".*_cache",
            ".hypothesis"))
    return dest


def build_wheel(out_dir: Path) -> Path:
    """``pip wheel --no-deps . -w out_dir`` on a clean copy of the checkout."""
    source = copy_checkout(out_dir / "checkout")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                           str(source), "-w", str(out_dir)],
                          capture_output=True, text=True, timeout=600, check=False)
    _check(proc, "pip wheel --no-deps .")
    wheels = sorted(out_dir.glob("pytest_mlgates-*.whl"))
    if len(wheels) != 1:
        raise UserVenvError(f"pip wheel wrote {[w.name for w in wheels]}, expected one pytest_mlgates wheel")
    shutil.rmtree(source, ignore_errors=True)
    return wheels[0]


@dataclass(frozen=True)
class UserVenv:
    """A venv a user made: ``run`` a command with its ``bin/`` first on PATH."""

    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.startswith("PYTEST_")}
        env.update(PATH=f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(self.path),
                   # small models on 2 shared cores: one thread each
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def run(self, args: Sequence[str | Path], *, cwd: Path, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in args], cwd=cwd, env=self.env(**(env or {})),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def install_seconds(self) -> float:
        return float(json.loads((self.path.parent / f"{self.path.name}.ready").read_text())["seconds"])


def make_venv(path: Path, requirements: Sequence[str]) -> UserVenv:
    """A fresh venv at ``path`` with ``pip install requirements``; once, whoever asks first.

    The lock and the ``<name>.ready`` marker sit beside ``path``: a venv whose install was
    interrupted has no marker and is made again."""
    from filelock import FileLock

    venv = UserVenv(path)
    marker = path.parent / f"{path.name}.ready"
    with FileLock(str(path) + ".lock"):
        if marker.exists():
            return venv
        shutil.rmtree(path, ignore_errors=True)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "venv", str(path)], capture_output=True,
                              text=True, timeout=300, check=False)
        _check(proc, f"python -m venv {path}")
        # --no-compile: byte-compiling torch's thousands of modules is half the install's
        # time here; Python compiles what a test imports when it imports it
        proc = venv.run([venv.python, "-m", "pip", "install", "--quiet", "--no-input", "--no-compile",
                         *requirements],
                        cwd=path.parent, timeout=INSTALL_TIMEOUT_S)
        _check(proc, f"pip install {' '.join(requirements)}")
        marker.write_text(json.dumps({"seconds": round(time.monotonic() - started, 1),
                                      "requirements": list(requirements)}))
    return venv


def shared_dir(base: Path) -> Path:
    """The folder every xdist worker of one session shares (``base`` is a worker's basetemp)."""
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / "mlgates-user-venvs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_wheel(folder: Path) -> Path:
    from filelock import FileLock

    out = folder / "wheel"
    with FileLock(str(out) + ".lock"):
        wheels = sorted(out.glob("pytest_mlgates-*.whl"))
        if len(wheels) == 1:
            return wheels[0]
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        return build_wheel(out)


def bare_requirements(wheel: Path) -> list[str]:
    return [str(wheel)]


def full_requirements(wheel: Path) -> list[str]:
    # the example's requirements.txt names pytest-mlgates[torch]: the wheel file satisfies it
    return ["-r", str(EXAMPLE / "requirements.txt"), str(wheel), TORCH_PIN]


def junit_results(path: Path) -> dict[str, tuple[str, str]]:
    """criterion -> (mlgates status, the failure text or the GREEN message) from --junitxml."""
    return {name: result for (_, name), result in junit_results_by_run(path).items()}


def junit_results_by_run(path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(run label, criterion) -> (mlgates status, the failure text or the GREEN message) from
    the --junitxml of a session over one or several ``--run-dir``s (``mlgates.run``)."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") or "" for p in case.iter("property")}
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        text = (failure.text or failure.get("message") or "") if failure is not None else props.get("mlgates.message", "")
        name = props.get("mlgates.criterion") or case.get("name") or ""
        out[props.get("mlgates.run") or "", name] = (props.get("mlgates.status") or "?", text)
    return out
