"""What ``mlgates verdict`` costs on a run with a 2 GB checkpoint, against one plain
``hashlib.sha256`` pass over the same file, measured in one run of this script.

The run (generated in a temp dir, removed at the end): ``training_log.csv``, a few small
files and ``checkpoints/big.pt`` of ``--size`` random bytes.  One acceptance session
(a log-only gate file) archives it; then, repeated and interleaved:

* ``sha256``: one ``hashlib.file_digest(f, "sha256")`` pass over the checkpoint, in this
  process (no interpreter start-up: the strictest baseline);
* ``first verdict``: ``mlgates verdict RUN`` with no fingerprint cache (it reads every
  byte with the fingerprint's hash, then writes the cache);
* ``second verdict``: the same command again, the run unchanged (the cache answers);
* ``--rehash``: ``mlgates verdict --rehash RUN`` (reads every byte whatever the cache says).

Goals (issue 18): second <= 0.25x, first <= 0.6x.  Then one byte in the middle of the
checkpoint is flipped with its mtime put back: the verdict must say STALE.

Before the timings, the candidate hashes over the same file, in this process: SHA-256 on
one thread, SHA-256 over two threads (two halves, then a digest of the two digests),
BLAKE3 on one thread and BLAKE3 with its own threads -- the figures the fingerprint's hash
was picked by.

    python bench/verdict_cache.py                    # 2 GiB, 3 repeats
    python bench/verdict_cache.py --size 64M --repeat 1   # CI-sized

Files written right before a fingerprint are read again by the next one (git's
racy-timestamp rule, two seconds of margin), so the script waits that out once after
writing the run, as a run finished minutes before its gates would have.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
GATES = """exit_criteria:
  - name: loss_falls
    check: "min(val_loss) < first(val_loss)"
