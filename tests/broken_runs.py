"""A corpus of broken run dirs, generated from one healthy synthetic run.

Run dirs come from strangers (a download, a pull request's artifacts), so every gate must
survive every way a run dir can be wrong. Nothing here is a hand-edited binary: each entry
is a copy of a healthy run made by :func:`gate_helpers.make_run` (real engine-format files,
real torch checkpoints) with one thing broken by code, so the corpus can be rebuilt and
read::

    python tests/broken_runs.py /tmp/corpus      # writes /tmp/corpus/<entry>/ and prints them
    python tests/broken_runs.py /tmp/corpus ragged_rows dir_for_log     # just those

    from broken_runs import build_corpus
    entries = build_corpus(tmp_path)             # {name: Entry(path, involved)}

``Entry.involved`` is the part of a path that a failure caused by the breakage must name
(``"training_log.csv"``, ``"checkpoints/"``...), or ``None`` when the breakage leaves every
file well-formed (logged NaN is data, not a broken file). The two 2 GB files are sparse
(``os.truncate``): they cost no disk.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # runnable as a script from anywhere
    sys.path.insert(0, str(HERE))

import hostile_inputs as h  # isort: skip

TWO_GB = 2 * 1024**3
CHECKPOINTS = ("best_val_loss.pt", "best_val_macro_f1.pt", "final.pt", "last.pt")
CHECKPOINT_PATHS = tuple(f"checkpoints/{n}" for n in CHECKPOINTS)
JSON_FILES = ("training_results.json", "metric_history.json", "provenance.json", "splits.json")

#: The file a checkpoint that would run code tries to create; it must never exist.
MARKER_NAME = "PWNED-marker"


@dataclass(frozen=True)
class Entry:
    path: Path
    involved: str | None  # fragments separated by "|"; a failure must name one


# --------------------------------------------------------------------------- small edits


def _lines(d: Path) -> list[str]:
    return (d / "training_log.csv").read_text().splitlines()


def _write_lines(d: Path, lines: list[str]) -> None:
    (d / "training_log.csv").write_text("\n".join(lines) + "\n")


def _truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) // 2)])


def _dir_instead(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_text("a directory where a file should be\n")


def _sparse(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.touch()
    os.truncate(path, TWO_GB)


def _symlink_out(path: Path, outside: Path) -> None:
    outside.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        shutil.copyfile(path, outside)
    path.unlink()
    path.symlink_to(outside)


def _symlink_checkpoints_out(d: Path, root: Path) -> None:
    for name in CHECKPOINTS:
        _symlink_out(d / "checkpoints" / name, root / "_outside" / name)


def _ragged(d: Path) -> None:
    lines = _lines(d)
    lines[2] = lines[2].rsplit(",", 3)[0]  # epoch 2 loses three cells
    _write_lines(d, lines)


def _non_numeric(d: Path) -> None:
    lines = _lines(d)
    cells = lines[3].split(",")
    cells[2] = "0.4five"
    lines[3] = ",".join(cells)
    _write_lines(d, lines)


def _duplicate_epochs(d: Path) -> None:
    lines = _lines(d)
    _write_lines(d, lines[:4] + [lines[3]] + lines[4:])


def _missing_epochs(d: Path) -> None:
    lines = _lines(d)
    _write_lines(d, [lines[0], lines[1], lines[3], lines[5]])  # epochs 1, 3, 5


def _nan_inf(d: Path) -> None:
    lines = _lines(d)
    for k, word in ((2, "nan"), (3, "inf"), (4, "-inf"), (5, "NaN")):
        cells = lines[k].split(",")
        cells[1:4] = [word] * 3
        lines[k] = ",".join(cells)
    _write_lines(d, lines)


def _nul_bytes(d: Path) -> None:
    (d / "training_log.csv").write_bytes(b"epoch,val_loss\n1,0.5\x00\x00\n2\x00,0.4\n")


def _binary(path: Path, n: int = 4096, seed: int = 7) -> None:
    path.write_bytes(random.Random(seed).randbytes(n))


def _wrong_shape_checkpoint(d: Path) -> None:
    import torch

    for name in CHECKPOINTS:
        path = d / "checkpoints" / name
        ckpt = torch.load(path, weights_only=True)
        key = next(k for k, v in ckpt["model"].items() if getattr(v, "ndim", 0) == 2)
        rows, cols = ckpt["model"][key].shape
        ckpt["model"][key] = torch.zeros(rows + 3, cols + 5)
        torch.save(ckpt, path)


def _checkpoint_not_a_dict(d: Path) -> None:
    import torch

    for name in CHECKPOINTS:
        torch.save([torch.zeros(3), "not a checkpoint"], d / "checkpoints" / name)


class _RunsCode:
    """Pickles as a call to ``os.system``: what a hostile checkpoint looks like."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _code_checkpoint(d: Path) -> None:
    import torch

    marker = d.parent / MARKER_NAME
    for name in CHECKPOINTS:
        torch.save({"format": "model-checkpoint/1", "model": _RunsCode(marker)}, d / "checkpoints" / name)


