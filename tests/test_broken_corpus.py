"""Every built-in gate against every entry of the broken-run corpus, in real pytest sessions.

``tests/broken_runs.py`` generates the corpus (empty dir, ragged CSV, truncated JSON and
checkpoints, 2 GB sparse files, directories and outside symlinks where files should be...).
A gate file with one criterion per built-in gate is collected with one ``--run-dir`` per
entry, so each session runs gates x entries items. The promise checked here is the user's:
a broken run dir gives a failed item with one line naming the file -- never an
INTERNALERROR, a traceback into the plugin, a hang, or a slow item.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from broken_runs import BREAKAGES, MARKER_NAME, build_corpus

from pytest_mlgates.gates import GATE_NAMES

#: Minimal parameters for the gates that need some (the same as tests/test_gates_robust.py).
PARAMS = {
    "artifact": {"path": "training_log.csv", "contains": "epoch"},
    "key_link": {"from": "checkpoints/final.pt", "to": "src/train.py", "pattern": "save_checkpoint"},
}
# A hang is caught by the session's timeout; how long each gate takes is a bench's business
# (no wall clock in tests).
SESSION_TIMEOUT_S = 120
PLUGIN_SRC = str(Path("src") / "pytest_mlgates")


def gate_file_text(params: dict[str, dict[str, Any]] | None = None, metrics: dict[str, str] | None = None,
                   title: str = "every gate against the broken corpus") -> str:
    """One criterion ``g_<gate>`` per built-in gate, with ``params`` (default ``PARAMS``)."""
    params = PARAMS if params is None else params
    lines = [f"title: {title}"]
    if metrics:
        lines += ["metrics:", *(f"  {k!r}: {v!r}" for k, v in metrics.items())]
    lines.append("exit_criteria:")
    for gate in GATE_NAMES:
        lines.append(f"  - name: g_{gate}")
        lines.append(f"    gate: {gate}")
        for key, value in params.get(gate, {}).items():
            lines.append(f"    {key}: {value!r}")
    return "\n".join(lines) + "\n"


# The first import of torch, sklearn and the engine costs seconds on a loaded machine and is
# paid once per session, whatever the run dir; pay it before the clock of any item starts,
# so the per-item limit measures what a gate does with a broken file, not an import.
CONFTEST = """
def pytest_configure(config):
    import torch, sklearn.datasets, model.nets, model.data  # noqa: F401
    from pytest_mlgates import formats, gates
    for name in gates.GATE_NAMES:
        gates.get_gate(name)
    for name in formats.FORMATS:  # detection asks every format module
        formats.format_module(name)
"""


def _session_halves(names: list[str]) -> list[list[str]]:
    broken = [n for n in names if n != "healthy"]
    half = (len(broken) + 1) // 2
    # "healthy" in both sessions: the control that each failure is compared with
    return [["healthy", *broken[:half]], ["healthy", *broken[half:]]]


@dataclass
class CorpusResults:
    root: Path
    entries: list[str]
    items: dict[tuple[str, str], dict[str, object]]  # (gate, entry) -> what JUnit said
    outputs: list[str]
    codes: list[int]


def run_sessions(root: Path, sessions: list[tuple[list[str], str]], env: dict[str, str] | None = None, *,
                 gate_files: tuple[str, ...] = ("acc.gates.yaml",), wrap: Callable[[int], list[str]] | None = None,
                 timeout: float = SESSION_TIMEOUT_S,
                 runs_dir: str = "runs", extra: tuple[str, ...] = (),
                 extras: list[tuple[str, ...]] | None = None,
                 ) -> tuple[dict[tuple[str, str], dict[str, Any]], list[str], list[int]]:
    """Run ``acc.gates.yaml`` (or ``gate_files``) in ``root`` once per (run names, baseline)
    side by side -- each session one pytest process with one ``--run-dir runs/<name>`` per
    entry -- and read every item's verdict from its JUnit XML: ({(gate, run): item}, outputs,
    exit codes).  ``wrap(k)`` prefixes session k's command (``strace ...``, a
    launcher that sets limits); ``extra`` are more pytest arguments (``extras[k]``: session k's own)."""
    items: dict[tuple[str, str], dict[str, Any]] = {}
    outputs: list[str] = []
    codes: list[int] = []
    procs = []
    for k, (names, baseline) in enumerate(sessions):
        args = [*(wrap(k) if wrap else []), sys.executable, "-m", "pytest", *gate_files, "-p", "no:cacheprovider",
                "-p", "no:xdist", "-q", "--rootdir", str(root), f"--junitxml={root / f'junit{k}.xml'}",
                "--baseline-run", f"{runs_dir}/{baseline}", *extra, *(extras[k] if extras else ())]
        for name in names:
            args += ["--run-dir", f"{runs_dir}/{name}"]
        procs.append(subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=env))
    for k, proc in enumerate(procs):
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail(f"session {k} hung: no result in {timeout}s")
        outputs.append(out)
        codes.append(proc.returncode)
        junit = root / f"junit{k}.xml"
        hung = root / "hung.txt"  # the hostile corpus's hang guard writes here (fd 2 is captured)
        assert junit.exists(), out[-3000:] + (hung.read_text(errors="replace")[-6000:] if hung.exists() else "")
        for case in ET.parse(junit).getroot().iter("testcase"):
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
            failure = case.find("failure")
            if failure is None:
                failure = case.find("error")
            run = str(props.get("mlgates.run") or "").removeprefix(f"{runs_dir}/")
            items[(str(props.get("mlgates.gate")), run)] = {
                "time": float(case.get("time") or 0),
                "failed": failure is not None,
                "message": (failure.get("message") or "") if failure is not None else "",
                "text": (failure.text or "") if failure is not None else "",
                "status": props.get("mlgates.status"),
                "line": props.get("mlgates.message") or "",
            }
    return items, outputs, codes


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory: pytest.TempPathFactory) -> CorpusResults:
    root = tmp_path_factory.mktemp("corpus")
    runs = root / "runs"
    entries = build_corpus(runs)
    (root / "acc.gates.yaml").write_text(gate_file_text())
    (root / "conftest.py").write_text(CONFTEST)
    (root / "src").mkdir()
    (root / "src" / "train.py").write_text("def save_checkpoint(): ...\n")
    groups = _session_halves(list(entries))
    items, outputs, codes = run_sessions(root, [(names, "healthy") for names in groups])
    return CorpusResults(root, list(entries), items, outputs, codes)


