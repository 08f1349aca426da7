"""Broken run dirs of the Ultralytics, timm, Keras, DVCLive and W&B formats, each a copy of
a healthy run (tests/trainers/*_run.py, *_files.py) with one thing broken: truncated, empty,
binary or wrongly typed files, symlinks out of the run dir, hostile pickles and YAML tags,
a ``.wandb`` record log cut mid-record as a run in progress leaves it.

``BREAKAGES``: name -> (source format, mutator(run_dir, corpus_root), the path fragment a
failure must name, or None when nothing a gate reads is broken).  The hostile pickles and
YAML tags try to create ``<corpus root>/PWNED-marker``.
"""

from __future__ import annotations

import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from broken_runs import MARKER_NAME, Entry, _RunsCode

Mutator = Callable[[Path, Path], object]


def _marker(root: Path) -> Path:
    return root / MARKER_NAME


def _truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) // 2)])


def _binary(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(4096))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _on(rel: str, action: Callable[[Path], object]) -> Mutator:
    return lambda d, root: action(d / rel)


def _yaml_tag(rel: str) -> Mutator:
    return lambda d, root: (d / rel).write_text(f"!!python/object/apply:os.system ['touch {_marker(root)}']\n")


def _runs_code(rel: str) -> Mutator:
    def mutate(d: Path, root: Path) -> None:
        import torch

        torch.save({"epoch": 1, "state_dict": _RunsCode(_marker(root)), "metric": 0.1}, d / rel)
    return mutate


def _symlink_out(rel: str) -> Mutator:
    def mutate(d: Path, root: Path) -> None:
        outside = root / "_outside" / f"{d.name}-{Path(rel).name}"
        outside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(d / rel), str(outside))
        (d / rel).symlink_to(outside)
    return mutate


def _fifo(path: Path) -> None:
    """A FIFO where a file was: opening it to read would wait for a writer forever."""
    import os

    path.unlink()
    os.mkfifo(path)


def _wandb_log(d: Path) -> Path:
    (log,) = d.glob("run-*.wandb")
    return log


def _wandb(action: Callable[[Path], object]) -> Mutator:
    return lambda d, root: action(_wandb_log(d))


def _cut_mid_record(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))


def _ckpt_metric_string(rel: str) -> Mutator:
    def mutate(d: Path, root: Path) -> None:
        import argparse

        import torch

        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(d / rel, weights_only=True)
        ckpt["metric"], ckpt["epoch"] = "good", "three"
        torch.save(ckpt, d / rel)
    return mutate


def _tsv_ragged(d: Path) -> None:
    tsv = d / "dvclive" / "plots" / "metrics" / "val_loss.tsv"
    tsv.write_text(tsv.read_text() + "7\n")


def _tsv_non_numeric(d: Path) -> None:
    tsv = d / "dvclive" / "plots" / "metrics" / "val_loss.tsv"
    lines = tsv.read_text().splitlines()
    lines[1] = lines[1].split("\t")[0] + "\tlow"
    tsv.write_text("\n".join(lines) + "\n")


_NOTHING: Mutator = lambda d, root: None

