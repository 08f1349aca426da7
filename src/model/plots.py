"""The two plots of a run: ``plots/loss_curve.png`` and ``plots/recall_curve.png``.

Drawn from ``metric_history.json`` when a run stops, not every epoch: matplotlib costs
more than a small model's epoch, and the engine's overhead budget is 5% of a bare loop.
The engine draws them in a child process (``python -m model.plots RUN_DIR``): importing
matplotlib would add ~35 MiB to the trainer's peak memory (the budget is 5%), and a
broken matplotlib install or backend can then never take a finished run down with it.
matplotlib is imported inside the function, with the non-interactive Agg backend.

    python -m model.plots runs/default     # redraw the plots of a run dir
"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from model.checkpoint import atomic_write_bytes


def _series(rows: list[dict[str, Any]], col: str) -> list[float]:
    out = []
    for row in rows:
        v = row.get(col)
        out.append(float(v) if isinstance(v, (int, float)) else math.nan)
    return out


def write_plots(plots_dir: Path, rows: list[dict[str, Any]], class_names: list[str]) -> None:
    """Write loss_curve.png (train/val loss per epoch) and recall_curve.png (per class)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in rows]

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, _series(rows, "train_loss"), marker="o", label="train_loss")
    ax.plot(epochs, _series(rows, "val_loss"), marker="o", label="val_loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, plots_dir / "loss_curve.png")

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name in class_names:
        ax.plot(epochs, _series(rows, f"val_recall_{name}"), marker=".", label=f"{name}")
    ax.plot(epochs, _series(rows, "val_min_recall"), color="black", linestyle="--",
            label="min")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation recall")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("recall per class")
    ax.legend(fontsize="small", ncol=2)
    ax.grid(alpha=0.3)
    _save(fig, plots_dir / "recall_curve.png")


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plots_from_run_dir(run_dir: Path) -> None:
    """Redraw a run dir's plots from its metric_history.json and training_results.json."""
    history = json.loads((run_dir / "metric_history.json").read_text(encoding="utf-8"))
    rows = [{k: (float(v) if isinstance(v, str) else v) for k, v in row.items()}
            for row in history["rows"]]  # "nan"/"inf" strings back to floats
    columns = history["columns"]
    class_names = [c[len("val_recall_"):] for c in columns if c.startswith("val_recall_")]
    if rows:
        (run_dir / "plots").mkdir(exist_ok=True)
        write_plots(run_dir / "plots", rows, class_names)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m model.plots RUN_DIR", file=sys.stderr)
        return 2
    try:
        plots_from_run_dir(Path(args[0]))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {args[0]}: cannot draw plots ({exc.__class__.__name__}: {exc})",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