def _empty_dir(d: Path) -> None:
    shutil.rmtree(d)
    d.mkdir()


def _json_wrong_types(d: Path) -> None:
    (d / "training_results.json").write_text(json.dumps(
        {"status": 3, "monitor": "val_loss", "best": [1, 2], "final": None, "class_names": {"a": 1}}))
    (d / "splits.json").write_text(json.dumps({"train": "all", "val": [1.5, None, "x"], "test": {"a": 1},
                                               "groups": 7}))
    (d / "provenance.json").write_text(json.dumps({"config_sha256": 5, "argv": "x", "git": "dirty"}))
    (d / "metric_history.json").write_text(json.dumps({"columns": [1, None], "rows": [[1, 2], "x"]}))


def _empty_files(d: Path) -> None:
    for name in (*JSON_FILES, "config.yaml", "training_log.csv"):
        (d / name).write_bytes(b"")


def _each(action: Callable[[Path], object], *rels: str) -> Callable[[Path, Path], None]:
    """A mutator that applies ``action`` to each of ``rels`` inside the run dir."""
    def mutate(d: Path, root: Path) -> None:
        for rel in rels:
            action(d / rel)
    return mutate


def _truncating(name: str) -> Callable[[Path, Path], object]:
    return lambda d, root: _truncate_half(d / name)


# Every breakage: (mutator(run_dir, corpus_root), the path fragment a failure must name).
BREAKAGES: dict[str, tuple[Callable[[Path, Path], object], str | None]] = {
    "healthy": (lambda d, root: None, None),
    "empty_dir": (lambda d, root: _empty_dir(d), "empty_dir"),
    "missing_log": (_each(Path.unlink, "training_log.csv", "metric_history.json"), "training_log.csv"),
    "empty_csv": (lambda d, root: (d / "training_log.csv").write_text(""), "training_log.csv"),
    "header_only_csv": (lambda d, root: _write_lines(d, _lines(d)[:1]), "training_log.csv"),
    "ragged_rows": (lambda d, root: _ragged(d), "training_log.csv"),
    "non_numeric_cells": (lambda d, root: _non_numeric(d), "training_log.csv"),
    "duplicate_epochs": (lambda d, root: _duplicate_epochs(d), "training_log.csv"),
    "missing_epochs": (lambda d, root: _missing_epochs(d), "training_log.csv"),
    "nan_inf_strings": (lambda d, root: _nan_inf(d), None),
    "nul_bytes_csv": (lambda d, root: _nul_bytes(d), "training_log.csv"),
    "binary_csv": (lambda d, root: _binary(d / "training_log.csv"), "training_log.csv"),
    **{f"truncated_{name.removesuffix('.json')}": (_truncating(name), name) for name in JSON_FILES},
    "json_wrong_types": (lambda d, root: _json_wrong_types(d), ".json"),
    "empty_files": (lambda d, root: _empty_files(d), "training_log.csv|.json|config.yaml"),
    "truncated_checkpoint": (_each(_truncate_half, *CHECKPOINT_PATHS), "checkpoints/"),
    "wrong_shape_checkpoint": (lambda d, root: _wrong_shape_checkpoint(d), "checkpoints/"),
    "checkpoint_not_a_dict": (lambda d, root: _checkpoint_not_a_dict(d), "checkpoints/"),
    "checkpoint_runs_code": (lambda d, root: _code_checkpoint(d), "checkpoints/"),
    "png_not_png": (_each(lambda p: p.write_text("not a png\n"), "plots/loss_curve.png", "plots/recall_curve.png"),
                    "plots/"),
    "sparse_2gb_log": (lambda d, root: _sparse(d / "training_log.csv"), "training_log.csv"),
    # one, not all four: the session's archive fingerprints (reads) every file of the run dir
    "sparse_2gb_checkpoint": (_each(_sparse, "checkpoints/final.pt"), "checkpoints/"),
    "dir_for_log": (lambda d, root: _dir_instead(d / "training_log.csv"), "training_log.csv"),
    "dir_for_checkpoint": (_each(_dir_instead, *CHECKPOINT_PATHS), "checkpoints/"),
    "dir_for_config": (lambda d, root: _dir_instead(d / "config.yaml"), "config.yaml"),
    "symlink_log_outside": (lambda d, root: _symlink_out(d / "training_log.csv", root / "_outside" / "log.csv"),
                            "training_log.csv"),
    "symlink_checkpoint_outside": (_symlink_checkpoints_out, "checkpoints/"),
    "binary_config": (lambda d, root: _binary(d / "config.yaml"), "config.yaml"),
    "config_python_tag": (lambda d, root: (d / "config.yaml").write_text(
        f"!!python/object/apply:os.system ['touch {d.parent / MARKER_NAME}']\n"), "config.yaml"),
    "config_a_list": (lambda d, root: (d / "config.yaml").write_text("- a\n- b\n"), "config.yaml"),
}