BREAKAGES: dict[str, tuple[str, Mutator, str | None]] = {
    "u_healthy": ("ultralytics", _NOTHING, None),
    "u_results_truncated": ("ultralytics", _on("results.csv", _truncate_half), "results.csv"),
    "u_results_binary": ("ultralytics", _on("results.csv", _binary), "results.csv"),
    "u_results_empty": ("ultralytics", _on("results.csv", _empty), "results.csv"),
    "u_best_runs_code": ("ultralytics", _runs_code("weights/best.pt"), None),  # never opened
    "u_args_python_tag": ("ultralytics", _yaml_tag("args.yaml"), "args.yaml"),
    # last.pt is read only as pickle opcodes (whether training finished): never built
    "u_last_runs_code": ("ultralytics", _runs_code("weights/last.pt"), "last.pt"),
    "u_last_truncated": ("ultralytics", _on("weights/last.pt", _truncate_half), "last.pt"),
    "t_healthy": ("timm", _NOTHING, None),
    "t_summary_truncated": ("timm", _on("summary.csv", _truncate_half), "summary.csv"),
    "t_best_truncated": ("timm", _on("model_best.pth.tar", _truncate_half), "model_best.pth.tar"),
    "t_best_runs_code": ("timm", _runs_code("model_best.pth.tar"), "model_best.pth.tar"),
    "t_best_wrong_types": ("timm", _ckpt_metric_string("model_best.pth.tar"), "model_best.pth.tar"),
    "t_last_symlink_out": ("timm", _symlink_out("last.pth.tar"), "last.pth.tar"),
    "t_args_python_tag": ("timm", _yaml_tag("args.yaml"), "args.yaml"),
    "k_healthy": ("keras", _NOTHING, None),
    "k_log_truncated": ("keras", _on("training.log", _truncate_half), "training.log"),
    "k_keras_truncated": ("keras", _on("last.keras", _truncate_half), "last.keras"),
    "k_keras_binary": ("keras", _on("best_val_loss.keras", _binary), "best_val_loss.keras"),
    "k_best_symlink_out": ("keras", _symlink_out("best_val_loss.keras"), "best_val_loss.keras"),
    "d_healthy": ("dvclive", _NOTHING, None),
    "d_tsv_ragged": ("dvclive", lambda d, root: _tsv_ragged(d), "val_loss.tsv"),
    "d_tsv_non_numeric": ("dvclive", lambda d, root: _tsv_non_numeric(d), "val_loss.tsv"),
    "d_tsv_symlink_out": ("dvclive", _symlink_out("dvclive/plots/metrics/val_loss.tsv"), "val_loss.tsv"),
    "d_params_python_tag": ("dvclive", _yaml_tag("dvclive/params.yaml"), "params.yaml"),
    "w_healthy": ("wandb", _NOTHING, None),
    "w_cut_mid_record": ("wandb", _wandb(_cut_mid_record), None),  # a run in progress: read, not broken
    "w_checksum_flip": ("wandb", _wandb(_flip_byte), ".wandb"),
    "w_binary": ("wandb", _wandb(_binary), ".wandb"),
    "w_empty": ("wandb", _wandb(_empty), ".wandb"),
}

#: Hostile entries (issue 16), met in the same two sessions: a FIFO or a symlink out of the run
#: where a reader opens a file. Each is one line naming it -- never a wait, never a read outside.
HOSTILE: dict[str, tuple[str, Mutator, str | None]] = {
    # no results.csv file: not an Ultralytics run any more; the line names the run
    "u_results_fifo": ("ultralytics", _on("results.csv", _fifo), "u_results_fifo"),
    "u_results_symlink_out": ("ultralytics", _symlink_out("results.csv"), "results.csv"),
    "u_last_fifo": ("ultralytics", _on("weights/last.pt", _fifo), "last.pt"),
    "u_last_symlink_out": ("ultralytics", _symlink_out("weights/last.pt"), "last.pt"),
    "t_summary_symlink_out": ("timm", _symlink_out("summary.csv"), "summary.csv"),
    "k_last_fifo": ("keras", _on("last.keras", _fifo), "last.keras"),
    "d_tsv_fifo": ("dvclive", _on("dvclive/plots/metrics/val_loss.tsv", _fifo), "val_loss.tsv"),
    "d_metrics_json_symlink_out": ("dvclive", _symlink_out("dvclive/metrics.json"), None),  # never read
    "w_wandb_fifo": ("wandb", _wandb(_fifo), ".wandb"),
    "w_wandb_symlink_out": ("wandb", lambda d, root: _symlink_out(_wandb_log(d).name)(d, root), ".wandb"),
}
BREAKAGES.update(HOSTILE)

HEALTHY_OF = {name: next(h for h, (f, _, _) in BREAKAGES.items() if h.endswith("_healthy") and f == fmt)
              for name, (fmt, _, _) in BREAKAGES.items()}


def build_corpus(outdir: Path, sources: dict[str, Path]) -> dict[str, Entry]:
    """Every entry under ``outdir`` from the healthy ``sources`` (format -> run dir)."""
    outdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Entry] = {}
    for name, (fmt, mutate, involved) in BREAKAGES.items():
        d = outdir / name
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(sources[fmt], d, symlinks=True, ignore=shutil.ignore_patterns("*.lock"))
        mutate(d, outdir)
        out[name] = Entry(d, involved)
    return out
