"""Broken run dirs of other trainers, each a copy of a healthy real run with one thing broken.

The engine's corpus (``tests/broken_runs.py``) covers the engine's files; this one covers
what the foreign readers open: Lightning's ``metrics.csv``, ``.ckpt`` callback state and
``hparams.yaml``, the HF Trainer's ``trainer_state.json`` and weight files, MLflow's
``mlflow.db`` and file store, TensorBoard event files.  Every entry starts as a copy of a
run that a real trainer wrote (``tests/trainers/``), so the files are what users have::

    python tests/broken_foreign.py /tmp/foreign              # trains the sources, writes all
    python tests/broken_foreign.py /tmp/foreign hf_state_truncated l_csv_binary

    from broken_foreign import build_foreign_corpus
    entries = build_foreign_corpus(tmp_path, {"lightning": path, ...})   # {name: Entry}

``Entry.involved`` is the part of a path a failure caused by the breakage must name, or
``None`` when nothing a gate reads is broken (a hostile ``training_args.bin`` must simply
never be opened).  The hostile pickles try to create ``<corpus root>/PWNED-marker``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # runnable as a script from anywhere
    sys.path.insert(0, str(HERE))

from broken_runs import MARKER_NAME, TWO_GB, Entry, _RunsCode

#: The healthy source each entry copies (a key of tests/conftest.py's TRAINER_SCRIPTS).
SOURCES = ("lightning", "huggingface", "mlflow-sqlite", "mlflow-file", "tensorboard")


# --------------------------------------------------------------------------- helpers


def _truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) // 2)])


def _binary(path: Path, n: int = 4096, seed: int = 11) -> None:
    path.write_bytes(random.Random(seed).randbytes(n))


def _sparse(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.touch()
    os.truncate(path, TWO_GB)


def _marker(root: Path) -> Path:
    return root / MARKER_NAME


# --------------------------------------------------------------------------- Lightning


def _csv_lines(d: Path) -> list[str]:
    return (d / "metrics.csv").read_text().splitlines()


def _write_csv(d: Path, lines: list[str]) -> None:
    (d / "metrics.csv").write_text("\n".join(lines) + "\n")


def _csv_ragged(d: Path) -> None:
    lines = _csv_lines(d)
    lines[3] += ",0.5,0.6,0.7"  # more cells than the header
    _write_csv(d, lines)


def _csv_non_numeric(d: Path) -> None:
    lines = _csv_lines(d)
    cells = lines[3].split(",")
    cells[4] = "0.3seven"  # val_loss of epoch 1
    lines[3] = ",".join(cells)
    _write_csv(d, lines)


def _ckpts(d: Path) -> list[Path]:
    return sorted((d / "checkpoints").glob("*.ckpt"))


def _edit_callbacks(d: Path, edit: Callable[[str, dict[str, Any]], tuple[str, Any]]) -> None:
    """Rewrite the ModelCheckpoint entry of every .ckpt with ``edit(key, state) -> (key, state)``."""
    import torch

    for path in _ckpts(d):
        ckpt = torch.load(path, weights_only=True)
        callbacks = {}
        for key, state in ckpt["callbacks"].items():
            if key.startswith("ModelCheckpoint"):
                key, state = edit(key, dict(state))
            callbacks[key] = state
        ckpt["callbacks"] = callbacks
        torch.save(ckpt, path)


def _set_state(field: str, value: Any) -> Callable[[Path, Path], None]:
    def edit(key: str, state: dict[str, Any]) -> tuple[str, Any]:
        state[field] = value
        return key, state
    return lambda d, root: _edit_callbacks(d, edit)


def _monitor_int(d: Path) -> None:
    def edit(key: str, state: dict[str, Any]) -> tuple[str, Any]:
        state["monitor"] = 7
        return key.replace("'monitor': 'val_loss'", "'monitor': 7"), state
    _edit_callbacks(d, edit)


def _ckpt_runs_code(d: Path, root: Path) -> None:
    import torch

    for path in _ckpts(d):
        torch.save({"epoch": 3, "state_dict": _RunsCode(_marker(root)), "callbacks": {}}, path)


def _last_ckpt_dir(d: Path) -> None:
    last = d / "checkpoints" / "last.ckpt"
    last.unlink()
    last.mkdir()
    (last / "inside.txt").write_text("a directory where a checkpoint should be\n")


def _checkpoints_symlink_out(d: Path, root: Path) -> None:
    outside = root / "_outside" / f"{d.name}-checkpoints"
    outside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(d / "checkpoints"), str(outside))
    (d / "checkpoints").symlink_to(outside, target_is_directory=True)


# --------------------------------------------------------------------------- Hugging Face


def _state_files(d: Path) -> list[Path]:
    return [d / "trainer_state.json", *sorted(d.glob("checkpoint-*/trainer_state.json"))]


def _edit_state(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path, Path], None]:
    def mutate(d: Path, root: Path) -> None:
        for path in _state_files(d):
            data = json.loads(path.read_text())
            path.write_text(json.dumps(edit(data)))
    return mutate


def _with(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**data, **changes}


def _epoch_abc(data: dict[str, Any]) -> dict[str, Any]:
    history = [dict(e) for e in data["log_history"]]
    history[1]["epoch"] = "abc"
    return _with(data, log_history=history)


def _weight_files(d: Path) -> list[Path]:
    return [d / "model.safetensors", *sorted(d.glob("checkpoint-*/model.safetensors"))]


def _each_weights(action: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def mutate(d: Path, root: Path) -> None:
        for path in _weight_files(d):
            action(path, root)
    return mutate


def _corrupt_header(path: Path, root: Path) -> None:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = b"{\"w\": {\"dtype\": " + b"\xff" * 8 + b"}" + b" " * max(0, n - 18)
    path.write_bytes(data[:8] + header[:n] + data[8 + n:])


def _header_2gb(path: Path, root: Path) -> None:
    header = json.dumps({"fc.weight": {"dtype": "F32", "shape": [512, 1024, 1024],
                                       "data_offsets": [0, TWO_GB]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)


def _index_instead(shard: str) -> Callable[[Path, Path], None]:
    def action(path: Path, root: Path) -> None:
        path.unlink()
        index = {"metadata": {"total_size": 1}, "weight_map": {"fc1.weight": shard, "fc1.bias": shard}}
        path.with_name("model.safetensors.index.json").write_text(json.dumps(index))
    return action


def _bin_runs_code(path: Path, root: Path) -> None:
    import torch

    path.unlink()
    torch.save({"fc1.weight": _RunsCode(_marker(root))}, path.with_name("pytorch_model.bin"))


def _training_args_runs_code(d: Path, root: Path) -> None:
    import pickle

    for path in [d / "training_args.bin", *sorted(d.glob("checkpoint-*/training_args.bin"))]:
        path.write_bytes(pickle.dumps(_RunsCode(_marker(root))))


def _checkpoint_files(d: Path) -> None:
    for folder in sorted(d.glob("checkpoint-*")):
        shutil.rmtree(folder)
        folder.write_text("a file where a checkpoint folder should be\n")


# --------------------------------------------------------------------------- MLflow


def _no_mlflow_tables(d: Path) -> None:
    (d / "mlflow.db").unlink()
    con = sqlite3.connect(d / "mlflow.db")
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    con.execute("INSERT INTO notes (text) VALUES ('not mlflow')")
    con.commit()
    con.close()


def _two_runs(d: Path) -> None:
    con = sqlite3.connect(d / "mlflow.db")
    cols = [r[1] for r in con.execute("PRAGMA table_info(runs)")]
    row = dict(zip(cols, con.execute("SELECT * FROM runs").fetchone()))
    row["run_uuid"] = "f" * 32
    if "name" in row:
        row["name"] = "second-run"
    con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [row[c] for c in cols])
    con.commit()
    con.close()


def _metric_garbage(d: Path) -> None:
    with open(d / "metrics" / "val_loss", "a") as fh:
        fh.write("garbage line that is not timestamp value step\n")


def _meta_invalid(d: Path) -> None:
    (d / "meta.yaml").write_text("run_id: [c2c205dd\nstatus: {3\n")


# --------------------------------------------------------------------------- TensorBoard


def _tb_file(d: Path) -> Path:
    return next(d.glob("events.out.tfevents.*"))


def _tb_garbage(d: Path) -> None:
    _binary(d / "events.out.tfevents.x")


# --------------------------------------------------------------------------- the corpus


Mutator = Callable[[Path, Path], object]


def _on(rel: str, action: Callable[[Path], object]) -> Mutator:
    return lambda d, root: action(d / rel)


def _d(action: Callable[[Path], object]) -> Mutator:
    return lambda d, root: action(d)


def _all(action: Callable[[Path], object], paths: list[Path]) -> None:
    for path in paths:
        action(path)


# name -> (source trainer, mutator(run_dir, corpus_root), the path fragment a failure must name)
BREAKAGES: dict[str, tuple[str, Mutator, str | None]] = {
    "l_healthy": ("lightning", lambda d, root: None, None),
    "l_csv_ragged": ("lightning", _d(_csv_ragged), "metrics.csv"),
    "l_csv_non_numeric": ("lightning", _d(_csv_non_numeric), "metrics.csv"),
    "l_csv_binary": ("lightning", _on("metrics.csv", _binary), "metrics.csv"),
    "l_csv_empty": ("lightning", _on("metrics.csv", lambda p: p.write_bytes(b"")), "metrics.csv"),
    "l_csv_sparse_2gb": ("lightning", _on("metrics.csv", _sparse), "metrics.csv"),
    "l_ckpt_truncated": ("lightning", lambda d, root: _all(_truncate_half, _ckpts(d)), "checkpoints/"),
    "l_ckpt_runs_code": ("lightning", _ckpt_runs_code, "checkpoints/"),
    "l_cb_state_not_dict": ("lightning", lambda d, root: _edit_callbacks(d, lambda k, s: (k, "not a dict")),
                            "checkpoints/"),
    "l_cb_monitor_int": ("lightning", _d(_monitor_int), "checkpoints"),
    "l_cb_best_score_string": ("lightning", _set_state("best_model_score", "very good"), "checkpoints/"),
    "l_cb_best_path_int": ("lightning", _set_state("best_model_path", 7), "checkpoints"),
    "l_cb_best_path_relative": ("lightning", _set_state("best_model_path", "../../x.ckpt"), "checkpoints"),
    "l_last_ckpt_dir": ("lightning", _d(_last_ckpt_dir), "checkpoints/"),
    "l_checkpoints_symlink_out": ("lightning", _checkpoints_symlink_out, "checkpoints"),
    "l_hparams_python_tag": ("lightning", lambda d, root: (d / "hparams.yaml").write_text(
        f"!!python/object/apply:os.system ['touch {_marker(root)}']\n"), "hparams.yaml"),
    "hf_healthy": ("huggingface", lambda d, root: None, None),
    "hf_state_truncated": ("huggingface", lambda d, root: _all(_truncate_half, _state_files(d)),
                           "trainer_state.json"),
    "hf_state_not_object": ("huggingface", _edit_state(lambda s: [1, 2, 3]), "trainer_state.json"),
    "hf_log_history_not_list": ("huggingface", _edit_state(lambda s: _with(s, log_history="x")), "trainer_state.json"),
    "hf_epoch_abc": ("huggingface", _edit_state(_epoch_abc), "trainer_state.json"),
    "hf_best_metric_string": ("huggingface", _edit_state(lambda s: _with(s, best_metric="low")), "trainer_state.json"),
    "hf_best_step_float": ("huggingface", _edit_state(lambda s: _with(s, best_global_step=80.5)),
                           "trainer_state.json"),
    "hf_safetensors_bad_header": ("huggingface", _each_weights(_corrupt_header), "model.safetensors"),
    "hf_safetensors_2gb_tensor": ("huggingface", _each_weights(_header_2gb), "model.safetensors"),
    "hf_index_dotdot_shard": ("huggingface", _each_weights(_index_instead("../x.safetensors")), "index.json"),
    "hf_index_missing_shard": ("huggingface", _each_weights(_index_instead("model-00001-of-00002.safetensors")),
                               "model-00001-of-00002.safetensors"),
    "hf_bin_runs_code": ("huggingface", _each_weights(_bin_runs_code), "pytorch_model.bin"),
    "hf_checkpoint_a_file": ("huggingface", _d(_checkpoint_files), "checkpoint-|hf_checkpoint_a_file:"),
    "hf_training_args_runs_code": ("huggingface", _training_args_runs_code, None),
    "m_sqlite_healthy": ("mlflow-sqlite", lambda d, root: None, None),
    "m_db_truncated": ("mlflow-sqlite", _on("mlflow.db", _truncate_half), "mlflow.db"),
    "m_db_not_sqlite": ("mlflow-sqlite", _on("mlflow.db", _binary), "mlflow.db"),
    "m_db_no_mlflow_tables": ("mlflow-sqlite", _d(_no_mlflow_tables), "mlflow.db"),
    "m_db_two_runs": ("mlflow-sqlite", _d(_two_runs), "mlflow.db"),
    "m_file_healthy": ("mlflow-file", lambda d, root: None, None),
    "m_file_metric_garbage": ("mlflow-file", _d(_metric_garbage), "metrics/val_loss"),
    "m_file_meta_invalid_yaml": ("mlflow-file", _d(_meta_invalid), "meta.yaml"),
    "tb_healthy": ("tensorboard", lambda d, root: None, None),
    "tb_truncated": ("tensorboard", lambda d, root: _truncate_half(_tb_file(d)), "events.out.tfevents"),
    "tb_garbage_file": ("tensorboard", _d(_tb_garbage), "events.out.tfevents.x"),
}

#: entry -> the healthy entry of the same trainer, the control its failures are compared with
HEALTHY_OF = {name: next(h for h, (t, _, _) in BREAKAGES.items() if h.endswith("_healthy") and t == trainer)
              for name, (trainer, _, _) in BREAKAGES.items()}


def build_foreign_corpus(outdir: Path | str, sources: dict[str, Path],
                         names: list[str] | None = None) -> dict[str, Entry]:
    """Write every (or the named) entry under ``outdir`` from the healthy ``sources``
    (trainer -> run dir as the trainer fixture returns it); return {name: Entry}."""
    root = Path(outdir)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Entry] = {}
    for name in names or list(BREAKAGES):
        trainer, mutate, involved = BREAKAGES[name]
        d = root / name
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(sources[trainer], d, symlinks=True, ignore=shutil.ignore_patterns("*.lock"))
        mutate(d, root)
        out[name] = Entry(d, involved)
    return out


def train_sources(outdir: Path) -> dict[str, Path]:
    """Healthy runs of every trainer, as tests/conftest.py's ``trainer_run`` trains them."""
    from conftest import TRAINER_EPOCHS, TRAINER_SCRIPTS, TRAINER_SCRIPTS_DIR, trainer_env

    out: dict[str, Path] = {}
    for trainer in SOURCES:
        script, extra, _ = TRAINER_SCRIPTS[trainer]
        target = outdir / trainer
        shutil.rmtree(target, ignore_errors=True)
        proc = subprocess.run([sys.executable, str(TRAINER_SCRIPTS_DIR / script), str(target), "--fault", "healthy",
                               "--epochs", str(TRAINER_EPOCHS), *extra], capture_output=True, text=True,
                              timeout=600, env=trainer_env(), cwd=outdir, check=True)
        out[trainer] = Path(proc.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str]) -> int:
    if not argv or any(n not in BREAKAGES for n in argv[1:]):
        print(f"usage: python tests/broken_foreign.py OUTDIR [ENTRY...] (entries: {', '.join(BREAKAGES)})",
              file=sys.stderr)
        return 2
    root = Path(argv[0]).resolve()
    root.mkdir(parents=True, exist_ok=True)
    sources = train_sources(root / "_sources")
    for name, entry in build_foreign_corpus(root, sources, argv[1:] or None).items():
        print(f"{name:28} {entry.path}  (names {entry.involved or '-'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
