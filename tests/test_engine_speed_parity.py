"""The engine's per-epoch fast paths (bench/engine_overhead.py) change no byte of meaning.

* ``atomic_write_bytes`` no longer goes through ``tempfile.mkstemp``: the temp file must
  still be ``.<name>.<...>.tmp`` in the same directory, private (0600), and gone after a
  failed write.
* An epoch's files are written as one batch (every temp file written and fsync'd, then
  renamed in order): a failure anywhere leaves every target as it was, and a kill between
  two renames can only have renamed a prefix of the list.
* A checkpoint dict is ``torch.save``'d straight into its temp file, once for all the
  paths it goes to, and a write that does not fit is the ``OSError`` naming the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.checkpoint import atomic_write_bytes, write_files_atomically


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


def test_a_batch_renames_in_order_only_after_every_file_is_on_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "checkpoints").mkdir()
    targets = [tmp_path / "checkpoints" / "best_val_loss.pt", tmp_path / "checkpoints" / "last.pt",
               tmp_path / "training_log.csv"]
    events: list[str] = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src: Any, dst: Any) -> None:
        events.append(f"rename {os.path.basename(os.fspath(dst))}")
        real_replace(src, dst)

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    same = b"checkpoint bytes" * 1000
    write_files_atomically([(targets[0], same), (targets[1], same), (targets[2], b"epoch\n1\n")])
    renames = [e for e in events if e.startswith("rename")]
    assert renames == ["rename best_val_loss.pt", "rename last.pt", "rename training_log.csv"]
    first_rename = events.index(renames[0])
    # each file fsync'd before any rename: the checkpoint once (best and last are one file,
    # two names), the log once
    assert events[:first_rename].count("fsync") == 2
    assert targets[0].read_bytes() == targets[1].read_bytes() == same
    assert os.stat(targets[0]).st_ino == os.stat(targets[1]).st_ino
    assert not list(tmp_path.rglob(".*.tmp"))

    # the next epoch replaces last.pt only: the best file keeps its bytes
    write_files_atomically([(targets[1], b"next epoch"), (targets[2], b"epoch\n2\n")])
    assert targets[0].read_bytes() == same and targets[1].read_bytes() == b"next epoch"
    assert os.stat(targets[0]).st_nlink == 1


def test_same_bytes_are_copied_where_hard_links_fail(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: Any, dst: Any) -> None:
        raise OSError(1, "Operation not permitted")  # as on a FAT or some network mounts

    monkeypatch.setattr(os, "link", no_links)
    same = b"checkpoint" * 100
    first, second = tmp_path / "best_val_loss.pt", tmp_path / "last.pt"
    write_files_atomically([(first, same), (second, same)])
    assert first.read_bytes() == second.read_bytes() == same
    assert os.stat(first).st_ino != os.stat(second).st_ino
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_batch_changes_no_target_and_names_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "last.pt", tmp_path / "training_log.csv"
    write_files_atomically([(first, b"old checkpoint"), (second, b"old log")])
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second file of the batch: the disk is full
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as info:
        write_files_atomically([(first, b"new checkpoint"), (second, b"new log")])
    assert info.value.errno == 28 and info.value.filename == str(second)
    assert first.read_bytes() == b"old checkpoint"  # not renamed: the batch failed first
    assert second.read_bytes() == b"old log"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_checkpoint_dict_is_torch_saved_once_and_linked(tmp_path: Path) -> None:
    """A dict is written with torch.save straight into the temp file; the same dict for
    several paths is one file with several names; it loads with weights_only=True."""
    import torch

    ckpt = {"model": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 3}
    best, last = tmp_path / "best_val_loss.pt", tmp_path / "last.pt"
    write_files_atomically([(best, ckpt), (last, ckpt), (tmp_path / "log.csv", b"epoch\n")])
    assert os.stat(best).st_ino == os.stat(last).st_ino
    loaded = torch.load(last, weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], ckpt["model"]["w"])
    assert (tmp_path / "log.csv").read_bytes() == b"epoch\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_checkpoint_that_does_not_fit_raises_the_os_error_naming_the_file(
        tmp_path: Path) -> None:
    """torch.save reports a failed write as a RuntimeError ("unexpected pos"); the engine
    raises the OSError underneath (here EFBIG, as under ``ulimit -f``; a full disk gives
    ENOSPC the same way), naming the target, and the old file stays."""
    import errno
    import resource
    import signal

    import torch

    target = tmp_path / "last.pt"
    target.write_bytes(b"previous epoch")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(OSError) as info:
            write_files_atomically([(target, {"w": torch.zeros(100_000)})])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert info.value.errno == errno.EFBIG and info.value.filename == str(target)
    assert target.read_bytes() == b"previous epoch"
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


# --------------------------------------------------------------------------- history

_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-2**53, 2**53))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 6).flatmap(lambda n_cols: st.lists(
    st.lists(_values, min_size=n_cols, max_size=n_cols), min_size=0, max_size=8)))
def test_packed_history_round_trips_exactly_through_a_checkpoint(table: list[list[Any]]) -> None:
    """A checkpoint holds the log rows as one float64 tensor; a resume must get back the
    very same rows (ints as ints, every float bit for bit, NaN and inf included)."""
    import io

    import torch

    from model.checkpoint import pack_history, unpack_history

    columns = ["epoch", "train_loss", "val_loss", "lr", "val_recall_3", "x"][:len(table[0]) if table else 0]
    rows = [dict(zip(columns, values)) for values in table]
    buffer = io.BytesIO()
    torch.save({"history": pack_history(rows)}, buffer)
    buffer.seek(0)
    back = unpack_history(torch.load(buffer, weights_only=True)["history"])
    assert [list(r) for r in back] == [list(r) for r in rows]  # same keys, same order
    for got, want in zip(back, rows):
        for key in want:
            assert type(got[key]) is type(want[key]), key
            assert repr(got[key]) == repr(want[key]), key  # exact, NaN included


def test_rows_that_are_not_all_numbers_stay_rows() -> None:
    from model.checkpoint import pack_history, unpack_history

    for rows in ([{"epoch": 1, "note": None}], [{"epoch": 1, "ok": True}],
                 [{"epoch": 1, "a": 0.5}, {"epoch": 2}]):
        packed = pack_history(rows)
        assert packed == rows and packed is not rows
        assert unpack_history(packed) == rows


def test_a_checkpoints_history_costs_the_same_at_any_epoch() -> None:
    """torch.save calls a Python hook for every pickled object: rows of dicts made each
    save O(epochs) (1.3 ms at 12 epochs, 4.3 ms at 300); the packed history does not grow."""
    import pickle

    from model.checkpoint import pack_history

    row = {c: 0.25 for c in ["epoch", "train_loss", "val_loss", "lr", *[f"r{i}" for i in range(18)]]}
    row["epoch"] = 1

    def pickled_objects(n_epochs: int) -> int:
        count = 0

        class Counter(pickle.Pickler):
            def persistent_id(self, obj: Any) -> None:
                nonlocal count
                count += 1

        import io
        packed = pack_history([dict(row, epoch=e) for e in range(1, n_epochs + 1)])
        assert tuple(packed["rows"].shape) == (n_epochs, len(row))
        packed["rows"] = "tensor"  # one object (one storage), whatever its size
        Counter(io.BytesIO()).dump(packed)
        return count

    assert pickled_objects(300) == pickled_objects(12)
