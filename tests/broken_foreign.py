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

import hostile_inputs as h  # isort: skip
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


# --------------------------------------------------------------------------- hostile entries
# Built to hurt a reader (tests/test_hostile_corpus.py runs them under an address-space
# limit, with strace and the outside sentinel of tests/hostile_inputs.py).


def _every(action: Callable[[Path], object], *patterns: str) -> Mutator:
    """``action`` on every path matching each glob pattern (``checkpoint-*/model.safetensors``)."""
    def mutate(d: Path, root: Path) -> None:
        for pattern in patterns:
            for path in sorted(d.glob(pattern)) or [d / pattern]:
                action(path)
    return mutate


def _out(*patterns: str) -> Mutator:
    """Each match becomes a symlink to a sentinel copy of itself in ``<root>/_outside/``."""
    def mutate(d: Path, root: Path) -> None:
        for pattern in patterns:
            for path in sorted(d.glob(pattern)):
                rel = path.relative_to(d).as_posix().replace("/", "_")
                h.link_out(path, root, f"{d.name}-{rel}")
    return mutate


def _text(rel: str, text: str) -> Mutator:
    return lambda d, root: (d / rel).write_text(text)


def _json_raw(patterns: tuple[str, ...], edit: Callable[[Any], Any], raw: str) -> Mutator:
    """Each JSON file matching ``patterns`` rewritten by ``edit``; the string "@RAW@" in it
    becomes ``raw`` unquoted (5000 digits, nesting no encoder writes)."""
    def mutate(d: Path, root: Path) -> None:
        for pattern in patterns:
            for path in sorted(d.glob(pattern)):
                path.write_text(h.with_raw(edit(json.loads(path.read_text())), "@RAW@", raw))
    return mutate


def _ckpt_edit(edit: Callable[[dict[str, Any]], None], pattern: str = "checkpoints/*.ckpt") -> Mutator:
    def mutate(d: Path, root: Path) -> None:
        import torch

        for path in sorted(d.glob(pattern)):
            ckpt = torch.load(path, weights_only=True)
            edit(ckpt)
            torch.save(ckpt, path)
    return mutate


def _callback_field(field: str, value: Callable[[], Any]) -> Callable[[dict[str, Any]], None]:
    def edit(ckpt: dict[str, Any]) -> None:
        for key, state in ckpt["callbacks"].items():
            if key.startswith("ModelCheckpoint"):
                state[field] = value()
    return edit


def _huge_callback_key(ckpt: dict[str, Any]) -> None:
    ckpt["callbacks"] = {("ModelCheckpoint{'monitor': 'val_loss', 'x': '" + "y" * (4 << 20) + "'}"
                          if k.startswith("ModelCheckpoint") else k): v for k, v in ckpt["callbacks"].items()}


def _csv_epoch(raw: str) -> Mutator:
    def mutate(d: Path, root: Path) -> None:
        lines = _csv_lines(d)
        header = lines[0].split(",")
        cells = lines[2].split(",")
        cells[header.index("epoch")] = raw
        lines[2] = ",".join(cells)
        _write_csv(d, lines)
    return mutate


def _safetensors_header_len(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 1 << 62) + data[8:])


def _shards_out(d: Path, root: Path) -> None:
    """Sharded weights whose shards are symlinks to sentinel copies of the real file."""
    for path in _weight_files(d):
        shard = "model-00001-of-00001.safetensors"
        h.link_out(path.with_name(shard), root, f"{d.name}-{path.parent.name}-{shard}", copy_from=path)
        keys = list(json.loads(path.read_bytes()[8:8 + struct.unpack("<Q", path.read_bytes()[:8])[0]]))
        index = {"metadata": {}, "weight_map": {k: shard for k in keys if k != "__metadata__"}}
        path.with_name("model.safetensors.index.json").write_text(json.dumps(index))
        path.unlink()


def _checkpoint_dirs_out(d: Path, root: Path) -> None:
    for folder in sorted(d.glob("checkpoint-*")):
        h.link_out(folder, root, f"{d.name}-{folder.name}")