"""
LOG = "epoch,train_loss,val_loss\n" + "".join(
    f"{e},{1 / e:.4f},{1.1 / e:.4f}\n" for e in range(1, 21))
CHUNK = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("IB")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def make_run(root: Path, size: int) -> Path:
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "training_log.csv").write_text(LOG)
    (run / "config.yaml").write_text("seed: 0\n")
    with open(run / "checkpoints" / "big.pt", "wb") as handle:
        left = size
        while left:
            piece = min(left, 64 * CHUNK)
            handle.write(os.urandom(piece))
            left -= piece
    (root / "acceptance").mkdir()
    (root / "acceptance" / "a.gates.yaml").write_text(GATES)
    return run


# --------------------------------------------------------------------------- candidates


def sha256_plain(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_two_threads(path: Path) -> str:
    size = path.stat().st_size
    half = size // 2
    digests: list[bytes] = [b"", b""]

    def part(index: int, start: int, length: int) -> None:
        digest = hashlib.sha256()
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        fd = os.open(path, os.O_RDONLY)
        try:
            while length:
                count = os.preadv(fd, [view[:min(CHUNK, length)]], start)
                if not count:
                    break
                digest.update(view[:count])
                start += count
                length -= count
        finally:
            os.close(fd)
        digests[index] = digest.digest()

    workers = [threading.Thread(target=part, args=(0, 0, half)),
               threading.Thread(target=part, args=(1, half, size - half))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return hashlib.sha256(digests[0] + digests[1]).hexdigest()


def blake3_hash(path: Path, threads: bool) -> str:
    import blake3

    digest = blake3.blake3(max_threads=blake3.blake3.AUTO if threads else 1)
    buffer = bytearray(16 * CHUNK if threads else CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
    return str(digest.hexdigest())


def timed(fn, *args) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


# --------------------------------------------------------------------------- commands


def bench_env() -> dict[str, str]:
    """This checkout's plugin first on the path (the bench runs from a checkout)."""
    paths = [str(REPO_ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def verdict(run: Path, *extra: str) -> tuple[float, int, str]:
    command = [sys.executable, "-m", "pytest_mlgates.cli", "verdict", str(run), *extra]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=bench_env())
    return time.perf_counter() - started, proc.returncode, proc.stdout.splitlines()[0]


def flip_middle_byte(path: Path) -> None:
    st = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(st.st_size // 2)
        byte = handle.read(1)
        handle.seek(st.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2G", help="checkpoint size (2G, 512M, 64M, ...)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    from pytest_mlgates import fingerprint
    from pytest_mlgates.fingerprint_cache import CACHE_NAME

    size = parse_size(args.size)
    scratch = Path(tempfile.mkdtemp(prefix="mlgates-verdict-bench-"))
    try:
        run = make_run(scratch, size)
        big = run / "checkpoints" / "big.pt"
        print(f"run with a {size / (1 << 30):.2f} GiB checkpoint in {scratch}; fingerprint "
              f"hash here: {fingerprint.preferred_algorithm()}", flush=True)
        time.sleep(fingerprint.RACY_MARGIN_NS / 1e9 + 0.2)
        session = subprocess.run(
            [sys.executable, "-m", "pytest", "acceptance", "--run-dir", str(run), "-q",
             "-p", "no:cacheprovider", f"--basetemp={scratch / 'tmp'}"],
            cwd=scratch, capture_output=True, text=True, check=False,
            env=bench_env())
        if session.returncode != 0:
            raise SystemExit(f"verdict_cache: the session failed:\n{session.stdout[-2000:]}")

        candidates = {"sha256, 1 thread": lambda: sha256_plain(big),
                      "sha256, 2 threads (tree)": lambda: sha256_two_threads(big)}
        if fingerprint.available("blake3"):
            candidates["blake3, 1 thread"] = lambda: blake3_hash(big, False)
            candidates["blake3, its threads"] = lambda: blake3_hash(big, True)
        sha256_plain(big)  # the file in the page cache for every contender
        found: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.repeat):
            for name, fn in candidates.items():
                found[name].append(timed(fn))
        base = statistics.median(found["sha256, 1 thread"])
        print("candidate hashes over the file (in this process, interleaved):")
        for name, values in found.items():
            print(f"  {name:<26} {spread(values)}  ratio {statistics.median(values) / base:.3f}")

        times: dict[str, list[float]] = {k: [] for k in ("sha256", "first", "second", "rehash")}
        for index in range(args.repeat):
            times["sha256"].append(timed(sha256_plain, big))
            (run / "acceptance" / CACHE_NAME).unlink(missing_ok=True)
            for name, extra in (("first", ()), ("second", ()), ("rehash", ("--rehash",))):
                elapsed, code, line = verdict(run, *extra)
                if code != 0:
                    raise SystemExit(f"verdict_cache: {name} verdict exited {code}: {line}")
                times[name].append(elapsed)
            print(f"repeat {index + 1}: sha256 {times['sha256'][-1]:.3f} s  first verdict "
                  f"{times['first'][-1]:.3f} s  second {times['second'][-1]:.3f} s  --rehash "
                  f"{times['rehash'][-1]:.3f} s", flush=True)
        sha = statistics.median(times["sha256"])
        for name, goal in (("first", 0.6), ("second", 0.25), ("rehash", None)):
            ratio = statistics.median(times[name]) / sha
            note = f" (goal <= {goal})" if goal is not None else ""
            label = {"first": "first verdict", "second": "second verdict",
                     "rehash": "verdict --rehash"}[name]
            print(f"{label:<17} {spread(times[name])}; ratio to one sha256 pass "
                  f"{ratio:.3f}{note}")
        print(f"one sha256 pass   {spread(times['sha256'])}")

        flip_middle_byte(big)
        elapsed, code, line = verdict(run)
        print(f"one byte flipped mid-file, mtime restored: exit {code} in {elapsed:.3f} s: "
              f"{line[:60]}")
        return 0 if code == 3 else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
