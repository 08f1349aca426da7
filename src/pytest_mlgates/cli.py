"""``mlgates``: the verdict on a run dir, its history, and proof that its gates can fail.

    mlgates verdict runs/default           # ACCEPTED / REJECTED / STALE / UNCHECKED
    mlgates history runs/default           # every archived session, RED->GREEN flips
    mlgates prove runs/default             # mutated copies of the run must turn RED

Exit codes (so CI can gate on ``mlgates verdict`` alone; only ACCEPTED is 0):

    0 ACCEPTED (verdict), proof complete (prove), history shown
    1 REJECTED (verdict); a criterion stayed GREEN under its mutation (prove)
    2 bad input: DIR missing, not a run dir, corrupt ledger, bad arguments
    3 STALE: files of the run changed since the newest GREEN session
    4 UNCHECKED: no acceptance session archived for the run

Light on purpose: the ledger and the verdict need no torch, numpy or yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_INPUT = 2
EXIT_STALE = 3
EXIT_UNCHECKED = 4
VERDICT_EXIT = {"ACCEPTED": EXIT_OK, "REJECTED": EXIT_REJECTED, "STALE": EXIT_STALE,
                "UNCHECKED": EXIT_UNCHECKED}


class CliError(Exception):
    """A one-line message for the user; exit 2."""


# --------------------------------------------------------------------------- input


def run_dir_arg(text: str) -> Path:
    """The run dir the user named: it must exist and hold files besides acceptance/."""
    from pytest_mlgates.fingerprint import run_files

    path = Path(text).expanduser()
    if not path.exists():
        raise CliError(f"{text}: no such run dir")
    if not path.is_dir():
        raise CliError(f"{text}: not a run dir (it is a file, not a directory)")
    if not run_files(path) and not (path / "acceptance").is_dir():
        raise CliError(f"{text}: not a run dir (no files in it)")
    return path


def ledger_path(run: Path, archive: str | None) -> Path:
    from pytest_mlgates.archive import LEDGER_NAME, archive_root

    return archive_root(run.resolve(), archive or "on") / LEDGER_NAME


def load_sessions(run: Path, archive: str | None) -> tuple[Path, list[dict[str, Any]]]:
    """The archived sessions of a run, oldest first; skipped lines are reported on stderr."""
    from pytest_mlgates.archive import read_ledger

    path = ledger_path(run, archive)
    if not path.exists():
        return path, []
    try:
        ledger = read_ledger(path)
    except OSError as err:
        raise CliError(f"{path}: cannot read the ledger ({err.strerror or err})") from None
    for note in ledger.skipped:
        print(f"mlgates: warning: {note}", file=sys.stderr)
    if ledger.skipped and not ledger.entries:
        raise CliError(f"{path}: corrupt ledger (no valid line in it)")
    return path, ledger.entries


def _arrow() -> str:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "→".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "->"
    return "→"


# --------------------------------------------------------------------------- verdict


def compute_verdict(run: Path, archive: str | None = None) -> dict[str, Any]:
    """The verdict as a plain dict (what ``--json`` prints)."""
    from pytest_mlgates.fingerprint import diff_files, fingerprint

    path, sessions = load_sessions(run, archive)
    result: dict[str, Any] = {"run": str(run), "ledger": str(path), "sessions": len(sessions)}
    if not sessions:
        return {**result, "verdict": "UNCHECKED",
                "reason": f"no acceptance session archived ({path} missing or empty)"}
    # A partial session (-k/-m/--deselect left criteria out) proves nothing when GREEN, so
    # the verdict rests on the newest session that is complete or RED.
    counted = [s for s in sessions if not (s.get("partial") and s.get("verdict") == "GREEN")]
    if not counted:
        return {**result, "verdict": "UNCHECKED",
                "reason": "only partial sessions archived (criteria deselected with -k/-m); "
                          "run every criterion once"}
    newest = counted[-1]
    if newest is not sessions[-1]:
        result["skipped_partial"] = len(sessions) - 1 - sessions.index(newest)
    criteria = [c for c in newest.get("criteria", []) if isinstance(c, dict)]
    not_green = [c for c in criteria if c.get("status") != "GREEN"]
    result["session"] = {k: newest.get(k) for k in ("time", "verdict", "fingerprint",
                                                    "archive_dir", "counts", "git")}
    result["not_green"] = not_green
    if newest.get("verdict") != "GREEN" or not_green or not criteria:
        reason = "the newest session is RED" if newest.get("verdict") != "GREEN" else \
            "the newest session has criteria that are not GREEN"
        if newest.get("partial"):
            reason += f" (a partial session: {(newest.get('counts') or {}).get('deselected', '?')} criteria deselected)"
        return {**result, "verdict": "REJECTED", "reason": reason}
    digest, files = fingerprint(run)
    if digest != newest.get("fingerprint"):
        changes = diff_files(newest.get("files") or {}, files)
        return {**result, "verdict": "STALE", "changes": changes,
                "reason": "files of the run changed since the newest GREEN session"}
    edited = changed_gate_files(newest)
    if edited:
        return {**result, "verdict": "STALE", "changes": {"gate file": edited},
                "reason": "gate files changed since the newest GREEN session: the criteria it "
                          "passed are not the ones there now"}
    later = result.get("skipped_partial")
    tail = f" ({later} later partial GREEN session{'s' if later != 1 else ''} not counted)" if later else ""
    return {**result, "verdict": "ACCEPTED",
            "reason": f"GREEN session of {newest.get('time')} matches the files now{tail}"}


def changed_gate_files(session: dict[str, Any]) -> list[str]:
    """Gate files of a session whose content differs now (rootdir-relative). A file that is
    no longer there (the verdict runs in another checkout) cannot be compared and is not
    counted."""
    from pytest_mlgates.fingerprint import file_sha256

    recorded = session.get("gate_files")
    if not isinstance(recorded, dict):
        return []  # written before gate files were recorded
    root = Path(str(session.get("rootdir") or "."))
    edited = []
    for rel, sha in sorted(recorded.items()):
        try:
            now = file_sha256(root / str(rel))
        except OSError:
            continue
        if now != sha:
            edited.append(str(rel))
    return edited


def print_verdict(result: dict[str, Any]) -> None:
    verdict, run = result["verdict"], result["run"]
    print(f"{verdict} {run}: {result['reason']}")
    session = result.get("session") or {}
    if session:
        counts = session.get("counts") or {}
        print(f"  newest session {session.get('time')}  {session.get('verdict')}  "
              f"{counts.get('total', '?')} criteria  fingerprint "
              f"{str(session.get('fingerprint') or '')[:12]}  {session.get('archive_dir')}")
    for criterion in result.get("not_green", []):
        detail = criterion.get("value")
        needs = criterion.get("threshold")
        text = f"  {criterion.get('status'):<10} {criterion.get('name')}"
        if detail is not None:
            text += f"  value {detail}"
        if needs is not None:
            text += f"  needs {needs}"
        print(text)
    for kind, paths in (result.get("changes") or {}).items():
        for rel in paths:
            print(f"  {kind:<8} {rel}")


def cmd_verdict(args: argparse.Namespace) -> int:
    result = compute_verdict(run_dir_arg(args.dir), args.archive)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_verdict(result)
    return VERDICT_EXIT[result["verdict"]]


# --------------------------------------------------------------------------- history


def criterion_key(criterion: dict[str, Any]) -> str:
    return str(criterion.get("name") or criterion.get("id"))


def compute_history(run: Path, archive: str | None = None) -> dict[str, Any]:
    """Every session (oldest first) and every RED→GREEN / GREEN→RED flip of a criterion."""
    path, sessions = load_sessions(run, archive)
    rows = []
    flips = []
    last: dict[str, str] = {}
    for number, session in enumerate(sessions, start=1):
        counts = session.get("counts") or {}
        rows.append({
            "session": number,
            "time": session.get("time"),
            "verdict": session.get("verdict"),
            "counts": counts,
            "fingerprint": session.get("fingerprint"),
            "archive_dir": session.get("archive_dir"),
        })
        for criterion in session.get("criteria", []):
            if not isinstance(criterion, dict):
                continue
            key = criterion_key(criterion)
            state = "GREEN" if criterion.get("status") == "GREEN" else "RED"
            before = last.get(key)
            if before is not None and before != state:
                flips.append({"criterion": key, "from": before, "to": state,
                              "session": number, "time": session.get("time"),
                              "status": criterion.get("status")})
            last[key] = state
    return {"run": str(run), "ledger": str(path), "sessions": rows, "flips": flips}


def print_history(history: dict[str, Any]) -> None:
    rows = history["sessions"]
    if not rows:
        print(f"{history['run']}: no acceptance session archived ({history['ledger']})")
        return
    print(f"{'#':>3}  {'time (UTC)':<27} {'verdict':<7} {'green':>5} {'red':>4} "
          f"{'other':>5}  {'fingerprint':<12}  archive")
    for row in rows:
        counts = row["counts"]
        other = sum(counts.get(k, 0) for k in ("UNVERIFIED", "ERROR", "SKIPPED"))
        print(f"{row['session']:>3}  {row['time']!s:<27} {row['verdict']!s:<7} "
              f"{counts.get('GREEN', 0):>5} {counts.get('RED', 0):>4} {other:>5}  "
              f"{str(row['fingerprint'] or '')[:12]:<12}  {row['archive_dir']}")
    arrow = _arrow()
    if history["flips"]:
        print("flips:")
        for flip in history["flips"]:
            print(f"  {flip['criterion']}: {flip['from']}{arrow}{flip['to']} at session "
                  f"{flip['session']} ({flip['time']})")
    else:
        print("flips: none")


def cmd_history(args: argparse.Namespace) -> int:
    history = compute_history(run_dir_arg(args.dir), args.archive)
    if args.json:
        print(json.dumps(history, indent=2))
    else:
        print_history(history)
    return EXIT_OK


# --------------------------------------------------------------------------- prove


def cmd_prove(args: argparse.Namespace) -> int:
    from pytest_mlgates import prove

    run = run_dir_arg(args.dir)
    gates = [Path(p) for p in (args.gates or ["acceptance"])]
    for gate_path in gates:
        if not gate_path.exists():
            raise CliError(f"{gate_path}: no such gate file or directory")
    try:
        baseline = run_dir_arg(args.baseline_run) if args.baseline_run else None
        report = prove.prove(run, gates, jobs=args.jobs, timeout_s=args.timeout,
                             baseline=baseline, run_format=args.run_format)
    except prove.ProveError as err:
        raise CliError(str(err)) from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        prove.print_report(report)
    return EXIT_OK if not report["defects"] else EXIT_REJECTED


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlgates", description="Verdicts on ML training runs from their RED/GREEN archive.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("verdict", "ACCEPTED / REJECTED / STALE / UNCHECKED (exit 0 only for ACCEPTED)"),
        ("history", "every archived session and the criteria that flipped"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("dir", help="the run dir")
        cmd.add_argument("--json", action="store_true", help="print JSON for machines")
        cmd.add_argument("--archive", metavar="DIR", default=None,
                         help="the DIR given to --mlgates-archive=DIR, if any")
    prove_cmd = sub.add_parser("prove", help="mutated copies of the run must turn each "
                               "criterion RED")
    prove_cmd.add_argument("dir", help="the run dir")
    prove_cmd.add_argument("--gates", nargs="+", metavar="PATH",
                           help="gate files or dirs (default: ./acceptance)")
    prove_cmd.add_argument("--json", action="store_true", help="print JSON for machines")
    prove_cmd.add_argument("--baseline-run", metavar="DIR", default=None,
                           help="run the baseline gate compares against (default: DIR "
                           "itself, unmutated)")
    prove_cmd.add_argument("--run-format", metavar="NAME", default=None,
                           help="read the run as this format, as pytest's --run-format does")
    prove_cmd.add_argument("--jobs", type=int, default=2, choices=(1, 2),
                           help="pytest subprocesses at once (default 2)")
    prove_cmd.add_argument("--timeout", type=float, default=300.0,
                           help="seconds allowed per pytest subprocess (default 300)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"verdict": cmd_verdict, "history": cmd_history, "prove": cmd_prove}
    try:
        return handlers[args.command](args)
    except CliError as err:
        print(f"mlgates: {err}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"mlgates: {where}{err.strerror or err}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