def _sqlite_step(raw: str) -> Mutator:
    def mutate(d: Path, root: Path) -> None:
        con = sqlite3.connect(d / "mlflow.db")
        con.execute("UPDATE metrics SET step = ? WHERE rowid = (SELECT MIN(rowid) FROM metrics)", (raw,))
        con.commit()
        con.close()
    return mutate


def _metric_line(raw_step: str) -> Mutator:
    def mutate(d: Path, root: Path) -> None:
        with open(d / "metrics" / "val_loss", "a") as fh:
            fh.write(f"1700000000000 0.5 {raw_step}\n")
    return mutate


def _record_length(d: Path) -> None:
    """A record that claims 2**60 bytes, with a valid length checksum: only the size check stops it."""
    from pytest_mlgates.formats.tensorboard import _masked_crc

    header = struct.pack("<Q", 1 << 60)
    with open(_tb_file(d), "ab") as fh:
        fh.write(header + struct.pack("<I", _masked_crc(header)) + b"\0" * 64)


def _jsonl_log(extra: str) -> Mutator:
    """The plain log (logs/metrics.csv, read as JSON lines when it starts with '{') with one
    hostile line appended."""
    def mutate(d: Path, root: Path) -> None:
        rows = (d / "logs" / "metrics.jsonl").read_text()
        (d / "logs" / "metrics.csv").write_text(rows + extra + "\n")
    return mutate


def _plain_ckpts(edit: Callable[[dict[str, Any]], None]) -> Mutator:
    return _ckpt_edit(edit, "ckpt/*.pt")


def _set(**fields: Callable[[], Any]) -> Callable[[dict[str, Any]], None]:
    return lambda ckpt: ckpt.update({k: v() for k, v in fields.items()})


_DEVZERO = lambda p: h.link_to(p, "/dev/zero")
_PASSWD = lambda p: h.link_to(p, "/etc/passwd")