def _normalise(line: str, root: Path, name: str) -> str:
    return line.replace(str(root / "runs" / name), "RUN").replace(f"runs/{name}", "RUN")


def check_sessions(outputs: list[str], codes: list[int]) -> None:
    """No session crashed: no INTERNALERROR, no traceback, failures only (exit code 1)."""
    for out, code in zip(outputs, codes):
        assert "INTERNALERROR" not in out, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        assert PLUGIN_SRC not in out, out[-3000:]
        assert code == 1, (code, out[-3000:])  # failures, not a usage error or an internal one


def item_problems(items: dict[tuple[str, str], dict[str, Any]], root: Path,
                  involved_of: Callable[[str], str | None], control_of: Callable[[str], str],
                  extra: Callable[[str, str, str], str | None] = lambda gate, run, line: None) -> list[str]:
    """What is wrong with each item's verdict: an internal error, a failure that is not
    one line, or one that names neither the broken file (``involved_of(run)``, fragments
    joined by ``|``) nor its run dir -- unless the healthy control (``control_of(run)``) fails
    the same way. ``extra(gate, run, line)`` adds a check of a corpus's own."""
    problems = []
    for (gate, run), item in sorted(items.items()):
        line = str(item["line"])
        if "internal error" in line or "weights_only=False" in line:
            problems.append(f"{gate}[{run}]: {line}")
        more = extra(gate, run, line)
        if more:
            problems.append(f"{gate}[{run}]: {more}: {line}")
        if not item["failed"]:
            continue
        text = str(item["text"]).strip()
        if "\n" in text or "Traceback" in text or PLUGIN_SRC in text:
            problems.append(f"{gate}[{run}]: failure is not one line: {text[:300]!r}")
        involved = involved_of(run)
        if involved is None:
            continue
        control = control_of(run)
        healthy = items[(gate, control)]
        same_as_healthy = healthy["failed"] and _normalise(line, root, run) == _normalise(
            str(healthy["line"]), root, control)
        # the breakage's file, or another file of this run that the verdict rests on
        names_file = any(frag in line for frag in involved.split("|")) or f"runs/{run}/" in line
        if not same_as_healthy and not names_file:
            problems.append(f"{gate}[{run}]: does not name {involved}: {line}")
    return problems


@pytest.mark.slow
def test_every_gate_meets_every_broken_run_dir_in_one_line(corpus_results: CorpusResults) -> None:
    root, entries, items = corpus_results.root, corpus_results.entries, corpus_results.items
    check_sessions(corpus_results.outputs, corpus_results.codes)

    broken = [n for n in entries if n != "healthy"]
    tried = {(g, r) for (g, r) in items if r != "healthy"}
    print(f"\n{len(GATE_NAMES)} gates x {len(broken)} broken run dirs = {len(tried)} combinations tried")
    assert tried == {(g, n) for g in GATE_NAMES for n in broken}

    problems = item_problems(items, root, lambda run: BREAKAGES[run][1], lambda run: "healthy")
    assert not problems, "\n".join(problems)

    # A checkpoint whose pickle would run a command and a YAML python tag ran nothing.
    # (Checked here, not in a test of its own, so xdist never runs the sessions twice.)
    assert not (root / "runs" / MARKER_NAME).exists()
    refused = [i["line"] for (g, r), i in items.items() if r == "checkpoint_runs_code" and "refused" in str(i["line"])]
    assert refused, "no gate reported the checkpoint that would run code as refused"


@pytest.mark.slow
def test_the_corpus_script_writes_every_entry(tmp_path: Path) -> None:
    script = Path(__file__).with_name("broken_runs.py")
    some = ["healthy", "sparse_2gb_log", "symlink_log_outside"]
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "c"), *some], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if not p.name.startswith("_")) == sorted(some)
    assert (tmp_path / "c" / "symlink_log_outside" / "training_log.csv").is_symlink()
    bad = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "usage:" in bad.stderr
    big = tmp_path / "c" / "sparse_2gb_log" / "training_log.csv"
    assert big.stat().st_size == 2 * 1024**3
    assert big.stat().st_blocks * 512 < 1024**2  # sparse: no disk spent
