"""``mlgates``: the verdict on a run dir, its history, and proof that its gates can fail.

    mlgates verdict runs/default           # ACCEPTED / REJECTED / STALE / UNCHECKED
    mlgates verdict runs/a runs/b --gates acceptance/   # one table; 0 only if all ACCEPTED
    mlgates history runs/default           # every archived session, RED->GREEN flips
    mlgates prove runs/default             # mutated copies of the run must turn RED

Exit codes (so CI can gate on ``mlgates verdict`` alone; only ACCEPTED is 0):

    0 ACCEPTED (verdict), proof complete (prove), history shown
    1 REJECTED (verdict); a criterion stayed GREEN under its mutation (prove)
    2 bad input: DIR missing, not a run dir, an archive that is a symlink, bad arguments
    3 STALE: the run's files, the gate files, the key-linked code or the plugin changed
      since the newest GREEN session
    4 UNCHECKED: no session to rest on (none archived, only partial ones, a gate file not
      run, the newest line unreadable)

With several run dirs, ``verdict`` exits with the code of the first one (in the order
given) that is not ACCEPTED.

Light on purpose: the ledger and the verdict need no torch, numpy or yaml.  The rules of
the verdict are in ``verdict.py``; this module parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import os
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
                "UNCHECKED": EXIT_UNCHECKED, "ERROR": EXIT_INPUT}
#: Criteria, changed files and gate files printed per kind before "and N more".
PRINT_CAP = 50


class CliError(Exception):
    """A one-line message for the user; exit 2."""


# --------------------------------------------------------------------------- input


def run_dir_arg(text: str) -> Path:
    """The run dir the user named: it must exist and hold something besides acceptance/.

    Only the names of its top entries are looked at: nothing is opened (a FIFO in it is the
    fingerprint's business, and never waited on)."""
    path = Path(text).expanduser()
    if not path.exists():
        raise CliError(f"{text}: no such run dir")
    if not path.is_dir():
        raise CliError(f"{text}: not a run dir (it is a file, not a directory)")
    try:
        with os.scandir(path) as entries:
            names = {entry.name for entry in entries}
    except OSError as err:
        raise CliError(f"{text}: cannot list the run dir ({err.strerror or err})") from None
    if not names:
        raise CliError(f"{text}: not a run dir (no files in it)")
    return path


def _arrow() -> str:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "→".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "->"
    return "→"


def _short(value: Any, cap: int = 200) -> str:
    """A value read from a ledger, on one line and capped before it is printed."""
    text = "" if value is None else str(value)[: cap * 4]
    text = " ".join(text.split())
    return text if len(text) <= cap else text[: cap - 3] + "..."


# --------------------------------------------------------------------------- verdict


def compute_verdict(run: Path, archive: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """The verdict as a plain dict (what ``--json`` prints); see ``verdict.py``."""
    from pytest_mlgates import verdict

    try:
        return verdict.compute_verdict(run, archive, **kwargs)
    except verdict.VerdictInputError as err:
        raise CliError(str(err)) from None


def print_verdict(result: dict[str, Any]) -> None:
    verdict, run = result["verdict"], result["run"]
    print(f"{verdict} {run}: {_short(result['reason'], 2000)}")
    session = result.get("session") or {}
    if session:
        counts = session.get("counts") or {}
        print(f"  newest session {_short(session.get('time'))}  {session.get('verdict')}  "
              f"{counts.get('total', '?')} criteria  fingerprint "
              f"{_short(session.get('fingerprint'))[:12]}  {_short(session.get('archive_dir'))}")
    not_green = result.get("not_green", [])
    for criterion in not_green[:PRINT_CAP]:
        text = f"  {_short(criterion.get('status')):<10} {_short(criterion.get('name'))}"
        if criterion.get("value") is not None:
            text += f"  value {_short(criterion.get('value'))}"
        if criterion.get("threshold") is not None:
            text += f"  needs {_short(criterion.get('threshold'))}"
        print(text)
    if len(not_green) > PRINT_CAP:
        print(f"  ... and {len(not_green) - PRINT_CAP} more criteria not GREEN")
    for path in result.get("not_run", [])[:PRINT_CAP]:
        print(f"  not run  {_short(path)}")
    for kind, paths in (result.get("changes") or {}).items():
        for rel in paths[:PRINT_CAP]:
            print(f"  {kind:<8} {_short(rel)}")
        if len(paths) > PRINT_CAP:
            print(f"  ... and {len(paths) - PRINT_CAP} more {kind}")


def print_verdict_table(results: list[dict[str, Any]]) -> None:
    """One row per run dir: verdict, run, reason."""
    width = max([len("verdict")] + [len(r["verdict"]) for r in results])
    runs = max([len("run")] + [len(_short(r["run"], 60)) for r in results])
    print(f"{'verdict':<{width}}  {'run':<{runs}}  reason")
    for r in results:
        print(f"{r['verdict']:<{width}}  {_short(r['run'], 60):<{runs}}  "
              f"{_short(r['reason'], 300)}")
    accepted = sum(1 for r in results if r["verdict"] == "ACCEPTED")
    print(f"{accepted} of {len(results)} run dirs ACCEPTED")


def cmd_verdict(args: argparse.Namespace) -> int:
    from pytest_mlgates.verdict import VerdictInputError
    from pytest_mlgates.verdict import compute_verdict as verdict_of

    gates = [Path(p) for p in args.gates] if args.gates else None
    results: list[dict[str, Any]] = []
    for text in args.dirs:
        warnings: list[str] = []
        try:
            result = verdict_of(run_dir_arg(text), args.archive, gates=gates,
                                require_signed=args.require_signed, warnings=warnings,
                                rehash=args.rehash)
        except (CliError, VerdictInputError) as err:
            if len(args.dirs) == 1:
                raise CliError(str(err)) from None
            result = {"run": text, "verdict": "ERROR", "reason": str(err)}
        for note in warnings:
            print(f"mlgates: warning: {text}: {note}", file=sys.stderr)
        results.append(result)
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    elif len(results) == 1:
        print_verdict(results[0])
    else:
        print_verdict_table(results)
    for result in results:
        if result["verdict"] != "ACCEPTED":
            return VERDICT_EXIT.get(result["verdict"], EXIT_INPUT)
    return EXIT_OK


# --------------------------------------------------------------------------- history


def criterion_key(criterion: dict[str, Any]) -> str:
    return str(criterion.get("name") or criterion.get("id"))


def compute_history(run: Path, archive: str | None = None, *,
                    require_signed: bool = False) -> dict[str, Any]:
    """Every session (oldest first) and every RED→GREEN / GREEN→RED flip of a criterion.

    Streams the ledger: each session keeps its row, never its per-file digests.  An
    unreadable line is a row of its own (``verdict: UNREADABLE``); with the signing key
    set, a line without a valid signature is a row marked ``UNSIGNED`` and flips nothing."""
    from pytest_mlgates.archive_fs import ArchiveDir, ArchiveError, archive_location
    from pytest_mlgates.ledger import LEDGER_NAME, iter_lines, signature_state
    from pytest_mlgates.verdict import VerdictInputError, signing_key

    try:
        key = signing_key(require_signed)
    except VerdictInputError as err:
        raise CliError(str(err)) from None
    base, name = archive_location(Path(os.path.abspath(run)), archive)
    path = base / name / LEDGER_NAME
    try:
        handle = ArchiveDir.open_file(base, name, LEDGER_NAME)
    except ArchiveError as err:
        raise CliError(str(err)) from None
    rows: list[dict[str, Any]] = []
    flips: list[dict[str, Any]] = []
    last: dict[str, str] = {}
    if handle is None:
        return {"run": str(run), "ledger": str(path), "sessions": rows, "flips": flips}
    with handle:
        for number, line in enumerate(iter_lines(handle), start=1):
            session = line.entry
            if session is None:
                rows.append({"session": number, "line": line.number, "verdict": "UNREADABLE",
                             "problem": line.problem, "time": None, "counts": {},
                             "fingerprint": None, "archive_dir": None})
                continue
            signed = key is None or signature_state(session, key) == "valid"
            rows.append({
                "session": number,
                "line": line.number,
                "time": session["time"],
                "verdict": session["verdict"] if signed else "UNSIGNED",
                "partial": session["partial"],
                "void": session["void"],
                "counts": session["counts"],
                "fingerprint": session["fingerprint"],
                "archive_dir": session["archive_dir"],
            })
            if not signed:
                continue
            for criterion in session["criteria"]:
                key_name = criterion_key(criterion)
                state = "GREEN" if criterion.get("status") == "GREEN" else "RED"
                before = last.get(key_name)
                if before is not None and before != state:
                    flips.append({"criterion": key_name, "from": before, "to": state,
                                  "session": number, "time": session["time"],
                                  "status": criterion.get("status")})
                last[key_name] = state
    if rows and all(r["verdict"] == "UNREADABLE" for r in rows):
        raise CliError(f"{path}: corrupt ledger (no valid line in it: line "
                       f"{rows[-1]['line']} {rows[-1]['problem']})")
    return {"run": str(run), "ledger": str(path), "sessions": rows, "flips": flips}


def print_history(history: dict[str, Any]) -> None:
    rows = history["sessions"]
    if not rows:
        print(f"{history['run']}: no acceptance session archived ({history['ledger']})")
        return
    print(f"{'#':>3}  {'time (UTC)':<27} {'verdict':<7} {'green':>5} {'red':>4} "
          f"{'other':>5}  {'fingerprint':<12}  archive")
    for row in rows:
        if row["verdict"] == "UNREADABLE":
            print(f"{row['session']:>3}  {'-':<27} UNREADABLE  line {row['line']}: "
                  f"{_short(row['problem'])}")
            continue
        counts = row["counts"]
        other = sum(counts.get(k, 0) for k in ("UNVERIFIED", "ERROR", "SKIPPED"))
        note = "  (partial)" if row.get("partial") else ""
        note += "  (void)" if row.get("void") else ""
        print(f"{row['session']:>3}  {_short(row['time'], 27):<27} {row['verdict']!s:<7} "
              f"{counts.get('GREEN', 0):>5} {counts.get('RED', 0):>4} {other:>5}  "
              f"{_short(row['fingerprint'])[:12]:<12}  {_short(row['archive_dir'])}{note}")
    arrow = _arrow()
    flips = history["flips"]
    if flips:
        print("flips:")
        for flip in flips[-PRINT_CAP * 10:]:
            print(f"  {_short(flip['criterion'])}: {flip['from']}{arrow}{flip['to']} at "
                  f"session {flip['session']} ({_short(flip['time'])})")
    else:
        print("flips: none")
    if rows[-1]["verdict"] == "UNREADABLE":
        print(f"the newest line ({rows[-1]['line']}) is unreadable: mlgates verdict says "
              "UNCHECKED until a session is archived after it")


def cmd_history(args: argparse.Namespace) -> int:
    history = compute_history(run_dir_arg(args.dir), args.archive,
                              require_signed=args.require_signed)
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
    verdict_cmd = sub.add_parser(
        "verdict", help="ACCEPTED / REJECTED / STALE / UNCHECKED (exit 0 only for ACCEPTED)")
    verdict_cmd.add_argument("dirs", nargs="+", metavar="DIR",
                             help="run dir(s); with several, one table and exit 0 only when "
                             "every one is ACCEPTED")
    verdict_cmd.add_argument("--gates", nargs="+", metavar="PATH", default=None,
                             help="gate files or dirs that must have run whole in the newest "
                             "GREEN session (default: every gate file archived sessions of "
                             "the run ran that still exists)")
    verdict_cmd.add_argument("--rehash", action="store_true",
                             help="read every byte of the run: do not reuse the digests of "
                             "unchanged files kept in acceptance/fingerprint-cache.json")
    history_cmd = sub.add_parser("history",
                                 help="every archived session and the criteria that flipped")
    history_cmd.add_argument("dir", help="the run dir")
    for cmd in (verdict_cmd, history_cmd):
        cmd.add_argument("--json", action="store_true", help="print JSON for machines")
        cmd.add_argument("--archive", metavar="DIR", default=None,
                         help="the DIR given to --mlgates-archive=DIR, if any")
        cmd.add_argument("--require-signed", action="store_true",
                         help="count only ledger lines signed with MLGATES_LEDGER_KEY "
                         "(implied whenever that key is set)")
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
