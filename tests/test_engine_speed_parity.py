"""The engine's per-epoch fast paths (bench/engine_overhead.py) change no byte of meaning.

* ``atomic_write_bytes`` no longer goes through ``tempfile.mkstemp``: the temp file must
  still be ``.<name>.<...>.tmp`` in the same directory, private (0600), and gone after a
  failed write.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from model.checkpoint import atomic_write_bytes


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
