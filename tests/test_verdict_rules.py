"""Every rule of ``mlgates verdict``, each shown failing closed on real pytest sessions.

The sessions run real gate files (``check:`` criteria and a key link) on a small run dir
that holds only what they read (``training_log.csv``), in pytester's process where that is
enough and in a subprocess (with a timeout) where a hang is the failure to catch.  Each
test is one rule of ``verdict.py``'s docstring or one promise of SPEC.md's "RED/GREEN
archive": forged lines with and without the signing key, partial sessions (node id, one
gate file of several, ``-k``, ``--deselect``), unreadable newest lines, a run changed
during its session, a changed plugin version, key-linked code, an empty directory added,
an archive that cannot be written, symlinks and FIFOs where the archive or fingerprint
would look, a huge ledger line, and a run stopped by an in-flight gate.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pytest_mlgates
from pytest_mlgates.cli import main
from pytest_mlgates.ledger import KEY_ENV, read_ledger
from pytest_mlgates.verdict import compute_verdict

GATES_A = """exit_criteria:
  - name: loss_falls
    check: "min(val_loss) < first(val_loss)"
  - name: loss_small
    check: "last(val_loss) < 1"
"""
GATES_B = """exit_criteria:
  - name: loss_tiny
    check: "last(val_loss) < 0.5"
"""
KEY_LINKED = """must_haves:
  key_links:
    - from: training_log.csv
      to: src/train.py
      pattern: write_log
"""
GOOD_LOG = "epoch,train_loss,val_loss\n1,0.9,0.8\n2,0.6,0.4\n"
RISING_LOG = "epoch,train_loss,val_loss\n1,0.9,0.4\n2,0.8,0.6\n"  # loss_falls and loss_tiny RED
KEY = {KEY_ENV: "ci-secret-0123456789abcdef"}


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    """``acceptance/a.gates.yaml``, ``acceptance/b.gates.yaml`` and a GREEN ``run/``."""
    (pytester.path / "acceptance").mkdir()
    (pytester.path / "acceptance" / "a.gates.yaml").write_text(GATES_A)
    (pytester.path / "acceptance" / "b.gates.yaml").write_text(GATES_B)
    run = pytester.path / "run"
    run.mkdir()
    (run / "training_log.csv").write_text(GOOD_LOG)
    return run


def session(pytester: pytest.Pytester, run: Path, *args: str) -> pytest.RunResult:
    """``pytest [args or acceptance/] --run-dir RUN`` in this process."""
    return pytester.runpytest(*(args or ("acceptance",)), "--run-dir", str(run),
                              "-p", "no:cacheprovider")


def subprocess_session(root: Path, run: Path, *args: str,
                       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The same in a child with a timeout: where a hang is the bug, the test must end."""
    command = [sys.executable, "-m", "pytest", *(args or ("acceptance",)), "--run-dir",
               str(run), "-p", "no:cacheprovider"]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, **(env or {})})


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_mlgates.cli", *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})