# --------------------------------------------------------------------------- hostile entries
# Not broken by accident but built to hurt a reader: special files, links out of the run,
# inputs that are small on disk and huge once walked (tests/test_hostile_corpus.py runs them
# under an address-space limit, with strace and an outside sentinel; tests/hostile_inputs.py
# has the building blocks).


def _every(action: Callable[[Path], object], *rels: str) -> Callable[[Path, Path], None]:
    return _each(action, *rels)


def _out(rel: str, name: str | None = None) -> Callable[[Path, Path], None]:
    """``rel`` becomes a symlink to a sentinel copy of itself in ``<root>/_outside/``."""
    return lambda d, root: h.link_out(d / rel, root, name or f"{d.name}-{Path(rel).name}")


def _text(rel: str, text: str) -> Callable[[Path, Path], None]:
    return lambda d, root: (d / rel).write_text(text)


def _json_edit(rel: str, edit: Callable[[object], object], raw: str | None = None) -> Callable[[Path, Path], None]:
    """Rewrite JSON file ``rel`` with ``edit(data)``; the string "@RAW@" in it becomes ``raw``."""
    def mutate(d: Path, root: Path) -> None:
        data = edit(json.loads((d / rel).read_text()))
        (d / rel).write_text(h.with_raw(data, "@RAW@", raw) if raw is not None else json.dumps(data))
    return mutate


def _csv_cell(column: str, row: int, raw: str) -> Callable[[Path, Path], None]:
    def mutate(d: Path, root: Path) -> None:
        lines = _lines(d)
        header = lines[0].split(",")
        cells = lines[row].split(",")
        cells[header.index(column)] = raw
        lines[row] = ",".join(cells)
        _write_lines(d, lines)
    return mutate


def _many_columns(d: Path, n: int = 50_000) -> None:
    lines = _lines(d)
    extra = [f"junk_{i}" for i in range(n)]
    _write_lines(d, [lines[0] + "," + ",".join(extra)] + [line + "," + ",".join(["0.5"] * n) for line in lines[1:]])


def _checkpoints_with(**fields: object) -> Callable[[Path, Path], None]:
    """Every checkpoint keeps its weights and gains (or replaces) ``fields``."""
    def mutate(d: Path, root: Path) -> None:
        import torch

        for name in CHECKPOINTS:
            path = d / "checkpoints" / name
            ckpt = torch.load(path, weights_only=True)
            ckpt.update({k: (v() if callable(v) else v) for k, v in fields.items()})
            h.save_deep(ckpt, path)
    return mutate


def _tuple_key_checkpoints(d: Path, root: Path) -> None:
    import torch

    key = h.tuple_bomb()
    for name in CHECKPOINTS:
        path = d / "checkpoints" / name
        ckpt = torch.load(path, weights_only=True)
        ckpt["model"][key] = torch.zeros(1)  # type: ignore[index]
        torch.save(ckpt, path)


