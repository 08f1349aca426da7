"""A Hugging Face Trainer run under in-flight gates: the run dir is OUT.

``GatesCallback(GATES, after_epoch=N)`` judges the run as it trains; ``--collapse-from E``
makes the minority class 3 collapse from epoch E on (see ``hf_digits.py``).  The Trainer of
``hf_run.py``: epoch strategies, best by eval_loss, two checkpoints kept; ``save_model()`` and
``save_state()`` at the end.  Prints one JSON line (the verdict that stopped the run, or
null; the epochs trained; also in OUT/summary.json) and, last, the run dir. ``--batch
JOBS.json`` trains several runs in one process (see ``common.main``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import common  # type: ignore[import-not-found]  # run as a script: this folder is sys.path[0]


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gates", type=Path, required=True, help="in-flight gate file")
    parser.add_argument("--after-epoch", type=int, default=1)
    parser.add_argument("--collapse-from", type=int, default=0, help="1-based epoch; 0 = never")


def run(args: argparse.Namespace) -> Path:
    """Train one run; its summary goes to OUT/summary.json."""
    from hf_digits import CollapseFrom, make_trainer  # type: ignore[import-not-found]

    from pytest_mlgates.huggingface import GatesCallback

    gates = GatesCallback(args.gates, after_epoch=args.after_epoch)
    trainer = make_trainer(args.out, epochs=args.epochs, seed=args.seed,
                           callbacks=[CollapseFrom(args.collapse_from), gates])
    trainer.train()
    trainer.save_model()
    trainer.save_state()
    verdict = gates.verdict
    summary = json.dumps({"verdict": None if verdict is None else {"criterion": verdict.criterion,
                                                                   "epoch": verdict.epoch, "reason": verdict.reason},
                          "epoch": trainer.state.epoch, "global_step": trainer.state.global_step})
    (args.out / "summary.json").write_text(summary, encoding="utf-8")
    return args.out


def main() -> None:
    args = common.parse_args(__doc__ or "", add_args)
    run_dir = run(args)
    print((args.out / "summary.json").read_text(encoding="utf-8"))
    print(run_dir)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--batch"]:  # several runs in this process: see common.main
        common.main(run, __doc__ or "", add_args)
    else:
        main()