def verdict(run: Path, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("environ", {})
    return compute_verdict(run, **kwargs)


def entries(run: Path) -> list[dict[str, Any]]:
    return read_ledger(run / "acceptance" / "ledger.jsonl").entries


def archive_lines(result: pytest.RunResult | subprocess.CompletedProcess[str]) -> list[str]:
    out = result.stdout if isinstance(result.stdout, str) else result.stdout.str()
    return [line for line in out.splitlines() if line.startswith("mlgates: ")]


# --------------------------------------------------------------------------- forged lines


def hand_fingerprint(run: Path) -> tuple[str, dict[str, str]]:
    """The fingerprint as an attacker computes it with nothing but hashlib."""
    files: dict[str, str] = {}
    for path in sorted(run.rglob("*")):
        rel = path.relative_to(run).as_posix()
        if rel == "acceptance" or rel.startswith("acceptance/"):
            continue
        files[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    total = hashlib.sha256()
    for rel in sorted(files):
        total.update(rel.encode() + b"\0" + files[rel].encode() + b"\n")
    return total.hexdigest(), files


def forge_green_line(run: Path) -> None:
    """Append a GREEN line built from the newest real one: every field right but the key."""
    ledger = run / "acceptance" / "ledger.jsonl"
    template = json.loads(ledger.read_bytes().splitlines()[-1])
    digest, files = hand_fingerprint(run)
    criteria = [{**c, "status": "GREEN"} for c in template["criteria"]]
    # the line names the hash its digests were made with: the attacker's is hashlib's sha256
    template.update(time="2099-01-01T00:00:00.000000Z", verdict="GREEN", fingerprint=digest,
                    fingerprint_hash="sha256",
                    files=files, criteria=criteria, void=None, partial=False,
                    partial_reasons=[], counts={"GREEN": len(criteria), "total": len(criteria)})
    template.pop("signature", None)
    with open(ledger, "ab") as handle:
        handle.write(json.dumps(template).encode() + b"\n")


def test_a_forged_green_line_does_not_accept_a_rejected_run_under_the_key(
    pytester: pytest.Pytester, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY[KEY_ENV])
    (project / "training_log.csv").write_text(RISING_LOG)
    session(pytester, project).assert_outcomes(passed=1, failed=2)
    assert entries(project)[-1]["signature"].startswith("hmac-sha256:")
    assert verdict(project, environ=KEY)["verdict"] == "REJECTED"

    forge_green_line(project)
    result = verdict(project, environ=KEY)
    assert result["verdict"] == "REJECTED" and result["ignored_unsigned"] == 1
    assert result["reason"] == ("the newest session is RED (1 unsigned or badly signed line "
                                "ignored)")
    proc = cli("verdict", str(project), "--require-signed", env=KEY)
    assert proc.returncode == 1 and proc.stdout.startswith(f"REJECTED {project}: ")

    # a forged signature, or a signed RED line edited to say GREEN, is as good as none
    lines = (project / "acceptance" / "ledger.jsonl").read_bytes().splitlines()
    forged = json.loads(lines[-1])
    forged["signature"] = "hmac-sha256:" + "0" * 64
    tampered = json.loads(lines[0])
    tampered.update(verdict="GREEN", criteria=forged["criteria"], counts=forged["counts"],
                    fingerprint=forged["fingerprint"], files=forged["files"])
    with open(project / "acceptance" / "ledger.jsonl", "ab") as handle:
        handle.write(json.dumps(tampered).encode() + b"\n" + json.dumps(forged).encode() + b"\n")
    result = verdict(project, environ=KEY)
    assert result["verdict"] == "REJECTED" and result["ignored_unsigned"] == 3


def test_without_the_key_a_forged_line_cannot_be_told_apart_which_is_why_ci_sets_one(
    pytester: pytest.Pytester, project: Path
) -> None:
    (project / "training_log.csv").write_text(RISING_LOG)
    session(pytester, project)
    forge_green_line(project)
    # Unsigned, the ledger is as trustworthy as whoever writes the run dir (SECURITY.md).
    assert verdict(project)["verdict"] == "ACCEPTED"
    # --require-signed without a key is refused in one line, never a silent pass
    proc = cli("verdict", str(project), "--require-signed", env={KEY_ENV: ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [(
        f"mlgates: {KEY_ENV} is set but empty (a CI secret that this job cannot see?); unset "
        "it or give the key")]
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    proc = subprocess.run([sys.executable, "-m", "pytest_mlgates.cli", "verdict", str(project),
                           "--require-signed"], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 2 and "--require-signed needs the signing key" in proc.stderr


def test_signed_sessions_are_accepted_only_under_their_own_key(
    pytester: pytest.Pytester, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY[KEY_ENV])
    session(pytester, project).assert_outcomes(passed=3)
    assert verdict(project, environ=KEY)["verdict"] == "ACCEPTED"
    assert verdict(project, require_signed=True, environ=KEY)["verdict"] == "ACCEPTED"
    other = verdict(project, environ={KEY_ENV: "another key"})
    assert other["verdict"] == "UNCHECKED"
    assert other["reason"] == ("no validly signed session archived (1 unsigned or badly signed "
                               "line ignored)")
    history = cli("history", str(project), env={KEY_ENV: "another key"})
    assert history.returncode == 0 and " UNSIGNED " in history.stdout


# --------------------------------------------------------------------------- partial sessions


def test_a_node_id_session_is_partial_and_never_accepts(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = session(pytester, project, "acceptance/a.gates.yaml::loss_small")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([("*(partial: selected by node id (acceptance/a.gates.yaml::"
                                  "loss_small); acceptance/a.gates.yaml: 1 of 2 criteria ran "
                                  "(not run: loss_falls)*")])
    [entry] = entries(project)
    assert entry["verdict"] == "GREEN" and entry["partial"] is True
    assert verdict(project)["verdict"] == "UNCHECKED"

    (project / "training_log.csv").write_text(RISING_LOG)
    session(pytester, project)  # the whole set: RED
    (project / "training_log.csv").write_text(GOOD_LOG)
    session(pytester, project, "acceptance/a.gates.yaml::loss_small")  # GREEN, partial
    result = verdict(project)
    assert result["verdict"] == "REJECTED" and result["skipped_partial"] == 1


@pytest.mark.parametrize("selection", [["-k", "loss_small"], ["--deselect", "{node}"]])
def test_a_keyword_or_deselect_session_is_partial(
    pytester: pytest.Pytester, project: Path, selection: list[str]
) -> None:
    node = f"acceptance/a.gates.yaml::loss_falls[{project}]"
    session(pytester, project, "acceptance", *[s.format(node=node) for s in selection])
    [entry] = entries(project)
    assert entry["partial"] is True and entry["verdict"] == "GREEN"
    assert verdict(project)["verdict"] == "UNCHECKED"


def test_one_gate_file_of_several_does_not_stand_in_for_the_others(
    pytester: pytest.Pytester, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "training_log.csv").write_text("epoch,train_loss,val_loss\n1,0.9,0.8\n2,0.8,0.7\n")
    session(pytester, project).assert_outcomes(passed=2, failed=1)  # b: loss_tiny RED
    assert verdict(project)["verdict"] == "REJECTED"
    session(pytester, project, "acceptance/a.gates.yaml").assert_outcomes(passed=2)
    assert entries(project)[-1]["partial"] is False  # it ran all of a.gates.yaml

    default = verdict(project)  # b.gates.yaml ran against this run before and still exists
    assert default["verdict"] == "UNCHECKED"
    assert default["not_run"] == ["acceptance/b.gates.yaml"]
    named = verdict(project, gates=[pytester.path / "acceptance"])
    assert named["verdict"] == "UNCHECKED"
    assert named["not_run"] == [str(pytester.path / "acceptance" / "b.gates.yaml")]
    assert verdict(project, gates=[pytester.path / "acceptance" / "a.gates.yaml"])[
        "verdict"] == "ACCEPTED"
    capsys.readouterr()
    code = main(["verdict", str(project), "--gates", str(pytester.path / "acceptance")])
    out = capsys.readouterr().out
    assert code == 4 and out.startswith(f"UNCHECKED {project}: gate files named with --gates "
                                        "were not run whole by the newest GREEN session: ")
    assert f"  not run  {pytester.path / 'acceptance' / 'b.gates.yaml'}" in out


def test_a_gate_file_never_run_against_the_run_is_required_by_gates(
    pytester: pytest.Pytester, project: Path
) -> None:
    session(pytester, project, "acceptance/a.gates.yaml").assert_outcomes(passed=2)
    assert verdict(project)["verdict"] == "ACCEPTED"  # nothing else ever ran against it
    assert verdict(project, gates=[pytester.path / "acceptance"])["verdict"] == "UNCHECKED"
    (pytester.path / "other").mkdir()  # the same file in another checkout still counts
    (pytester.path / "other" / "a.gates.yaml").write_text(GATES_A)
    assert verdict(project, gates=[pytester.path / "other"])["verdict"] == "ACCEPTED"


# --------------------------------------------------------------------------- unreadable lines


@pytest.mark.parametrize("newest", ["torn", "counts", "criteria", "huge_int", "format"])
def test_an_unreadable_newest_line_is_unchecked_never_the_older_green(
    pytester: pytest.Pytester, project: Path, newest: str
) -> None:
    session(pytester, project).assert_outcomes(passed=3)
    ledger = project / "acceptance" / "ledger.jsonl"
    good = json.loads(ledger.read_bytes().splitlines()[-1])
    line = {
        "torn": json.dumps({**good, "verdict": "RED"}).encode()[:200],
        "counts": json.dumps({**good, "counts": "x"}).encode(),
        "criteria": json.dumps({**good, "criteria": [{"id": 1}]}).encode(),
        "huge_int": json.dumps({**good, "exitstatus": "@"}).encode().replace(b'"@"',
                                                                             b"9" * 5000),
        "format": json.dumps({**good, "format": 1}).encode(),
    }[newest]
    with open(ledger, "ab") as handle:
        handle.write(line + (b"" if newest == "torn" else b"\n"))
    for command in ("verdict", "history"):
        proc = cli(command, str(project))
        assert "Traceback" not in proc.stdout + proc.stderr
        if command == "verdict":
            assert proc.returncode == 4
            [out] = proc.stdout.splitlines()
            assert out.startswith(f"UNCHECKED {project}: line 2 of the ledger is unreadable (")
        else:
            assert proc.returncode == 0 and "UNREADABLE  line 2:" in proc.stdout

    session(pytester, project)  # a new session after it: the verdict rests on that one
    proc = cli("verdict", str(project))
    assert proc.returncode == 0 and proc.stdout.startswith("ACCEPTED ")


def test_a_huge_ledger_line_is_streamed_past_in_bounded_memory(
    pytester: pytest.Pytester, project: Path
) -> None:
    session(pytester, project).assert_outcomes(passed=3)
    ledger = project / "acceptance" / "ledger.jsonl"
    with open(ledger, "r+b") as handle:  # a 500 MB line (sparse: no disk), then a newline
        handle.seek(0, os.SEEK_END)
        handle.seek(500 << 20, os.SEEK_CUR)
        handle.write(b"\n")

    def limit_memory() -> None:  # what the red team measured at 2.1 GB
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    proc = subprocess.run([sys.executable, "-m", "pytest_mlgates.cli", "verdict", str(project)],
                          capture_output=True, text=True, timeout=120, check=False,
                          preexec_fn=limit_memory)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "line 2 of the ledger is unreadable (over the 33554432-byte line cap" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_the_writer_keeps_its_lines_under_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_mlgates import ledger

    monkeypatch.setattr(ledger, "LINE_CAP", 2000)
    entry = {"format": 2, "files": {f"f{i}": "0" * 64 for i in range(100)},
             "criteria": [{"id": "x", "value": "v" * 100}]}
    line = json.loads(ledger.encode_line(entry, b"key"))
    assert line["files"] is None and line["files_omitted"] == 100
    assert ledger.signature_state(line, b"key") == "valid"
    with pytest.raises(ValueError, match="over the 2000-byte cap"):
        ledger.encode_line({"format": 2, "junk": "x" * 5000})


# --------------------------------------------------------------------------- stale


def test_a_changed_plugin_version_is_stale(
    pytester: pytest.Pytester, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session(pytester, project).assert_outcomes(passed=3)
    assert entries(project)[-1]["plugin_version"] == pytest_mlgates.__version__
    monkeypatch.setattr(pytest_mlgates, "__version__", "99.0.0")
    result = verdict(project)
    assert result["verdict"] == "STALE"
    recorded = entries(project)[-1]["plugin_version"]
    assert result["changes"] == {"plugin": [f"{recorded} -> 99.0.0"]}


def test_changed_key_linked_code_is_stale(pytester: pytest.Pytester, project: Path) -> None:
    (pytester.path / "src").mkdir()
    code = pytester.path / "src" / "train.py"
    code.write_text("def write_log(run):\n    pass\n")
    (pytester.path / "acceptance" / "links.gates.yaml").write_text(KEY_LINKED)
    session(pytester, project).assert_outcomes(passed=4)
    [entry] = entries(project)
    assert entry["code_files"] == {"src/train.py": hashlib.sha256(code.read_bytes()).hexdigest()}
    assert verdict(project)["verdict"] == "ACCEPTED"

    code.write_text("def write_log(run):\n    return 'changed'\n")  # the link still holds
    result = verdict(project)
    assert result["verdict"] == "STALE" and result["changes"] == {"code": ["src/train.py"]}
    code.unlink()
    assert verdict(project)["verdict"] == "STALE"


def test_an_empty_directory_added_is_stale(pytester: pytest.Pytester, project: Path) -> None:
    session(pytester, project).assert_outcomes(passed=3)
    (project / "checkpoint-99").mkdir()
    result = verdict(project)
    assert result["verdict"] == "STALE" and result["changes"]["added"] == ["checkpoint-99"]


# --------------------------------------------------------------------------- during a session

SWAP_CONFTEST = """
import os, pathlib
RUN = pathlib.Path({run!r})

def pytest_runtest_call(item):
    if not item.name.startswith("loss_falls"):
        return
    log = RUN / "training_log.csv"
    if {mode!r} == "changed":
        with open(log, "a") as handle:
            handle.write("3,0.5,0.3\\n")
    else:  # swapped for other bytes and put back: same content, same names at the end
        original = log.read_bytes()
        spare = RUN / "spare"
        spare.write_bytes(b"epoch,train_loss,val_loss\\n1,1,0.1\\n")
        os.replace(spare, log)
        spare.write_bytes(original)
        os.replace(spare, log)
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
@pytest.mark.parametrize("mode", ["changed", "swapped-back"])
def test_a_run_changed_during_its_session_voids_it(
    pytester: pytest.Pytester, project: Path, mode: str, workers: list[str]
) -> None:
    session(pytester, project).assert_outcomes(passed=3)  # ACCEPTED before
    pytester.makeconftest(SWAP_CONFTEST.format(run=str(project), mode=mode))
    if workers:
        proc = subprocess_session(pytester.path, project, "acceptance", *workers)
        out, code = proc.stdout, proc.returncode
    else:
        result = session(pytester, project)
        result.assert_outcomes(passed=3)
        out, code = result.stdout.str(), result.ret
    assert code == 1, out[-3000:]  # every item passed, yet the session is not GREEN
    assert "3 passed" in out
    entry = entries(project)[-1]
    assert entry["verdict"] == "RED" and entry["void"]
    expected = ("the run changed during the session: training_log.csv changed"
                if mode == "changed" else "files of the run were rewritten during the session")
    assert entry["void"].startswith(expected)
    assert f"(void: {entry['void']})" in out
    result = verdict(project)
    assert result["verdict"] == "REJECTED"
    assert result["reason"] == f"the newest session is void: {entry['void']}"


# --------------------------------------------------------------------------- cannot archive


@pytest.mark.parametrize("blocker", ["acceptance-is-a-file", "ledger-is-a-dir", "read-only"])
def test_a_session_that_cannot_be_archived_exits_non_zero_in_one_line(
    pytester: pytest.Pytester, project: Path, blocker: str
) -> None:
    archive = project / "acceptance"
    if blocker == "acceptance-is-a-file":
        archive.write_text("not a directory")
        expected = f"{archive}: a file, not a directory; refused"
    elif blocker == "ledger-is-a-dir":
        (archive / "ledger.jsonl").mkdir(parents=True)
        expected = f"{archive / 'ledger.jsonl'}: a directory, not a regular file; refused"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only directory anyway")
        archive.mkdir()
        archive.chmod(0o555)
        expected = "Permission denied"
    try:
        result = session(pytester, project)
    finally:
        if archive.is_dir():
            archive.chmod(0o755)
    result.assert_outcomes(passed=3)
    assert result.ret == 1
    [line] = archive_lines(result)
    assert line.startswith(f"mlgates: could not archive {project}: ") and expected in line


# --------------------------------------------------------------------------- symlinks, FIFOs


@pytest.mark.parametrize("link", ["acceptance", "acceptance/ledger.jsonl",
                                  "acceptance/ledger.jsonl.lock"])
def test_a_symlink_in_the_archive_is_refused_and_nothing_is_written_outside(
    pytester: pytest.Pytester, project: Path, link: str
) -> None:
    outside = pytester.path / "outside"
    outside.mkdir()
    sentinel = outside / "sentinel.txt"
    sentinel.write_text("untouched\n")
    (project / "acceptance").mkdir(exist_ok=link != "acceptance")
    if link == "acceptance":
        (project / "acceptance").rmdir()
        (project / "acceptance").symlink_to(outside, target_is_directory=True)
    else:
        (project / link).symlink_to(sentinel)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}

    result = session(pytester, project)
    result.assert_outcomes(passed=3)
    assert result.ret == 1
    [line] = archive_lines(result)
    assert line == (f"mlgates: could not archive {project}: {project / link}: a symlink; the "
                    "archive writes only inside the run dir, refused")
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    if link != "acceptance":  # refused before the session dir was written: nothing left
        assert [p.name for p in (project / "acceptance").iterdir()] == [Path(link).name]
    if link != "acceptance/ledger.jsonl.lock":  # the verdict reads through none either
        proc = cli("verdict", str(project))
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [(
            f"mlgates: {project / link}: a symlink; the archive writes only inside the run "
            "dir, refused")]


def test_a_fifo_in_the_run_is_one_line_for_the_session_and_the_verdict(
    pytester: pytest.Pytester, project: Path
) -> None:
    assert subprocess_session(pytester.path, project).returncode == 0
    (project / "logs").mkdir()
    os.mkfifo(project / "logs" / "stream")
    proc = cli("verdict", str(project))  # would wait for a writer forever if it opened it
    assert proc.returncode == 3 and proc.stdout.startswith(f"STALE {project}: files of the run "
                                                           "changed since the newest GREEN")
    assert "logs/stream (a FIFO)" in proc.stdout.splitlines()[0]

    proc = subprocess_session(pytester.path, project)
    assert proc.returncode == 1 and "3 passed" in proc.stdout
    entry = entries(project)[-1]
    assert entry["verdict"] == "RED"
    assert entry["void"] == ("only regular files are read, and the run holds logs/stream (a "
                             "FIFO)")
    proc = cli("verdict", str(project))
    assert proc.returncode == 1 and proc.stdout.startswith(f"REJECTED {project}: the newest "
                                                           "session is void: only regular")


def test_a_fifo_for_a_ledger_is_refused_not_waited_on(
    pytester: pytest.Pytester, project: Path
) -> None:
    (project / "acceptance").mkdir()
    os.mkfifo(project / "acceptance" / "ledger.jsonl")
    proc = cli("verdict", str(project))
    ledger = project / "acceptance" / "ledger.jsonl"
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"mlgates: {ledger}: a FIFO, not a regular file; refused"]
    proc = subprocess_session(pytester.path, project)
    assert proc.returncode == 1
    assert archive_lines(proc) == [
        f"mlgates: could not archive {project}: {ledger}: a FIFO, not a regular file; refused"]


def test_a_hard_linked_ledger_is_refused(pytester: pytest.Pytester, project: Path) -> None:
    outside = pytester.path / "outside.jsonl"
    outside.write_text("")
    (project / "acceptance").mkdir()
    os.link(outside, project / "acceptance" / "ledger.jsonl")
    result = session(pytester, project)
    assert result.ret == 1 and outside.read_text() == ""
    [line] = archive_lines(result)
    assert "has 2 hard links (one may be outside the run dir); refused" in line


# --------------------------------------------------------------------------- in flight, many


def test_a_run_stopped_in_flight_is_rejected_naming_criterion_and_epoch(
    pytester: pytest.Pytester, project: Path
) -> None:
    (project / "mlgates_inflight.json").write_text(json.dumps({
        "status": "aborted_by_gate", "criterion": "inflight_min_recall", "epoch": 3,
        "reason": "criterion inflight_min_recall: val_recall_3 = 0.000; needs > 0"}))
    session(pytester, project).assert_outcomes(passed=3)  # the files alone pass the gates
    proc = cli("verdict", str(project))
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == (
        f"REJECTED {project}: training was stopped by an in-flight gate: criterion "
        "inflight_min_recall at epoch 3 (criterion inflight_min_recall: val_recall_3 = 0.000; "
        "needs > 0)")


def test_verdict_over_several_runs_is_one_table(
    pytester: pytest.Pytester, project: Path
) -> None:
    session(pytester, project).assert_outcomes(passed=3)
    other = pytester.path / "run2"
    other.mkdir()
    (other / "training_log.csv").write_text(RISING_LOG)
    session(pytester, other)
    proc = cli("verdict", str(project), str(other), str(pytester.path / "missing"))
    assert proc.returncode == 1  # the first run that is not ACCEPTED decides
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["verdict", "run", "reason"]
    assert lines[1].startswith("ACCEPTED") and lines[2].startswith("REJECTED")
    assert lines[3].startswith("ERROR") and "no such run dir" in lines[3]
    assert lines[4] == "1 of 3 run dirs ACCEPTED"
    proc = cli("verdict", str(project), str(project), "--json")
    assert proc.returncode == 0 and [r["verdict"] for r in json.loads(proc.stdout)] == [
        "ACCEPTED", "ACCEPTED"]


def test_a_file_written_into_the_archive_replaces_a_symlink_never_follows_it(
    tmp_path: Path,
) -> None:
    """What ``mlgates prove`` needs for its proof file (``ArchiveDir.write_file``)."""
    from pytest_mlgates.archive_fs import ArchiveDir, ArchiveError

    run = tmp_path / "run"
    run.mkdir()
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("untouched")
    (run / "acceptance").mkdir()
    (run / "acceptance" / "proof.json").symlink_to(sentinel)
    with ArchiveDir.open(run, "acceptance", create=True) as archive:  # type: ignore[union-attr]
        archive.write_file("proof.json", "{}")
    assert sentinel.read_text() == "untouched"
    assert not (run / "acceptance" / "proof.json").is_symlink()
    assert (run / "acceptance" / "proof.json").read_text() == "{}"
    (run / "acceptance" / "proof.json").unlink()
    (run / "acceptance").rmdir()
    (run / "acceptance").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ArchiveError, match="a symlink; the archive writes only inside"):
        ArchiveDir.open(run, "acceptance", create=True)
