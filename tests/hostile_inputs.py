"""The building blocks of hostile run dirs: FIFOs, sockets, links out, bombs, absurd numbers.

``tests/broken_runs.py`` (the engine) and ``tests/broken_foreign.py`` (Lightning, HF
Trainer, MLflow, TensorBoard, plain loops) build their hostile entries from these; every
input is written by code, never a hand-edited binary::

    make_fifo(run / "training_log.csv")          # would hang a reader that opens it blocking
    link_out(run / "config.yaml", root, "sentinel.yaml")   # a symlink to the outside sentinel
    (run / "config.yaml").write_text(yaml_bomb())          # 10**9 nodes in 600 bytes

The **sentinel** is ``<corpus root>/_outside/``: the files every link out points at.  They
are valid files of their kind (a loadable checkpoint, a trainer_state.json, a PNG), so a
reader that follows a link gets something it would happily judge -- the test then finds the
sentinel's atime, mtime or bytes changed, or its path in ``strace``'s log, and fails.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUTSIDE = "_outside"
HUGE_DIGITS = "9" * 5000          # over Python's 4300-digit int-from-str limit
BIG_INT_DIGITS = "9" * 400        # parses, but float() overflows


# --------------------------------------------------------------------------- special files


def _replace(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)


def make_fifo(path: Path) -> None:
    """A named pipe where a file should be: opening it for reading waits for a writer."""
    _replace(path)
    os.mkfifo(path)


def make_socket(path: Path) -> None:
    """A UNIX socket where a file should be (``mknod``, no root needed; a bound socket
    where mknod is not allowed)."""
    _replace(path)
    try:
        os.mknod(path, stat.S_IFSOCK | 0o600)
    except (OSError, AttributeError):
        import socket

        here = os.getcwd()
        os.chdir(path.parent)  # bind by a short relative name: AF_UNIX paths are short
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(path.name)
            sock.close()
        finally:
            os.chdir(here)


def link_to(path: Path, target: Path | str) -> None:
    """``path`` becomes a symlink to ``target`` (an absolute path: ``/etc/passwd``, ``/dev/zero``)."""
    _replace(path)
    path.symlink_to(target)


def outside(root: Path) -> Path:
    """The sentinel folder of the corpus at ``root`` (created on first use)."""
    folder = root / OUTSIDE
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def link_out(path: Path, root: Path, name: str, copy_from: Path | None = None) -> None:
    """``path`` becomes a symlink to ``<root>/_outside/<name>``; the sentinel is a copy of
    ``copy_from`` (default: the file ``path`` was) so that following the link would "work"."""
    target = outside(root) / name
    source = copy_from if copy_from is not None else path
    if not target.exists():
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        elif source.exists():
            shutil.copyfile(source, target)
        else:
            target.write_text("sentinel\n")
    _replace(path)
    path.symlink_to(target, target_is_directory=target.is_dir())


# --------------------------------------------------------------------------- YAML and JSON


def yaml_bomb(levels: int = 9, width: int = 10) -> str:
    """The billion laughs: ``width**levels`` strings from a few hundred bytes."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def yaml_recursive() -> str:
    return "a: &loop [1, *loop]\n"


def yaml_deep(levels: int = 400) -> str:
    """Nesting deeper than a composer should recurse into (block style: no flow limit)."""
    return "".join(f"{'  ' * i}k{i}:\n" for i in range(levels)) + f"{'  ' * levels}leaf: 1\n"


def json_deep(levels: int = 200_000) -> str:
    return "[" * levels + "]" * levels


def with_raw(data: Any, marker: str, raw: str) -> str:
    """``json.dumps(data)`` with the string ``marker`` replaced by ``raw`` unquoted (a number
    json.dumps would never write: 5000 digits)."""
    return json.dumps(data).replace(json.dumps(marker), raw)


# --------------------------------------------------------------------------- pickles


def list_bomb(levels: int = 40) -> list[Any]:
    """A list holding the same list twice at every level: 2**levels leaves to walk, a few
    hundred bytes pickled (pickle's memo keeps one copy)."""
    node: list[Any] = ["x"]
    for _ in range(levels):
        node = [node, node]
    return node


def tuple_bomb(levels: int = 24) -> tuple[Any, ...]:
    """The same as a tuple: used as a dict key, loading it hashes 2**levels tuples."""
    node: tuple[Any, ...] = ("x",)
    for _ in range(levels):
        node = (node, node)
    return node


def deep_list(levels: int = 100_000) -> list[Any]:
    node: list[Any] = []
    for _ in range(levels):
        node = [node]
    return node


def save_deep(obj: Any, path: Path) -> None:
    """``torch.save`` of an object nested deeper than the default recursion limit allows
    pickling: in a thread with a big stack and a raised limit."""
    import sys
    import threading

    import torch

    errors: list[BaseException] = []

    def save() -> None:
        try:
            torch.save(obj, path)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    old_limit, old_stack = sys.getrecursionlimit(), threading.stack_size(512 << 20)
    sys.setrecursionlimit(200_000)
    try:
        thread = threading.Thread(target=save)
        thread.start()
        thread.join()
    finally:
        sys.setrecursionlimit(old_limit)
        threading.stack_size(old_stack)
    if errors:
        raise errors[0]


def zip_bomb_checkpoint(path: Path, size: int = 96 << 20) -> None:
    """A torch-style zip whose ``data.pkl`` inflates to ``size`` bytes (a few hundred KB on disk)."""
    import zipfile

    _replace(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data.pkl", "w", force_zip64=True) as fh:
            chunk = b"\x00" * (1 << 20)
            for _ in range(size >> 20):
                fh.write(chunk)
        archive.writestr("archive/version", "3\n")


# --------------------------------------------------------------------------- images


def png_header_only(path: Path, width: int = 40_000, height: int = 40_000) -> None:
    """A PNG whose header claims ``width x height`` (1.6 G pixels) and whose data is one row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))
    _replace(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def png_many_pixels(path: Path, width: int = 6000, height: int = 5000) -> None:
    """A real, decodable PNG of 30 M pixels (over the plots gate's cap) in a small file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\x00" + bytes(range(256)) * (width // 256) + b"\x00" * (width % 256)
    idat = zlib.compress(row * height, 9)
    _replace(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- the sentinel


def sentinel_state(root: Path) -> dict[str, tuple[str, int, int]]:
    """{relative path: (sha256, mtime_ns, atime_ns)} of every file under ``_outside``."""
    import hashlib

    out: dict[str, tuple[str, int, int]] = {}
    folder = root / OUTSIDE
    for path in sorted(folder.rglob("*")) if folder.exists() else []:
        if path.is_symlink() or not path.is_file():
            continue
        st = path.stat()  # before the read below moves atime
        out[path.relative_to(folder).as_posix()] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                                                    st.st_mtime_ns, st.st_atime_ns)
    return out


def arm_sentinel(root: Path) -> dict[str, tuple[str, int, int]]:
    """Set every sentinel file's atime an hour before its mtime -- so that under ``relatime``
    the next read of it moves atime -- and return their state (hashing reads them, so the
    times are set after)."""
    state = sentinel_state(root)
    folder = root / OUTSIDE
    armed: dict[str, tuple[str, int, int]] = {}
    for rel, (digest, mtime, _atime) in state.items():
        atime = mtime - 3600 * 10**9
        os.utime(folder / rel, ns=(atime, mtime))
        armed[rel] = (digest, mtime, atime)
    return armed


Mutator = Callable[[Path, Path], object]
