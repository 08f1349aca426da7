"""``python -m model train ...``: argparse in, one line out for every user error.

Exit codes: 0 trained (completed or early-stopped, or already finished); 1 training
crashed (status ``failed`` is in training_results.json, the traceback in train.log);
2 a user error (bad config, override, run dir, unreadable checkpoint, refused defaults);
3 stopped by an in-flight gate (status ``aborted_by_gate``).

Example::

    python -m model train --config configs/default.yaml --override train.epochs=3 --fresh
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_GATE = 0, 1, 2, 3

# A write that failed for want of room: the disk is full, a quota is used up, or the
# process is over RLIMIT_FSIZE (``ulimit -f``). Said in one line naming the file.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see python -m model train --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m model", description="The plain training engine.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    tr = sub.add_parser("train", help="train a config into a run dir (resumes by default)")
    tr.add_argument("--config", help="experiment config (YAML)")
    tr.add_argument("--override", action="append", default=[], metavar="KEY.SUB=VALUE",
                    help="set any config key, the value typed as YAML (repeatable)")
    tr.add_argument("--run-dir", help="run dir (default: runs/<config stem>)")
    tr.add_argument("--fresh", action="store_true",
                    help="start over: remove the engine's files of an earlier run in the dir")
    tr.add_argument("--allow-defaults", action="store_true",
                    help="train without --config, or with the default tracked-metric list")
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)

    from model.checkpoint import CheckpointError
    from model.config import ConfigError, load_config
    from model.runlog import RunDirError

    try:
        config = load_config(args.config, args.override)
        # torch is imported only now, so a config error costs no torch import
        from model.checks import TrainSetupError
        from model.train import train

        stem = Path(args.config).stem if args.config else "defaults"
        run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / stem
        try:
            results = train(config, run_dir, fresh=args.fresh, config_path=args.config,
                            argv=["python", "-m", "model", *args_list],
                            allow_defaults=args.allow_defaults)
        except TrainSetupError as exc:
            raise ConfigError(str(exc)) from None
    except (ConfigError, RunDirError, CheckpointError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- a crash: one line here, traceback in train.log
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            print(f"error: {_disk_full_line(exc)}", file=sys.stderr)
            return EXIT_FAILED
        where = f"; traceback in {run_dir / 'train.log'}" if "run_dir" in locals() else ""
        print(f"error: training failed ({exc.__class__.__name__}: {_one_line(exc)}){where}",
              file=sys.stderr)
        return EXIT_FAILED
    status = results.get("status")
    if status == "aborted_by_gate":
        return EXIT_GATE
    return EXIT_OK if status in ("completed", "early_stopped") else EXIT_FAILED


def _disk_full_line(exc: OSError) -> str:
    """A full disk (or quota, or file-size limit) in one line: which file, and what to do."""
    path = _file_being_written(exc)
    what = f"cannot write {path}" if path else "cannot write to the run dir"
    reason = (exc.strerror or errno.errorcode.get(exc.errno or 0, "OSError")).lower()
    return (f"{what}: {reason} (no space left on the device, or over a quota or file-size "
            "limit); checkpoints/last.pt still holds the last complete epoch: free some space "
            "and run the same command to resume")


def _file_being_written(exc: OSError) -> str | None:
    """The file a write failed on (the engine's atomic writes name it on the error)."""
    return str(exc.filename) if exc.filename else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__
