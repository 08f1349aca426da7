"""TensorBoard event files read as a log: real files from torch's SummaryWriter, then broken."""

from __future__ import annotations

import math
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import tensorboard as tb

INF = float("inf")
NAN = float("nan")


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text
    return text


def _tensor_scalar(writer: Any, tag: str, value: float, step: int, first: bool, double: bool) -> None:
    """What newer writers (tf.summary, tensorboard.summary v2) write: a 0-d tensor, with the
    'scalars' plugin metadata on the tag's first event only."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto()
    if double:
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, tensor_shape=shape,
                                        tensor_content=struct.pack("<d", value))
    else:
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[value])
    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    val = summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=meta if first else None)
    writer._get_file_writer().add_summary(summary_pb2.Summary(value=[val]), global_step=step, walltime=1000.0 + step)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorboard")
    torch_tb = pytest.importorskip("torch.utils.tensorboard")
    d = tmp_path_factory.mktemp("tb") / "run"
    w = torch_tb.SummaryWriter(str(d))
    for s in range(5):
        w.add_scalar("val_loss", 1.0 / 2**s, s, walltime=1000.0 + s)
        w.add_scalar("train/loss", 2.0 / 2**s, s, walltime=1000.0 + s)
    w.add_scalar("val_loss", 0.125, 2, walltime=1100.0)  # re-logged later: wins
    w.add_scalar("weird", NAN, 0, walltime=1000.0)
    w.add_scalar("weird", INF, 1, walltime=1000.0)
    w.add_scalar("weird", -INF, 2, walltime=1000.0)
    w.add_scalars("loss", {"train": 1.0, "val": 2.0}, 0, walltime=1000.0)
    torch = pytest.importorskip("torch")
    w.add_histogram("hist", torch.arange(10.0), 0)
    w.add_text("note", "not a scalar", 0)
    for s in range(3):
        _tensor_scalar(w, "acc", 0.25 * s, s, first=s == 0, double=False)
        _tensor_scalar(w, "acc64", 0.1 * s, s, first=s == 0, double=True)
    w.close()
    w2 = torch_tb.SummaryWriter(str(d))  # a resumed run: a second file in the same folder
    w2.add_scalar("val_loss", 99.0, 4, walltime=500.0)  # older wall time than the first file's: loses
    w2.add_scalar("val_loss", 0.0078125, 5, walltime=2000.0)
    w2.close()
    return d


def test_read_scalars_round_trip(logdir: Path) -> None:
    scalars = tb.read_scalars(logdir)
    assert scalars["val_loss"] == [(0, 1.0), (1, 0.5), (2, 0.125), (3, 0.125), (4, 0.0625), (5, 0.0078125)]
    assert scalars["train/loss"] == [(s, 2.0 / 2**s) for s in range(5)]
    weird = scalars["weird"]
    assert [s for s, _ in weird] == [0, 1, 2]
    assert math.isnan(weird[0][1]) and weird[1][1] == INF and weird[2][1] == -INF
    assert scalars["acc"] == [(0, 0.0), (1, 0.25), (2, 0.5)]
    assert scalars["acc64"] == [(0, 0.0), (1, 0.1), (2, 0.2)]  # a double keeps its precision
    # add_scalars writes one folder per series with the same tag: the folder tells them apart
    assert scalars["loss_train/loss"] == [(0, 1.0)] and scalars["loss_val/loss"] == [(0, 2.0)]
    assert "hist" not in scalars and "note" not in scalars


def test_every_point_is_kept(tmp_path: Path) -> None:
    torch_tb = pytest.importorskip("torch.utils.tensorboard")
    w = torch_tb.SummaryWriter(str(tmp_path))
    for s in range(3000):  # more than EventAccumulator's default reservoir of 1000
        w.add_scalar("x", float(s), s)
    w.close()
    points = tb.read_scalars(tmp_path)["x"]
    assert len(points) == 3000 and points[-1] == (2999, 2999.0)


def test_to_log(logdir: Path) -> None:
    log = tb.to_log(logdir)
    assert log.kind == "tensorboard" and log.source == logdir
    assert log.columns["epoch"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert log.columns["val_loss"] == [1.0, 0.5, 0.125, 0.125, 0.0625, 0.0078125]
    assert math.isnan(log.columns["acc"][3]) and log.empty["acc"] == [3, 4, 5]
    assert log.columns["train/loss"][:5] == [2.0, 1.0, 0.5, 0.25, 0.125]


def test_detect(logdir: Path, tmp_path: Path) -> None:
    assert tb.detect(logdir) and tb.detect(logdir.parent)
    assert not tb.detect(tmp_path) and not tb.detect(tmp_path / "missing")
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    event = next(logdir.glob("events.out.tfevents.*"))
    shutil.copy(event, deep / event.name)
    assert not tb.detect(tmp_path)  # three levels down: too deep
    assert tb.detect(tmp_path / "a")  # two levels: found


def _first_file(logdir: Path, tmp_path: Path) -> Path:
    event = min(logdir.glob("events.out.tfevents.*"))
    dst = tmp_path / event.name
    shutil.copy(event, dst)
    return dst


def test_truncated_event_file(logdir: Path, tmp_path: Path) -> None:
    f = _first_file(logdir, tmp_path)
    f.write_bytes(f.read_bytes()[:-3])
    with pytest.raises(RunDirError, match=r"truncated") as info:
        tb.read_scalars(tmp_path)
    assert str(f) in one_line(info.value)


def test_corrupt_event_file(logdir: Path, tmp_path: Path) -> None:
    f = _first_file(logdir, tmp_path)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match=r"corrupt") as info:
        tb.read_scalars(tmp_path)
    assert str(f) in one_line(info.value)


def test_not_an_event_file(tmp_path: Path) -> None:
    f = tmp_path / "events.out.tfevents.123.host"
    f.write_text("this is not a TFRecord file at all\n")
    with pytest.raises(RunDirError, match="corrupt") as info:
        tb.read_scalars(tmp_path)
    assert str(f) in one_line(info.value)


def test_valid_frame_with_garbage_payload(tmp_path: Path) -> None:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    payload = b"\xff\xff\xff\xff garbage"
    header = struct.pack("<Q", len(payload))
    record = header + struct.pack("<I", masked_crc32c(header)) + payload + struct.pack("<I", masked_crc32c(payload))
    f = tmp_path / "events.out.tfevents.1.h"
    f.write_bytes(record)
    with pytest.raises(RunDirError, match=r"not a TensorBoard event") as info:
        tb.read_scalars(tmp_path)
    assert str(f) in one_line(info.value)


def test_huge_length_field_is_truncation_not_allocation(tmp_path: Path) -> None:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    header = struct.pack("<Q", 2**60)
    f = tmp_path / "events.out.tfevents.1.h"
    f.write_bytes(header + struct.pack("<I", masked_crc32c(header)) + b"x" * 10)
    with pytest.raises(RunDirError, match="truncated"):
        tb.read_scalars(tmp_path)


def test_no_event_files(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no TensorBoard event files"):
        tb.read_scalars(tmp_path)


def test_no_scalars(tmp_path: Path) -> None:
    torch_tb = pytest.importorskip("torch.utils.tensorboard")
    w = torch_tb.SummaryWriter(str(tmp_path))
    w.add_text("note", "hello", 0)
    w.close()
    assert tb.read_scalars(tmp_path) == {}
    with pytest.raises(RunDirError, match="no scalars"):
        tb.to_log(tmp_path)


def test_tensorboard_not_installed(logdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "tensorboard" or name.startswith("tensorboard."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(RunDirError) as info:
        tb.read_scalars(logdir)
    assert one_line(info.value) == (
        f"{logdir}: TensorBoard event files found but the 'tensorboard' package is not installed "
        "(pip install tensorboard)"
    )
