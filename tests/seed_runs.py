"""Three seeds of one experiment as plain runs (a CSV log each, no training): seed0 and seed1
learn both classes, seed2's minority class collapses (recall 0 at every epoch)."""

from __future__ import annotations

from pathlib import Path

HEADER = "epoch,train_loss,val_loss,val_recall_benign,val_recall_malignant,val_accuracy\n"
RUN_SECTION = "run: {format: plain, log: metrics.csv}\n"


def write_seed(root: Path, seed: int, *, collapsed: bool = False, epochs: int = 12) -> Path:
    run = root / f"seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    rows = [HEADER]
    for epoch in range(1, epochs + 1):
        train = 1.0 / (epoch + 1) + 0.01 * seed
        val = 1.2 / (epoch + 1) + 0.02 * seed
        malignant = 0.0 if collapsed else min(0.95, 0.3 + 0.05 * epoch)
        benign = min(0.99, 0.5 + 0.04 * epoch)
        rows.append(f"{epoch},{train:.4f},{val:.4f},{benign:.4f},{malignant:.4f},0.9\n")
    (run / "metrics.csv").write_text("".join(rows))
    return run


def write_seeds(root: Path) -> list[Path]:
    """seed0, seed1 (healthy) and seed2 (minority class collapsed), under ``root/runs``."""
    return [write_seed(root / "runs", seed, collapsed=seed == 2) for seed in range(3)]


def run_args(runs: list[Path], root: Path) -> list[str]:
    args: list[str] = []
    for run in runs:
        args += ["--run-dir", str(run.relative_to(root))]
    return args