# name -> (source trainer, mutator(run_dir, corpus_root), the path fragment a failure must name)
HOSTILE: dict[str, tuple[str, Mutator, str | None]] = {
    "l_healthy": ("lightning", lambda d, root: None, None),
    "l_h_fifo_metrics": ("lightning", _every(h.make_fifo, "metrics.csv"), "metrics.csv"),
    "l_h_socket_metrics": ("lightning", _every(h.make_socket, "metrics.csv"), "metrics.csv"),
    "l_h_metrics_out": ("lightning", _out("metrics.csv"), "metrics.csv"),
    "l_h_fifo_hparams": ("lightning", _every(h.make_fifo, "hparams.yaml"), "hparams.yaml"),
    "l_h_hparams_out": ("lightning", _out("hparams.yaml"), "hparams.yaml"),
    "l_h_hparams_yaml_bomb": ("lightning", _text("hparams.yaml", h.yaml_bomb()), "hparams.yaml"),
    "l_h_hparams_huge_int": ("lightning", _text("hparams.yaml", f"lr: {h.HUGE_DIGITS}\n"), "hparams.yaml"),
    "l_h_fifo_ckpts": ("lightning", _every(h.make_fifo, "checkpoints/*.ckpt"), "checkpoints/"),
    "l_h_ckpts_out": ("lightning", _out("checkpoints/*.ckpt"), "checkpoints/"),
    "l_h_ckpts_devzero": ("lightning", _every(_DEVZERO, "checkpoints/*.ckpt"), "checkpoints/"),
    "l_h_monitor_list_bomb": ("lightning", _ckpt_edit(_callback_field("monitor", h.list_bomb)), "checkpoints/"),
    "l_h_score_big_tensor": ("lightning", _ckpt_edit(_callback_field(
        "best_model_score", lambda: __import__("torch").zeros(1000))), "checkpoints/"),
    "l_h_huge_global_step": ("lightning", _ckpt_edit(_set(global_step=lambda: 10**5000, epoch=lambda: -(10**5000))),
                             None),
    "l_h_huge_callback_key": ("lightning", _ckpt_edit(_huge_callback_key), None),
    "l_h_csv_huge_epoch": ("lightning", _csv_epoch(h.HUGE_DIGITS), "metrics.csv"),
    "hf_healthy": ("huggingface", lambda d, root: None, None),
    "hf_h_weights_out": ("huggingface", _out("model.safetensors", "checkpoint-*/model.safetensors"),
                         "model.safetensors"),
    "hf_h_shards_out": ("huggingface", _shards_out, "model-00001-of-00001.safetensors"),
    "hf_h_ckpt_state_passwd": ("huggingface", _every(_PASSWD, "checkpoint-*/trainer_state.json"),
                               "trainer_state.json"),
    "hf_h_ckpt_state_out": ("huggingface", _out("checkpoint-*/trainer_state.json"), "trainer_state.json"),
    "hf_h_state_out": ("huggingface", _out("trainer_state.json"), "trainer_state.json"),
    "hf_h_fifo_state": ("huggingface", _every(h.make_fifo, "trainer_state.json"), "trainer_state.json"),
    "hf_h_fifo_ckpt_state": ("huggingface", _every(h.make_fifo, "checkpoint-*/trainer_state.json"),
                             "trainer_state.json"),
    "hf_h_fifo_weights": ("huggingface", _every(h.make_fifo, "model.safetensors", "checkpoint-*/model.safetensors"),
                          "model.safetensors"),
    "hf_h_fifo_config": ("huggingface", _every(h.make_fifo, "config.json"), "config.json"),
    "hf_h_config_out": ("huggingface", lambda d, root: ((d / "config.json").write_text(
        json.dumps({"id2label": {"0": "zero", "1": "one"}})), _out("config.json")(d, root)), "config.json"),
    "hf_h_checkpoint_dirs_out": ("huggingface", _checkpoint_dirs_out, "checkpoint-"),
    "hf_h_state_huge_int": ("huggingface", _json_raw(("trainer_state.json", "checkpoint-*/trainer_state.json"),
                                                     lambda s: {**s, "best_global_step": "@RAW@"}, h.HUGE_DIGITS),
                            "trainer_state.json"),
    "hf_h_state_big_int_epoch": ("huggingface", _json_raw(("trainer_state.json", "checkpoint-*/trainer_state.json"),
                                                          lambda s: {**s, "epoch": "@RAW@", "log_history": [
                                                              {**s["log_history"][0], "epoch": "@RAW@"},
                                                              *s["log_history"][1:]]}, h.BIG_INT_DIGITS),
                                 "trainer_state.json"),
    "hf_h_state_deep": ("huggingface", _json_raw(("trainer_state.json", "checkpoint-*/trainer_state.json"),
                                                 lambda s: {**s, "best_metric": "@RAW@"}, h.json_deep()),
                        "trainer_state.json"),
    "hf_h_safetensors_header_2e62": ("huggingface", _every(_safetensors_header_len, "model.safetensors",
                                                           "checkpoint-*/model.safetensors"), "model.safetensors"),
    "hf_h_best_is_etc_passwd": ("huggingface", _json_raw(("trainer_state.json",), lambda s: {
        **s, "best_model_checkpoint": "/etc/passwd"}, '"/etc/passwd"'), "trainer_state.json|passwd"),
    "m_sqlite_healthy": ("mlflow-sqlite", lambda d, root: None, None),
    "m_h_db_out": ("mlflow-sqlite", _out("mlflow.db"), "mlflow.db"),
    "m_h_db_fifo": ("mlflow-sqlite", _every(h.make_fifo, "mlflow.db"), "mlflow.db"),
    "m_h_db_devzero": ("mlflow-sqlite", _every(_DEVZERO, "mlflow.db"), "mlflow.db"),
    "m_h_journal_fifo": ("mlflow-sqlite", _every(h.make_fifo, "mlflow.db-journal"), "mlflow.db-journal"),
    "m_h_wal_out": ("mlflow-sqlite", lambda d, root: ((d / "mlflow.db-wal").write_bytes(b""),
                                                      _out("mlflow.db-wal")(d, root)), "mlflow.db-wal"),
    "m_h_db_huge_step": ("mlflow-sqlite", _sqlite_step(h.HUGE_DIGITS), "mlflow.db"),
    "m_h_db_int65_step": ("mlflow-sqlite", _sqlite_step(str(2**64)), "mlflow.db"),
    "m_file_healthy": ("mlflow-file", lambda d, root: None, None),
    "m_h_meta_out": ("mlflow-file", _out("meta.yaml"), "meta.yaml"),
    "m_h_meta_fifo": ("mlflow-file", _every(h.make_fifo, "meta.yaml"), "meta.yaml"),
    "m_h_meta_yaml_bomb": ("mlflow-file", lambda d, root: (d / "meta.yaml").write_text(
        (d / "meta.yaml").read_text() + h.yaml_bomb()), "meta.yaml"),
    "m_h_meta_huge_int": ("mlflow-file", lambda d, root: (d / "meta.yaml").write_text(
        (d / "meta.yaml").read_text() + f"start_time: {h.HUGE_DIGITS}\n"), "meta.yaml"),
    "m_h_metric_fifo": ("mlflow-file", _every(h.make_fifo, "metrics/val_loss"), "metrics/val_loss"),
    "m_h_metric_out": ("mlflow-file", _out("metrics/val_loss"), "metrics/val_loss"),
    "m_h_metrics_dir_out": ("mlflow-file", _out("metrics"), "metrics"),
    "m_h_param_out": ("mlflow-file", _out("params/lr"), "params/lr"),
    "m_h_metric_huge_step": ("mlflow-file", _metric_line(h.HUGE_DIGITS), "metrics/val_loss"),
    "m_h_metric_int65_step": ("mlflow-file", _metric_line(str(2**64)), "metrics/val_loss"),
    "m_h_artifacts_out": ("mlflow-file", _out("artifacts"), "meta.yaml|artifacts"),
    "tb_healthy": ("tensorboard", lambda d, root: None, None),
    "tb_h_events_out": ("tensorboard", _out("events.out.tfevents.*"), "events.out.tfevents"),
    "tb_h_events_fifo": ("tensorboard", _every(h.make_fifo, "events.out.tfevents.zz-fifo"), "events.out.tfevents"),
    "tb_h_events_socket": ("tensorboard", _every(h.make_socket, "events.out.tfevents.zz-sock"), "events.out.tfevents"),
    "tb_h_events_devzero": ("tensorboard", _every(_DEVZERO, "events.out.tfevents.zz-zero"), "events.out.tfevents"),
    "tb_h_record_2e60": ("tensorboard", _d(_record_length), "events.out.tfevents"),
    "tb_h_ckpts_out": ("tensorboard", _out("checkpoints/*.pt"), "checkpoints/"),
    "tb_h_fifo_ckpts": ("tensorboard", _every(h.make_fifo, "checkpoints/*.pt"), "checkpoints/"),
    "tb_h_escape_in_name": ("tensorboard", lambda d, root: (d / "checkpoints" / "best_val\x1b[2J.pt").write_bytes(
        (d / "checkpoints" / "best_val_loss.pt").read_bytes()), None),
    "p_healthy": ("plain", lambda d, root: None, None),
    "p_h_log_fifo": ("plain", _every(h.make_fifo, "logs/metrics.csv"), "metrics.csv"),
    "p_h_log_out": ("plain", _out("logs/metrics.csv"), "metrics.csv"),
    "p_h_log_devzero": ("plain", _every(_DEVZERO, "logs/metrics.csv"), "metrics.csv"),
    "p_h_jsonl_huge_int": ("plain", _jsonl_log('{"epoch": 9, "val_loss": ' + h.HUGE_DIGITS + "}"), "metrics.csv"),
    "p_h_jsonl_deep": ("plain", _jsonl_log('{"epoch": 9, "val_loss": ' + h.json_deep() + "}"), "metrics.csv"),
    "p_h_best_fifo": ("plain", _every(h.make_fifo, "ckpt/best_*.pt"), "ckpt/"),
    "p_h_best_out": ("plain", _out("ckpt/best_*.pt"), "ckpt/"),
    "p_h_last_fifo": ("plain", _every(h.make_fifo, "ckpt/last.pt"), "ckpt/"),
    "p_h_newest_ckpt_out": ("plain", lambda d, root: h.link_out(d / "ckpt" / "zz_newest.pt", root,
                                                                f"{d.name}-zz_newest.pt", d / "ckpt" / "last.pt"),
                            "ckpt/"),
    "p_h_splits_fifo": ("plain", _every(h.make_fifo, "splits.json"), "splits.json"),
    "p_h_splits_out": ("plain", _out("splits.json"), "splits.json"),
    "p_h_splits_huge_int": ("plain", _json_raw(("splits.json",), lambda s: {**s, "val": ["@RAW@", *s["val"]]},
                                               h.HUGE_DIGITS), "splits.json"),
    "p_h_ckpt_list_bomb": ("plain", _plain_ckpts(_set(monitor=h.list_bomb)), "ckpt/"),
    "p_h_ckpt_long_monitor": ("plain", _plain_ckpts(_set(monitor=lambda: "m" * (8 << 20))), "ckpt/"),
}