def _monitor_names(long_name: str) -> Callable[[], dict[str, object]]:
    return lambda: {long_name: {"mode": "min", "value": 0.1}}


HOSTILE: dict[str, tuple[Callable[[Path, Path], object], str | None]] = {
    "healthy": (lambda d, root: None, None),
    # special files where files should be: refused by name, never opened, never waited on
    "h_fifo_log": (_every(h.make_fifo, "training_log.csv"), "training_log.csv"),
    "h_socket_log": (_every(h.make_socket, "training_log.csv"), "training_log.csv"),
    "h_fifo_history": (_every(h.make_fifo, "metric_history.json"), "metric_history.json"),
    "h_fifo_results": (_every(h.make_fifo, "training_results.json"), "training_results.json"),
    "h_fifo_config": (_every(h.make_fifo, "config.yaml"), "config.yaml"),
    "h_fifo_splits": (_every(h.make_fifo, "splits.json"), "splits.json"),
    "h_fifo_provenance": (_every(h.make_fifo, "provenance.json"), "provenance.json"),
    "h_fifo_checkpoints": (_every(h.make_fifo, *CHECKPOINT_PATHS), "checkpoints/"),
    "h_socket_checkpoints": (_every(h.make_socket, *CHECKPOINT_PATHS), "checkpoints/"),
    "h_fifo_plots": (_every(h.make_fifo, "plots/loss_curve.png", "plots/recall_curve.png"), "plots/"),
    "h_devzero_log": (_every(lambda p: h.link_to(p, "/dev/zero"), "training_log.csv"), "training_log.csv"),
    "h_devzero_checkpoints": (_every(lambda p: h.link_to(p, "/dev/zero"), *CHECKPOINT_PATHS), "checkpoints/"),
    "h_etc_passwd_log": (_every(lambda p: h.link_to(p, "/etc/passwd"), "training_log.csv"), "training_log.csv"),
    "h_checkpoint_link_loop": (_every(lambda p: h.link_to(p, p.name), *CHECKPOINT_PATHS), "checkpoints/"),
    # links out of the run dir to a valid copy (the sentinel): refused, never followed
    "h_config_out": (_out("config.yaml"), "config.yaml"),
    "h_results_out": (_out("training_results.json"), "training_results.json"),
    "h_history_out": (_out("metric_history.json"), "metric_history.json"),
    "h_splits_out": (_out("splits.json"), "splits.json"),
    "h_provenance_out": (_out("provenance.json"), "provenance.json"),
    "h_plots_dir_out": (_out("plots"), "plots"),
    "h_checkpoints_dir_out": (_out("checkpoints"), "checkpoints"),
    # YAML that is small on disk and huge, endless or unparseable once built
    "h_yaml_bomb_config": (_text("config.yaml", h.yaml_bomb()), "config.yaml"),
    "h_yaml_recursive_config": (_text("config.yaml", h.yaml_recursive()), "config.yaml"),
    "h_yaml_deep_config": (_text("config.yaml", h.yaml_deep()), "config.yaml"),
    "h_yaml_huge_int_config": (_text("config.yaml", f"seed: {h.HUGE_DIGITS}\n"), "config.yaml"),
    "h_yaml_hex_int_config": (_text("config.yaml", f"seed: 0x{'f' * 5000}\n"), "config.yaml"),
    "h_yaml_base60_config": (_text("config.yaml", "seed: " + ":".join(["59"] * 3000) + "\n"), "config.yaml"),
    "h_yaml_bad_date_config": (_text("config.yaml", "created: 2001-13-45\n"), "config.yaml"),
    # JSON numbers of absurd size, nesting deeper than a parser recurses
    "h_json_huge_int_results": (_json_edit("training_results.json", lambda r: {**r, "epochs_completed": "@RAW@"},
                                           h.HUGE_DIGITS), "training_results.json"),
    "h_json_huge_int_history": (_json_edit("metric_history.json", lambda r: {
        **r, "rows": [{**r["rows"][0], "val_loss": "@RAW@"}, *r["rows"][1:]]}, h.HUGE_DIGITS), "metric_history.json"),
    "h_json_huge_int_splits": (_json_edit("splits.json", lambda r: {**r, "val": ["@RAW@", *r["val"]]},
                                          h.HUGE_DIGITS), "splits.json"),
    "h_json_huge_int_provenance": (_json_edit("provenance.json", lambda r: {**r, "seed": "@RAW@"}, h.HUGE_DIGITS),
                                   "provenance.json"),
    "h_json_big_int_history": (_json_edit("metric_history.json", lambda r: {
        **r, "rows": [{**r["rows"][0], "val_loss": "@RAW@"}, *r["rows"][1:]]}, h.BIG_INT_DIGITS), None),
    "h_json_deep_splits": (_text("splits.json", h.json_deep()), "splits.json"),
    "h_json_deep_results": (_text("training_results.json", '{"best": ' + h.json_deep() + "}"), "training_results.json"),
    # CSV cells of absurd size and shape
    "h_csv_huge_number": (_csv_cell("val_loss", 2, h.HUGE_DIGITS), None),  # float('9' * 5000) is inf: data
    "h_csv_huge_epoch": (_csv_cell("epoch", 2, h.HUGE_DIGITS), "training_log.csv"),
    "h_csv_many_columns": (lambda d, root: _many_columns(d), None),
    "h_csv_escape_in_header": (lambda d, root: _write_lines(d, [_lines(d)[0] + ',"\x1b[2Jx\ny"'] + [
        line + ",0.5" for line in _lines(d)[1:]]), None),
    # checkpoints small on disk, huge or poisonous once loaded or walked
    "h_ckpt_list_bomb": (_checkpoints_with(config=h.list_bomb, class_names=lambda: [h.list_bomb()]), "checkpoints/"),
    "h_ckpt_tuple_key_bomb": (_tuple_key_checkpoints, "checkpoints/"),
    "h_ckpt_deep_list": (_checkpoints_with(class_names=lambda: h.deep_list(20_000)), None),
    "h_ckpt_huge_int_epoch": (_checkpoints_with(epoch=10**5000), "checkpoints/"),
    "h_ckpt_huge_int_value": (_checkpoints_with(monitor=lambda: {"val_loss": {"mode": "min", "value": 10**5000}}),
                              "checkpoints/"),
    "h_ckpt_tensor_state": (_checkpoints_with(optimizer=lambda: __import__("torch").zeros(3),
                                              scheduler=lambda: __import__("torch").ones(2),
                                              rng=lambda: __import__("torch").ones(4)), None),
    "h_ckpt_long_monitor_name": (_checkpoints_with(monitor=_monitor_names("m" * (8 << 20))), "checkpoints/"),
    "h_ckpt_zip_bomb": (_every(h.zip_bomb_checkpoint, *CHECKPOINT_PATHS), "checkpoints/"),
    # images whose header asks for gigabytes
    "h_png_header_40000": (_every(h.png_header_only, "plots/loss_curve.png", "plots/recall_curve.png"), "plots/"),
    "h_png_30m_pixels": (_every(h.png_many_pixels, "plots/loss_curve.png"), "plots/"),
}


