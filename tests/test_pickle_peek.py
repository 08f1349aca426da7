"""pickle_peek reads a checkpoint's top-level fields from its opcodes: the same values
pickle itself would build for plain fields, and nothing the file names is ever run."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_mlgates.pickle_peek import OBJECT, PeekError, checkpoint_fields, top_level_fields

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20))
NESTED = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=4)),
                      max_leaves=12)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(st.text(max_size=12), NESTED, max_size=12), protocol=st.integers(0, 5))
def test_plain_fields_read_as_pickle_builds_them(fields: dict[str, object], protocol: int) -> None:
    got = top_level_fields(io.BytesIO(pickle.dumps(fields, protocol=protocol)))
    assert list(got) == list(fields)
    for key, value in fields.items():
        if isinstance(value, (list, tuple, dict)) or (isinstance(value, bytes) and protocol < 3):
            # containers are never built; protocols 0-2 pickle bytes as a call of codecs.encode
            assert got[key] is OBJECT, (key, value, got[key])
        else:
            assert got[key] == value and type(got[key]) is type(value), (key, value, got[key])


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_read_without_running_it(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "PWNED"
    path = tmp_path / "last.pt"
    torch.save({"epoch": 4, "ema": _RunsCode(marker), "optimizer": {"state": {}}, "weights": torch.ones(3)}, path)
    fields = checkpoint_fields(path)
    assert fields["epoch"] == 4 and fields["ema"] is OBJECT and fields["optimizer"] is OBJECT
    assert fields["weights"] is OBJECT
    assert not marker.exists()


def test_a_legacy_torch_file_and_a_truncated_one_are_one_line_errors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    legacy = tmp_path / "legacy.pt"
    torch.save({"epoch": 1}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(PeekError, match="does not hold a dict at the top level"):
        checkpoint_fields(legacy)  # its first pickle is torch's magic number
    cut = tmp_path / "cut.pt"
    torch.save({"epoch": 1, "w": torch.ones(100)}, cut)
    cut.write_bytes(cut.read_bytes()[:200])
    with pytest.raises(PeekError) as err:
        checkpoint_fields(cut)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("data", [b"", b"\x80\x02", b"\x80\x02K\x01.", b"garbage" * 10, b"\x80\x02}q\x00(X"])
def test_what_is_not_a_pickle_of_a_dict_says_so(data: bytes) -> None:
    with pytest.raises(PeekError):
        top_level_fields(io.BytesIO(data))
