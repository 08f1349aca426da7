"""A plain PyTorch run tracked by MLflow (client API, no server).

``--store sqlite`` (default): OUT/mlflow.db plus artifacts under OUT/mlartifacts/<run_id>/
artifacts/; the run dir printed is OUT. ``--store file``: the file store OUT/mlruns/; the run
dir printed is OUT/mlruns/<experiment_id>/<run_id> (MLflow 3 refuses the file store unless
MLFLOW_ALLOW_FILE_STORE=true, which this script sets). Params lr, epochs, seed, hidden; metrics
train_loss, val_loss, val_acc, val_recall_<c>, val_min_recall at step=epoch (from 1);
artifacts checkpoints/best_val_loss.pt and checkpoints/final.pt.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import common  # type: ignore[import-not-found]  # run as a script: this folder is sys.path[0]

EXPERIMENT = "digits"


def add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", choices=("sqlite", "file"), default="sqlite")


def run(args: argparse.Namespace) -> Path:
    os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] = "false"
    from mlflow import MlflowClient

    out: Path = args.out
    if args.store == "sqlite":
        client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
        exp_id = client.create_experiment(EXPERIMENT, artifact_location=(out / "mlartifacts").as_uri())
    else:
        # MLflow >= 3.x refuses the file store ("maintenance mode") unless opted in
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        client = MlflowClient(tracking_uri=(out / "mlruns").as_uri())
        exp_id = client.create_experiment(EXPERIMENT)
    run_id = client.create_run(exp_id, run_name=f"digits-{args.fault}").info.run_id
    for key, value in {"lr": common.LR, "epochs": args.epochs, "seed": args.seed,
                       "hidden": common.HIDDEN, "fault": args.fault}.items():
        client.log_param(run_id, key, value)

    def log(epoch: int, row: dict[str, float]) -> None:
        for key, value in row.items():
            client.log_metric(run_id, key, value, step=epoch)

    def upload(path: Path) -> None:
        client.log_artifact(run_id, str(path), artifact_path="checkpoints")

    with tempfile.TemporaryDirectory(prefix="mlflow-ckpt-") as staging:
        common.plain_loop(args, Path(staging), log, upload)
    if args.fault == "no_best":
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        repo = get_artifact_repository(client.get_run(run_id).info.artifact_uri)
        repo.delete_artifacts("checkpoints/best_val_loss.pt")
    client.set_terminated(run_id, "FINISHED")
    return out if args.store == "sqlite" else out / "mlruns" / exp_id / run_id


if __name__ == "__main__":
    common.main(run, __doc__ or "", add_store)