#: hostile entry -> the healthy entry of the same trainer
HOSTILE_HEALTHY_OF = {name: next(h for h, (t, _, _) in HOSTILE.items() if h.endswith("_healthy") and t == trainer)
                      for name, (trainer, _, _) in HOSTILE.items()}
#: the sources the hostile entries copy: the broken corpus's, and a plain loop's
HOSTILE_SOURCES = (*SOURCES, "plain")


def build_foreign_corpus(outdir: Path | str, sources: dict[str, Path],
                         names: list[str] | None = None,
                         table: dict[str, tuple[str, Mutator, str | None]] | None = None) -> dict[str, Entry]:
    """Write every (or the named) entry of ``table`` (default :data:`BREAKAGES`; :data:`HOSTILE`
    for the hostile ones) under ``outdir`` from the healthy ``sources`` (trainer -> run dir
    as the trainer fixture returns it); return {name: Entry}."""
    table = BREAKAGES if table is None else table
    root = Path(outdir)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Entry] = {}
    for name in names or list(table):
        trainer, mutate, involved = table[name]
        d = root / name
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(sources[trainer], d, symlinks=True, ignore=shutil.ignore_patterns("*.lock"))
        mutate(d, root)
        out[name] = Entry(d, involved)
    return out


def train_sources(outdir: Path, trainers: tuple[str, ...] = SOURCES) -> dict[str, Path]:
    """Healthy runs of every trainer, as tests/conftest.py's ``trainer_run`` trains them."""
    from conftest import TRAINER_EPOCHS, TRAINER_SCRIPTS, TRAINER_SCRIPTS_DIR, trainer_env

    out: dict[str, Path] = {}
    for trainer in trainers:
        script, extra, _ = TRAINER_SCRIPTS[trainer]
        target = outdir / trainer
        shutil.rmtree(target, ignore_errors=True)
        proc = subprocess.run([sys.executable, str(TRAINER_SCRIPTS_DIR / script), str(target), "--fault", "healthy",
                               "--epochs", str(TRAINER_EPOCHS), *extra], capture_output=True, text=True,
                              timeout=600, env=trainer_env(), cwd=outdir, check=True)
        out[trainer] = Path(proc.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str]) -> int:
    hostile = bool(argv) and argv[0] == "--hostile"
    argv = argv[1:] if hostile else argv
    table: dict[str, tuple[str, Mutator, str | None]] = HOSTILE if hostile else BREAKAGES
    if not argv or any(n not in table for n in argv[1:]):
        print(f"usage: python tests/broken_foreign.py [--hostile] OUTDIR [ENTRY...] (entries: {', '.join(table)})",
              file=sys.stderr)
        return 2
    root = Path(argv[0]).resolve()
    root.mkdir(parents=True, exist_ok=True)
    names = argv[1:] or list(table)
    sources = train_sources(root / "_sources", tuple(dict.fromkeys(table[n][0] for n in names)))
    for name, entry in build_foreign_corpus(root, sources, names, table).items():
        print(f"{name:28} {entry.path}  (names {entry.involved or '-'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
