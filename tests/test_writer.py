"""The engine's writer process (src/model/writer.py) and its torch-free file format.

* What it writes is what ``torch.save`` writes: for any state-dict-like structure (every
  dtype it carries, views sharing a storage, non-contiguous and offset tensors, nested
  dicts, OrderedDicts, lists, tuples, builtins) ``data.pkl`` is byte for byte torch's, each
  storage record equal, and ``torch.load(weights_only=True)`` gives the same tensors back
  (values, dtypes, shapes, strides, shared storages).
* Tensors it cannot carry (a dtype torch pickles another way, a Parameter) still land:
  the engine serializes them itself.
* A failed write is raised by the engine, naming the file, and nothing later lands; a dead
  writer is one clear error; the writer never loads torch; ``MODEL_WRITER`` picks it.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from model.checkpoint import CheckpointError
from model.torchfile import STORAGE_TYPES
from model.writer import ProcessWriter, ThreadWriter, _Payload, open_writer

DTYPES = [getattr(torch, name) for name in STORAGE_TYPES]


@pytest.fixture(scope="module")
def writer():
    w = ProcessWriter()
    yield w
    w.close()


def _tensor(draw: Any) -> Any:
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    base = torch.randn(shape, generator=gen) * 100
    tensor = base.to(dtype) if dtype != torch.bool else base > 0
    kind = draw(st.sampled_from(["plain", "transposed", "slice", "scalar"]))
    if kind == "transposed" and tensor.dim() >= 2:
        tensor = tensor.transpose(0, -1)
    elif kind == "slice" and tensor.dim() >= 1 and tensor.shape[0] > 1:
        tensor = tensor[1:]
    elif kind == "scalar":
        tensor = tensor.reshape(-1)[0] if tensor.numel() else tensor
    return tensor


@st.composite
def checkpoints(draw: Any) -> dict[str, Any]:
    tensors = [_tensor(draw) for _ in range(draw(st.integers(0, 6)))]
    shared = torch.arange(12, dtype=torch.float32)
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                       st.floats(allow_nan=False), st.text(max_size=8),
                       st.sampled_from(tensors) if tensors else st.none())
    nested = st.recursive(leaves, lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.tuples(kids, kids),
        st.dictionaries(st.text(max_size=5), kids, max_size=3)), max_leaves=12)
    return {"model": OrderedDict((f"w{i}", t) for i, t in enumerate(tensors)),
            "views": [shared, shared[2:5], shared.view(3, 4)[:, 1]],  # one storage, three views
            "extra": draw(nested), "epoch": draw(st.integers(0, 10**6))}


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _assert_same(got: Any, want: Any, where: str = "ckpt") -> None:
    assert type(got) is type(want), where
    if isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and got.shape == want.shape, where
        assert got.stride() == want.stride() and got.storage_offset() == want.storage_offset(), where
        assert torch.equal(got, want), where
    elif isinstance(want, dict):
        assert list(got) == list(want), where
        for key in want:
            _assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ckpt=checkpoints())
def test_the_writer_process_writes_what_torch_save_writes(writer, tmp_path_factory, ckpt) -> None:
    target = tmp_path_factory.mktemp("w") / "last.pt"
    writer.submit(ckpt, [target], [])
    writer.flush()  # a failure would leave the shared writer refusing every later job
    written = zipfile.ZipFile(target)
    reference = zipfile.ZipFile(io.BytesIO(_torch_bytes(ckpt)))
    assert written.testzip() is None
    assert written.read("archive/data.pkl") == reference.read("archive/data.pkl")
    for name in reference.namelist():
        if not name.endswith("serialization_id"):
            assert written.read(name) == reference.read(name), name
    loaded = torch.load(target, weights_only=True)
    _assert_same(loaded, ckpt)
    views = loaded["views"]  # still one storage under the three views
    assert len({v.untyped_storage().data_ptr() for v in views}) == 1
    for info in written.infolist():  # every record 64-byte aligned, as torch.save aligns
        assert (info.header_offset + 30 + len(info.filename) + len(info.extra)) % 64 == 0


def test_the_same_checkpoint_to_several_paths_and_the_logs_in_one_job(writer, tmp_path) -> None:
    ckpt = {"model": OrderedDict(w=torch.ones(3)), "epoch": 2}
    best, last, log = tmp_path / "best_val_loss.pt", tmp_path / "last.pt", tmp_path / "log.csv"
    writer.submit(ckpt, [best, last], [(log, b"epoch\n2\n")])
    writer.flush()
    assert best.read_bytes() == last.read_bytes()
    assert log.read_bytes() == b"epoch\n2\n"
    assert torch.load(last, weights_only=True)["epoch"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("odd", ["uint16", "parameter"])
def test_tensors_the_pipe_does_not_carry_are_serialized_by_the_engine(writer, tmp_path,
                                                                     odd) -> None:
    tensor = (torch.tensor([1, 2, 65535], dtype=torch.uint16) if odd == "uint16"
              else torch.nn.Parameter(torch.ones(2)))
    ckpt = {"plain": torch.ones(2), "odd": tensor}
    writer.submit(ckpt, [tmp_path / "last.pt"], [])
    writer.flush()
    loaded = torch.load(tmp_path / "last.pt", weights_only=True)
    assert torch.equal(loaded["odd"], tensor.detach()) and torch.equal(loaded["plain"], torch.ones(2))


def test_a_failed_write_names_its_file_and_nothing_later_lands(tmp_path) -> None:
    writer = ProcessWriter()
    try:
        missing = tmp_path / "no-such-dir" / "last.pt"
        later = tmp_path / "later.csv"
        writer.submit({"w": torch.ones(1)}, [missing], [])
        writer.submit({"w": torch.ones(1)}, [tmp_path / "last.pt"], [(later, b"x")])
        with pytest.raises(OSError) as info:
            writer.flush()
        assert info.value.filename == str(missing)
        assert not later.exists() and not (tmp_path / "last.pt").exists()
        writer.submit({"w": torch.ones(1)}, [tmp_path / "again.pt"], [])  # still refused
        with pytest.raises(CheckpointError, match="an earlier write of this run failed"):
            writer.flush()
        assert not (tmp_path / "again.pt").exists()
    finally:
        writer.close()


def test_a_dead_writer_is_one_clear_error(tmp_path) -> None:
    writer = ProcessWriter()
    os.kill(writer.pid, signal.SIGKILL)
    os.waitpid(writer.pid, 0)
    with pytest.raises(CheckpointError, match=r"writer process \(pid \d+\) died"):
        writer.submit({"w": torch.ones(1)}, [tmp_path / "last.pt"], [])
        writer.flush()
    writer.close()


def test_the_writer_process_never_loads_torch(writer, tmp_path) -> None:
    writer.submit({"w": torch.ones(4, dtype=torch.bfloat16)}, [tmp_path / "last.pt"], [])
    writer.flush()
    maps = Path(f"/proc/{writer.pid}/maps").read_text()
    assert "libtorch" not in maps and "libc10" not in maps
    assert writer.pid != os.getpid()


def test_model_writer_picks_the_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_WRITER", "thread")
    thread = open_writer()
    assert isinstance(thread, ThreadWriter)
    thread.close()
    monkeypatch.setenv("MODEL_WRITER", "fork-bomb")
    with pytest.raises(CheckpointError, match="MODEL_WRITER='fork-bomb': expected 'process' or 'thread'"):
        open_writer()
    monkeypatch.delenv("MODEL_WRITER")
    default = open_writer()
    assert isinstance(default, ProcessWriter)
    default.close()
    assert default.peak_rss_kib is not None and default.peak_rss_kib < 100 * 1024


def _zip_with_zipfile(records: list[tuple[str, Any]]) -> bytes:
    """The reference: the same archive built by zipfile (what torchfile wrote before it
    packed the zip itself), 64-byte aligned by the same "FB" padding field."""
    import struct

    from model.torchfile import ALIGNMENT, ARCHIVE

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, data in records:
            info = zipfile.ZipInfo(f"{ARCHIVE}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            filename = info.filename.encode("utf-8")
            zip64 = 20 if len(data) * 1.05 > zipfile.ZIP64_LIMIT else 0  # as zipfile decides
            start = out.tell() + 30 + len(filename) + zip64 + 4  # after a 4-byte extra header
            pad = -start % ALIGNMENT
            info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            archive.writestr(info, data)
    return out.getvalue()


# zip64 is for archives past 2 GiB or 65,535 records; zipfile decides by two module
# constants, so lowering them makes any size take the zip64 paths, in zipfile and in
# torchfile alike, and a small archive can check them byte for byte.
# The limit is drawn near the records' sizes: zipfile widens a local header past
# limit / 1.05 bytes but a central entry only past the limit, and CI once found a record
# in between that 600 local examples had missed.
LIMITS = st.tuples(st.one_of(st.just(zipfile.ZIP64_LIMIT), st.integers(20, 400)),
                   st.sampled_from([zipfile.ZIP_FILECOUNT_LIMIT, 2, 4]))


@settings(max_examples=80, deadline=None)
@given(records=st.lists(st.tuples(st.sampled_from(["data.pkl", "data/0", "data/1", "version",
                                                   ".data/serialization_id", "byteorder"]),
                                  st.binary(max_size=300)), max_size=6,
                        unique_by=lambda record: record[0]),
       limits=LIMITS)
@example(records=[("data.pkl", bytes(39))], limits=(40, zipfile.ZIP_FILECOUNT_LIMIT))
def test_the_lean_zip_is_byte_for_byte_what_zipfile_writes(records, limits) -> None:
    """torchfile packs the zip with struct (zipfile's per-record Python cost most of a
    save) and writes it from its parts; for any records, zip64 or not, its bytes are
    zipfile's, alignment included."""
    from model.torchfile import _zip_parts

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zipfile, "ZIP64_LIMIT", limits[0])
        patch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", limits[1])
        want = _zip_with_zipfile(records)
        got = b"".join(_zip_parts(records))
    assert got == want
    assert zipfile.ZipFile(io.BytesIO(got)).testzip() is None


