"""The engine's per-epoch fast paths (bench/engine_overhead.py) change no byte of meaning.

* ``checkpoint_variants`` pickles an epoch's checkpoint once for last.pt and every
  best_<metric>.pt: each file must open with ``weights_only=True`` as exactly the dict a
  plain ``torch.save({**ckpt, "monitor": m})`` gives, and must really take the fast path.
* ``atomic_write_bytes`` no longer goes through ``tempfile.mkstemp``: the temp file must
  still be ``.<name>.<...>.tmp`` in the same directory, private (0600), and gone after a
  failed write.
"""

from __future__ import annotations

import io
import math
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch

import model.checkpoint as checkpoint_module
from model.checkpoint import atomic_write_bytes, checkpoint_bytes, checkpoint_variants


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and a.stride() == b.stride() and torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def _checkpoint() -> dict[str, Any]:
    """A checkpoint shaped like the engine's: model, optimizer state, RNG, history, views."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 3))
    opt = torch.optim.AdamW(net.parameters(), lr=0.01)
    for _ in range(2):
        net(torch.randn(5, 1, 8, 8)).sum().backward()
        opt.step()
    weight = net.state_dict()["3.weight"]
    return {
        "format": "model-checkpoint/1",
        "model": net.state_dict(),
        "ema": None,
        "optimizer": opt.state_dict(),
        "monitor": None,
        "metrics": {"val_loss": 0.25, "val_auroc": float("nan")},
        "history": [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": float("nan")}],
        "rng": {"torch": torch.get_rng_state(), "python": [3, torch.arange(5), None]},
        "a_view": weight[1:],  # shares its storage with model["3.weight"]
        "class_names": ["a", "b", "c"],
    }


MONITORS = [{"metric": "val_loss", "mode": "min", "value": 0.25},
            {"metric": "val_macro_f1", "mode": "max", "value": 0.75},
            None]


def test_variants_load_as_the_plain_torch_save_of_each_file() -> None:
    ckpt = _checkpoint()
    blobs = checkpoint_variants(ckpt, MONITORS)
    assert len(blobs) == len(MONITORS)
    for blob, monitor in zip(blobs, MONITORS):
        got = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        want = torch.load(io.BytesIO(checkpoint_bytes({**ckpt, "monitor": monitor})),
                          map_location="cpu", weights_only=True)
        assert got["monitor"] == monitor
        assert _same(got, want), f"variant for monitor {monitor} differs from torch.save's"
        # a view still shares the loaded storage of the tensor it views, as torch.save keeps it
        assert got["a_view"].untyped_storage().data_ptr() == \
            got["model"]["3.weight"].untyped_storage().data_ptr()


def test_variants_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def plain(obj: dict[str, Any]) -> bytes:
        raise AssertionError("checkpoint_variants fell back to one torch.save per file")

    monkeypatch.setattr(checkpoint_module, "checkpoint_bytes", plain)
    blobs = checkpoint_variants(_checkpoint(), MONITORS)
    assert [torch.load(io.BytesIO(b), weights_only=True)["monitor"] for b in blobs] == MONITORS


def test_variants_fall_back_when_torch_does_not_call_the_pickler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def dump_plainly(self: Any, obj: Any) -> None:  # a torch.save that pickles obj itself
        raise checkpoint_module._SharedPickleUnsupported("simulated")

    monkeypatch.setattr(checkpoint_module._SharedPickle, "dump_into", dump_plainly)
    ckpt = _checkpoint()
    blobs = checkpoint_variants(ckpt, MONITORS[:1])
    got = torch.load(io.BytesIO(blobs[0]), weights_only=True)
    assert _same(got, torch.load(io.BytesIO(checkpoint_bytes({**ckpt, "monitor": MONITORS[0]})),
                                 weights_only=True))


def test_atomic_write_temp_file_naming_and_mode(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.pt"
    seen: list[str] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        name = os.path.basename(os.fspath(src))
        seen.append(name)
        assert os.path.dirname(os.fspath(src)) == str(tmp_path)
        assert stat.S_IMODE(os.stat(src).st_mode) == 0o600
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    atomic_write_bytes(target, b"x" * 100_000)
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert len(seen) == 2 and len(set(seen)) == 2  # a fresh temp name per write
    for name in seen:  # tests/engine_forkserver.py maps ".last.pt.<id>.tmp" back to last.pt
        assert name.startswith(".last.pt.") and name.endswith(".tmp")
        assert name[1:].rsplit(".", 2)[0] == "last.pt"
    assert not list(tmp_path.glob(".*.tmp"))


def test_failed_atomic_write_leaves_old_file_and_no_temp(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "training_log.csv"
    atomic_write_bytes(target, b"old\n")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(target, b"new\n")
    assert target.read_bytes() == b"old\n"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("n_rows", [0, 1, 3, 12])
def test_rendered_history_is_the_plain_rendering(tmp_path: Path, n_rows: int) -> None:
    """render_history renders each row once and reuses it: the bytes must be exactly what
    rendering the whole history at once gives (json_text and the CSV rules)."""
    import json
    import random

    from model.runlog import _csv_value, json_text, log_columns, render_history

    rng = random.Random(n_rows)
    columns = log_columns(["0", "1", "malignant"])
    specials = [float("nan"), float("inf"), -float("inf"), 0.1 + 0.2, 1e-300, None, True, 3]
    rows = []
    for epoch in range(1, n_rows + 1):
        row: dict[str, Any] = {c: rng.random() for c in columns}
        row["epoch"] = epoch
        row[rng.choice(columns[1:])] = rng.choice(specials)
        del row[rng.choice(columns[1:])]  # a missing column is written as nan / null
        rows.append(row)
    for _ in range(2):  # second time from the cache
        (csv_path, csv_bytes), (json_path, json_bytes) = render_history(tmp_path, columns, rows)
        assert (csv_path.name, json_path.name) == ("training_log.csv", "metric_history.json")
        want_json = json_text({"columns": columns,
                               "rows": [{c: r.get(c) for c in columns} for r in rows]})
        assert json_bytes.decode("utf-8") == want_json
        want_csv = "\n".join([",".join(columns)] + [",".join(_csv_value(r.get(c)) for c in columns)
                                                    for r in rows]) + "\n"
        assert csv_bytes.decode("utf-8") == want_csv
        assert len(json.loads(json_bytes)["rows"]) == n_rows
    if rows:  # a changed row is rendered anew
        rows[0]["train_loss"] = 12345.5
        _, (_, again) = render_history(tmp_path, columns, rows)
        assert json.loads(again)["rows"][0]["train_loss"] == 12345.5
