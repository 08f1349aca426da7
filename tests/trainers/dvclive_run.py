"""Real DVCLive runs of the plain digits loop (tests/trainers/common.py): OUT/<fault>/.

    dvclive/metrics.json, dvclive/params.yaml
    dvclive/plots/metrics/{epoch,train/loss,val_loss,val_acc,val_recall_<c>,val_min_recall}.tsv
    checkpoints/best_val_loss.pt, final.pt   (DVCLive keeps none: the gate file's run: says where)

One process makes every fault named; DVCLive runs outside any git repository (inside one
it would run ``dvc init``), with ``save_dvc_exp=False``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--faults", default="healthy,collapsed,nan,no_best")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    import common  # type: ignore[import-not-found]
    from dvclive import Live

    for fault in args.faults.split(","):
        out = (args.out / fault).resolve()
        run = argparse.Namespace(out=out, fault=fault, epochs=args.epochs, seed=0)
        with Live(str(out / "dvclive"), save_dvc_exp=False, report=None) as live:
            live.log_params({"lr": common.LR, "epochs": args.epochs, "fault": fault})

            def log(epoch: int, row: dict[str, float], live: Live = live) -> None:
                live.log_metric("epoch", epoch)
                live.log_metric("train/loss", row["train_loss"])
                for key, value in row.items():
                    if key != "train_loss":
                        live.log_metric(key, value)
                live.next_step()

            common.plain_loop(run, out / "checkpoints", log)
        if fault == "no_best":
            (out / "checkpoints" / "best_val_loss.pt").unlink()
        print(out)


if __name__ == "__main__":
    main()
