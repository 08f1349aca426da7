"""``mlgates verdict`` and ``mlgates history`` on run dirs archived by real sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_archive import FLOORS, make_run, set_metrics, setup_session

from pytest_mlgates.cli import main

MLGATES = [sys.executable, "-m", "pytest_mlgates.cli"]


def session(pytester: pytest.Pytester) -> None:
    pytester.runpytest("-p", "no:cacheprovider")


def verdict(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verdict", str(run), *extra])
    return code, capsys.readouterr().out


@pytest.fixture
def run(pytester: pytest.Pytester) -> Path:
    path = make_run(pytester.path)
    setup_session(pytester, path, FLOORS)
    return path


def test_fresh_run_is_unchecked(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = verdict(run, capsys)
    assert code == 4 and out.startswith("UNCHECKED ")
    code, out = verdict(run, capsys, "--json")
    assert code == 4 and json.loads(out)["verdict"] == "UNCHECKED"


def test_green_session_is_accepted_until_one_byte_of_a_checkpoint_changes(
    pytester: pytest.Pytester, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session(pytester)
    code, out = verdict(run, capsys)
    assert code == 0 and out.startswith("ACCEPTED ")

    checkpoint = run / "checkpoints" / "final.pt"
    data = bytearray(checkpoint.read_bytes())
    data[1000] ^= 0x01
    checkpoint.write_bytes(bytes(data))
    code, out = verdict(run, capsys)
    assert code == 3 and out.startswith("STALE ")
    assert "changed  checkpoints/final.pt" in out
    assert "metrics.json" not in out

    (run / "extra.txt").write_text("new")
    (run / "config.yaml").unlink()
    code, out = verdict(run, capsys, "--json")
    changes = json.loads(out)["changes"]
    assert changes == {"added": ["extra.txt"], "removed": ["config.yaml"],
                       "changed": ["checkpoints/final.pt"]}


def test_red_session_is_rejected_and_lists_the_red_criteria(
    pytester: pytest.Pytester, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_metrics(run, val_recall_3=0.0, val_macro_f1=0.1)
    session(pytester)
    code, out = verdict(run, capsys)
    assert code == 1 and out.startswith("REJECTED ")
    red_lines = [line for line in out.splitlines() if line.strip().startswith("RED")]
    assert len(red_lines) == 2
    assert any("val_recall_3" in line and "value 0.0" in line and "needs > 0.0" in line
               for line in red_lines)
    assert any("val_macro_f1" in line for line in red_lines)
    assert "val_accuracy" not in out
    code, out = verdict(run, capsys, "--json")
    assert {c["name"] for c in json.loads(out)["not_green"]} == {"val_recall_3", "val_macro_f1"}


def test_only_the_newest_session_counts(
    pytester: pytest.Pytester, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session(pytester)
    set_metrics(run, val_accuracy=0.0)
    session(pytester)
    assert verdict(run, capsys)[0] == 1


def test_history_shows_the_red_to_green_flip(
    pytester: pytest.Pytester, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_metrics(run, val_recall_3=0.0)
    session(pytester)                     # RED: the minority class collapsed
    set_metrics(run, val_recall_3=0.35)   # "fixed and re-trained"
    session(pytester)                     # GREEN

    capsys.readouterr()
    assert main(["history", str(run)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [row[2] for row in rows] == ["RED", "GREEN"]
    assert [row[3:6] for row in rows] == [["2", "1", "0"], ["3", "0", "0"]]
    assert "val_recall_3: RED→GREEN at session 2" in out or \
        "val_recall_3: RED->GREEN at session 2" in out
    assert "val_accuracy" not in out.split("flips:")[1]

    assert main(["history", str(run), "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert history["flips"] == [{
        "criterion": "val_recall_3", "from": "RED", "to": "GREEN", "session": 2,
        "time": history["sessions"][1]["time"], "status": "GREEN"}]
    assert history["sessions"][0]["fingerprint"] != history["sessions"][1]["fingerprint"]
    assert verdict(run, capsys)[0] == 0


def test_torn_newest_line_is_unchecked_never_the_older_green(
    pytester: pytest.Pytester, run: Path
) -> None:
    session(pytester)
    with open(run / "acceptance" / "ledger.jsonl", "ab") as handle:  # a RED session, torn
        handle.write(b'{"time": "2026-11-25T10:00:00Z", "verdict": "RED", "crit')
    for command in ("verdict", "history"):
        proc = subprocess.run([*MLGATES, command, str(run)], capture_output=True, text=True,
                              check=False)
        assert "Traceback" not in proc.stderr + proc.stdout
        if command == "verdict":
            assert proc.returncode == 4, proc.stdout + proc.stderr
            assert proc.stdout.splitlines() == [(
                f"UNCHECKED {run}: line 2 of the ledger is unreadable (not valid JSON (a torn "
                "write?)); no older session stands in for it")]
        else:
            assert proc.returncode == 0
            assert "UNREADABLE  line 2: not valid JSON" in proc.stdout
            assert "mlgates verdict says UNCHECKED" in proc.stdout


@pytest.mark.parametrize("case", ["missing", "file", "empty", "corrupt"])
def test_bad_input_is_one_line_and_exit_2(pytester: pytest.Pytester, case: str) -> None:
    target = pytester.path / "run"
    if case == "file":
        target.write_text("not a dir")
    elif case == "empty":
        target.mkdir()
    elif case == "corrupt":
        make_run(pytester.path)
        (target / "acceptance").mkdir()
        (target / "acceptance" / "ledger.jsonl").write_bytes(b"\x00garbage\nnot json\n")
    for command in ("verdict", "history"):
        proc = subprocess.run([*MLGATES, command, str(target)], capture_output=True, text=True, check=False)
        assert "Traceback" not in proc.stderr
        if case == "corrupt" and command == "verdict":  # no session to rest on: UNCHECKED
            assert proc.returncode == 4 and proc.stdout.startswith(f"UNCHECKED {target}: line 2")
            continue
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith(f"mlgates: {target}")
        expected = {"missing": "no such run dir", "file": "not a run dir",
                    "empty": "not a run dir", "corrupt": "corrupt ledger"}[case]
        assert expected in lines[-1]


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "mlgates"
    assert script.exists()
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                          env={**os.environ}, check=False)
    assert proc.returncode == 0 and "verdict" in proc.stdout and "prove" in proc.stdout


def test_verdict_and_history_read_an_archive_moved_with_the_option(
    pytester: pytest.Pytester, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = pytester.path / "evidence"
    pytester.runpytest("-p", "no:cacheprovider", f"--mlgates-archive={elsewhere}")
    assert verdict(run, capsys)[0] == 4  # nothing in <run>/acceptance
    code, out = verdict(run, capsys, "--archive", str(elsewhere))
    assert code == 0 and out.startswith("ACCEPTED ")
    assert main(["history", str(run), "--archive", str(elsewhere), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["sessions"]) == 1