def _skeleton_and_raw(ckpt: dict[str, Any]) -> tuple[Any, bytes]:
    """What the engine sends its writer process for `ckpt`: the skeleton as the child
    unpickles it, and the tensor bytes as they arrive through the pipe."""
    buffer = io.BytesIO()
    payload = _Payload(buffer)
    payload.dump(ckpt)
    return pickle.loads(buffer.getvalue()), b"".join(bytes(view) for view in payload.views)


def test_a_zip64_checkpoint_loads_in_torch(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The >2 GiB path, with the limits lowered so that every record, offset and the
    directory are zip64: torch.load(weights_only=True) reads it back."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 64)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 3)
    from model.torchfile import serialize_parts

    ckpt = {"model": OrderedDict(w=torch.arange(40.0), b=torch.ones(30, dtype=torch.int64)),
            "epoch": 3}
    parts = serialize_parts(*_skeleton_and_raw(ckpt))
    target = tmp_path / "last.pt"
    target.write_bytes(b"".join(bytes(part) for part in parts))
    assert b"PK\x06\x06" in target.read_bytes()  # the zip64 end record is there
    _assert_same(torch.load(target, weights_only=True), ckpt)


def test_the_serialized_parts_join_to_the_archive() -> None:
    """The writer process writes the archive from its parts (views into the tensor bytes
    it read from the pipe), never a joined copy: the parts are the archive, in order."""
    from model.torchfile import serialize, serialize_parts

    ckpt = {"model": OrderedDict(w=torch.arange(6.0), b=torch.ones(2, dtype=torch.int64)),
            "epoch": 3}
    skeleton, raw = _skeleton_and_raw(ckpt)
    parts = serialize_parts(skeleton, raw)
    assert len(parts) > 3 and any(isinstance(part, memoryview) for part in parts)
    joined = b"".join(bytes(part) for part in parts)
    assert joined == serialize(skeleton, raw)
    assert zipfile.ZipFile(io.BytesIO(joined)).read("archive/data.pkl") == \
        zipfile.ZipFile(io.BytesIO(_torch_bytes(ckpt))).read("archive/data.pkl")


def test_a_writer_process_that_cannot_start_leaves_the_thread_writer(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A child that dies before it serves (an interpreter that is not Python, a package it
    cannot import) must not fail the run at its first epoch: the engine writes from a
    thread instead, and says so."""
    monkeypatch.setattr("sys.executable", "/bin/false")
    with caplog.at_level("WARNING", logger="model"):
        writer = open_writer()
    try:
        assert isinstance(writer, ThreadWriter)
        assert "checkpoint writer process could not start" in caplog.text
        assert "writing from a thread" in caplog.text
    finally:
        writer.close()