def build_corpus(outdir: Path | str, names: list[str] | None = None,
                 table: dict[str, tuple[Callable[[Path, Path], object], str | None]] | None = None,
                 ) -> dict[str, Entry]:
    """Write every (or the named) corpus entry of ``table`` (default: :data:`BREAKAGES`;
    :data:`HOSTILE` for the hostile ones) under ``outdir``; return {name: Entry}."""
    from gate_helpers import make_run

    table = BREAKAGES if table is None else table
    root = Path(outdir)
    root.mkdir(parents=True, exist_ok=True)
    healthy = root / "_healthy_source"
    if not healthy.exists():
        make_run(healthy)
    out: dict[str, Entry] = {}
    for name in names or list(table):
        mutate, involved = table[name]
        d = root / name
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(healthy, d, symlinks=True)
        mutate(d, root)
        out[name] = Entry(d, involved)
    return out


def main(argv: list[str]) -> int:
    hostile = bool(argv) and argv[0] == "--hostile"
    argv = argv[1:] if hostile else argv
    table = HOSTILE if hostile else BREAKAGES
    if not argv or any(n not in table for n in argv[1:]):
        print(f"usage: python tests/broken_runs.py [--hostile] OUTDIR [ENTRY...] (entries: {', '.join(table)})",
              file=sys.stderr)
        return 2
    for name, entry in build_corpus(Path(argv[0]), argv[1:] or None, table).items():
        print(f"{name:28} {entry.path}  (names {entry.involved or '-'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
