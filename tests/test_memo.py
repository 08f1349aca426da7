"""The bounded caches of loaded checkpoints and built models (``pytest_mlgates.memo``).

Two criteria on one checkpoint load it once and build its model once; a session over many
large checkpoints does not keep every one in memory.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from gate_helpers import run_gate
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_mlgates import memo
from pytest_mlgates.checkpoint_io import load_checkpoint_file
from pytest_mlgates.memo import BytesLRU


@settings(max_examples=200, deadline=None)
@given(budget=st.integers(0, 1000),
       puts=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 600)), min_size=1, max_size=40))
def test_the_cache_holds_at_most_its_budget_and_always_the_newest(budget: int, puts: list[tuple[int, int]]) -> None:
    cache = BytesLRU(budget)
    live: dict[int, int] = {}  # a reference model: key -> size, in use order
    for key, size in puts:
        cache.put(key, f"v{key}-{size}", size)
        live.pop(key, None)
        live[key] = size
        while sum(live.values()) > budget and len(live) > 1:
            del live[next(iter(live))]
        assert cache.total == sum(live.values())
        assert cache.total <= budget or len(cache) == 1
        assert cache.get(key) == f"v{key}-{size}"  # the newest is always kept
        assert len(cache) == len(live)


def test_get_makes_an_entry_the_most_recently_used() -> None:
    cache = BytesLRU(100)
    cache.put("a", 1, 40)
    cache.put("b", 2, 40)
    assert cache.get("a") == 1          # a is now newer than b
    cache.put("c", 3, 40)               # over budget: b goes, not a
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3


def _save_checkpoints(tmp_path: Path, count: int) -> list[Path]:
    import torch

    paths = []
    for i in range(count):
        path = tmp_path / f"c{i}.pt"
        torch.save({"model": {"w": torch.full((64,), float(i))}, "epoch": i}, path)
        paths.append(path)
    return paths


def test_checkpoints_are_loaded_once_and_the_cache_stays_within_its_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _save_checkpoints(tmp_path, 3)
    size = paths[0].stat().st_size
    monkeypatch.setattr(memo, "CHECKPOINTS", BytesLRU(budget=2 * size))
    first = load_checkpoint_file(paths[0], root=tmp_path)
    assert load_checkpoint_file(paths[0], root=tmp_path) is first          # loaded once
    for path in paths[1:]:
        load_checkpoint_file(path, root=tmp_path)
    assert len(memo.CHECKPOINTS) == 2 and memo.CHECKPOINTS.total <= 2 * size
    again = load_checkpoint_file(paths[0], root=tmp_path)                  # evicted: read again
    assert again is not first and float(again["model"]["w"][0]) == 0.0


def test_two_criteria_on_one_checkpoint_build_its_model_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    pkg = tmp_path / "code"
    pkg.mkdir()
    (pkg / "countnets.py").write_text(textwrap.dedent("""
        import torch

        BUILT = []

        class Net(torch.nn.Module):
            def __init__(self, n_in=4, n_out=3):
                super().__init__()
                BUILT.append(self)
                self.fc = torch.nn.Linear(n_in, n_out)

            def forward(self, x):
                return self.fc(x)
    """))
    monkeypatch.syspath_prepend(str(pkg))
    sys.modules.pop("countnets", None)
    import countnets  # type: ignore[import-not-found]

    monkeypatch.setattr(memo, "MODELS", BytesLRU())
    run = tmp_path / "run"
    (run / "ckpt").mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,val_loss\n1,0.5\n")
    torch.save({"model": countnets.Net().state_dict(), "epoch": 1}, run / "ckpt" / "a.pt")
    torch.save({"model": countnets.Net().state_dict(), "epoch": 1}, run / "ckpt" / "b.pt")
    countnets.BUILT.clear()
    params = {"checkpoint": "ckpt/a.pt", "model": "countnets:Net", "input_shape": [2, 4]}
    assert run_gate(run, "checkpoint_softmax", params).passed
    assert run_gate(run, "artifact", {"path": "ckpt/a.pt", "loads": {
        "softmax": True, "model": "countnets:Net", "input_shape": [2, 4]}}).passed
    assert len(countnets.BUILT) == 1
    # another checkpoint, or other constructor arguments, is another model
    assert run_gate(run, "checkpoint_softmax", {**params, "checkpoint": "ckpt/b.pt"}).passed
    assert len(countnets.BUILT) == 2
    with pytest.raises(Exception, match="weights do not fit"):
        run_gate(run, "checkpoint_softmax", {**params, "kwargs": {"n_in": 5}})
    assert len(countnets.BUILT) == 3
