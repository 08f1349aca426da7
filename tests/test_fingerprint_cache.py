"""The fingerprint cache: unchanged bytes are not read again, and changed bytes always are.

Each rule of ``fingerprint.py``/``fingerprint_cache.py`` on real files: a digest is reused
only while the file's size, mtime, ctime, inode and device are those it was computed for,
and only when its mtime and ctime are older than the clock of the walk that hashed it
(git's racy-timestamp rule, two seconds of margin); a cache that is corrupt, another
run's, symlinked or -- under the signing key -- not validly signed is ignored, never
trusted into an ACCEPTED; ``--rehash`` reads everything.  Sessions and verdicts are real
(pytester in this process, where the reads are counted, and the ``mlgates`` command).

A file's ctime cannot be set back, so tests that need digests old enough to be reused wait
out the two-second margin once (``settle``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_mlgates import fingerprint, fingerprint_cache
from pytest_mlgates.fingerprint import KnownDigests, snapshot
from pytest_mlgates.ledger import KEY_ENV, read_ledger
from pytest_mlgates.verdict import compute_verdict

GATES = """exit_criteria:
  - name: loss_falls
    check: "min(val_loss) < first(val_loss)"
"""
LOG = "epoch,train_loss,val_loss\n1,0.9,0.8\n2,0.6,0.4\n"
KEY = "ci-secret-0123456789abcdef"


def settle() -> None:
    """Wait until files written so far are older than the racy clock's margin."""
    time.sleep(fingerprint.RACY_MARGIN_NS / 1e9 + 0.2)


def make_run(root: Path, *, blob_mib: int = 1) -> Path:
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "training_log.csv").write_text(LOG)
    blob = bytes(range(256)) * (4096 * blob_mib)
    (run / "checkpoints" / "last.pt").write_bytes(blob)
    for name in ("a.pt", "b.pt", "c.pt", "d.pt", "e.pt"):
        (run / "checkpoints" / name).write_bytes(name.encode() * 1000)
    return run


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every file a fingerprint reads in this process (one entry per file)."""
    seen: list[int] = []
    original = fingerprint._digest_fd

    def counting(fd: int, algorithm: str = "sha256") -> str:
        seen.append(fd)
        return original(fd, algorithm)

    monkeypatch.setattr(fingerprint, "_digest_fd", counting)
    return seen


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    (pytester.path / "acceptance").mkdir()
    (pytester.path / "acceptance" / "a.gates.yaml").write_text(GATES)
    return make_run(pytester.path)


def session(pytester: pytest.Pytester, run: Path) -> pytest.RunResult:
    return pytester.runpytest("acceptance", "--run-dir", str(run), "-p", "no:cacheprovider")


def verdict(run: Path, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("environ", {})
    return compute_verdict(run, **kwargs)


def cache_file(run: Path) -> Path:
    return run / "acceptance" / fingerprint_cache.CACHE_NAME


def mid_byte_flip(path: Path) -> None:
    """One byte in the middle changed in place, size kept, mtime put back (ctime moves)."""
    st = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(st.st_size // 2)
        byte = handle.read(1)
        handle.seek(st.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


# --------------------------------------------------------------------------- the key


def test_a_digest_stands_only_while_size_mtime_ctime_and_inode_do(tmp_path: Path,
                                                                  reads: list[int]) -> None:
    run = make_run(tmp_path)
    settle()
    first = snapshot(run)
    assert first.known is not None and len(first.known.entries) == 7
    again = snapshot(run, known=first.known)
    assert (again.hashed, again.reused, again.digest) == (0, 7, first.digest)

    ckpt = run / "checkpoints"
    (ckpt / "a.pt").write_bytes(b"a.pt" * 1000 + b"x")                  # size
    os.utime(ckpt / "b.pt", ns=(0, 10**18))                             # mtime
    mid_byte_flip(ckpt / "c.pt")                                        # content, mtime put back
    st = (ckpt / "d.pt").stat()                                         # another file, same
    (tmp_path / "d.new").write_bytes(b"D.pt" * 1000)                    # size and mtime,
    os.utime(tmp_path / "d.new", ns=(st.st_atime_ns, st.st_mtime_ns))  # renamed over it
    os.replace(tmp_path / "d.new", ckpt / "d.pt")
    assert (ckpt / "d.pt").stat().st_size == st.st_size
    assert (ckpt / "d.pt").stat().st_mtime_ns == st.st_mtime_ns
    os.chmod(ckpt / "e.pt", 0o600)                                      # ctime only

    reads.clear()
    now = snapshot(run, known=first.known)
    assert now.reused == 2 and now.hashed == 5 and len(reads) == 5  # last.pt, the log kept
    changed = fingerprint.diff_files(first.files, now.files)["changed"]
    assert changed == ["checkpoints/a.pt", "checkpoints/c.pt", "checkpoints/d.pt"]
    assert now.files["checkpoints/e.pt"] == first.files["checkpoints/e.pt"]  # read, same bytes


def test_a_file_written_within_the_margin_is_read_again_next_time(tmp_path: Path) -> None:
    """git's racy-timestamp rule: a digest of a file whose mtime or ctime is not older than
    the clock of the walk that hashed it is not kept, so the next walk reads it again."""
    run = make_run(tmp_path)
    settle()
    (run / "training_log.csv").write_text(LOG + "3,0.5,0.3\n")  # written just now
    first = snapshot(run)
    assert first.known is not None
    assert "training_log.csv" not in first.known.entries
    assert "checkpoints/last.pt" in first.known.entries
    again = snapshot(run, known=first.known)
    assert again.hashed == 1 and again.reused == 6

    # an entry that matches the key but is not older than its cache's clock is not used
    st = (run / "checkpoints" / "last.pt").stat()
    racy = KnownDigests(first.algorithm, clock_ns=max(st.st_mtime_ns, st.st_ctime_ns),
                        entries={"checkpoints/last.pt": (fingerprint.file_key(st), "0" * 64)})
    assert racy.lookup("checkpoints/last.pt", st) is None
    assert snapshot(run, known=racy).files["checkpoints/last.pt"] == first.files[
        "checkpoints/last.pt"]


def test_another_algorithms_digests_are_never_reused(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    settle()
    sha = snapshot(run, algorithm="sha256")
    assert sha.known is not None
    other = KnownDigests("blake3", sha.known.clock_ns, sha.known.entries)
    now = snapshot(run, algorithm="sha256", known=other)
    assert now.reused == 0 and now.digest == sha.digest


# --------------------------------------------------------------------------- sessions and verdicts


def test_a_session_reads_each_file_once_then_sessions_and_verdicts_read_nothing(
    pytester: pytest.Pytester, project: Path, reads: list[int]
) -> None:
    settle()
    session(pytester, project).assert_outcomes(passed=1)
    assert len(reads) == 7  # the first fingerprint read the run; the end one reused it all
    assert cache_file(project).is_file()

    reads.clear()
    session(pytester, project).assert_outcomes(passed=1)
    assert reads == []  # both fingerprints from the cache
    assert verdict(project)["verdict"] == "ACCEPTED"
    assert reads == []
    assert verdict(project, rehash=True)["verdict"] == "ACCEPTED"
    assert len(reads) == 7  # --rehash reads every byte


def test_a_verdict_writes_the_cache_it_needed_and_the_next_reads_nothing(
    pytester: pytest.Pytester, project: Path, reads: list[int]
) -> None:
    settle()
    session(pytester, project).assert_outcomes(passed=1)
    cache_file(project).unlink()
    reads.clear()
    assert verdict(project)["verdict"] == "ACCEPTED"
    assert len(reads) == 7 and cache_file(project).is_file()
    reads.clear()
    assert verdict(project)["verdict"] == "ACCEPTED"
    assert reads == []


def test_one_byte_changed_mid_file_with_mtime_restored_is_stale(
    pytester: pytest.Pytester, project: Path
) -> None:
    """The issue's case in small: the cache holds the old digest under the old key; the
    write moved ctime, which ``os.utime`` cannot put back, so the digest is not reused."""
    settle()
    session(pytester, project).assert_outcomes(passed=1)
    assert verdict(project)["verdict"] == "ACCEPTED"
    mid_byte_flip(project / "checkpoints" / "last.pt")
    result = verdict(project)
    assert result["verdict"] == "STALE"
    assert result["changes"]["changed"] == ["checkpoints/last.pt"]
    proc = subprocess.run([sys.executable, "-m", "pytest_mlgates.cli", "verdict", str(project)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 3 and "changed  checkpoints/last.pt" in proc.stdout


# --------------------------------------------------------------------------- caches not to trust


def forge_cache(run: Path, entry: str, digest: str, *, signature: str | None = None) -> None:
    """Rewrite the cache so ``entry``'s current key maps to ``digest`` (what a writer of
    the run dir who just changed the file would claim)."""
    data = json.loads(cache_file(run).read_text())
    st = (run / entry).stat()
    data["entries"][entry] = [*fingerprint.file_key(st), digest]
    data["clock_ns"] = time.time_ns() + 10**12  # and a clock that makes the new key "settled"
    data.pop("signature", None)
    if signature is not None:
        data["signature"] = signature
    cache_file(run).write_text(json.dumps(data))


def test_a_forged_cache_is_ignored_under_the_key_and_rehash_never_reads_it(
    pytester: pytest.Pytester, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    settle()
    session(pytester, project).assert_outcomes(passed=1)
    assert json.loads(cache_file(project).read_text())["signature"].startswith("hmac-sha256:")
    assert verdict(project, environ={KEY_ENV: KEY})["verdict"] == "ACCEPTED"
    old = read_ledger(project / "acceptance" / "ledger.jsonl").entries[-1]["files"]

    mid_byte_flip(project / "checkpoints" / "last.pt")
    forge_cache(project, "checkpoints/last.pt", old["checkpoints/last.pt"])
    assert verdict(project, environ={KEY_ENV: KEY})["verdict"] == "STALE"  # unsigned: ignored
    forge_cache(project, "checkpoints/last.pt", old["checkpoints/last.pt"],
                signature="hmac-sha256:" + "0" * 64)
    assert verdict(project, environ={KEY_ENV: KEY})["verdict"] == "STALE"  # badly signed
    # without the key a forged cache is as good as a forged ledger line (SECURITY.md) ...
    forge_cache(project, "checkpoints/last.pt", old["checkpoints/last.pt"])
    assert verdict(project)["verdict"] == "ACCEPTED"
    # ... and --rehash, which never reads the cache, still sees the bytes
    assert verdict(project, rehash=True)["verdict"] == "STALE"


@pytest.mark.parametrize("content", [
    b"", b"\x00\xff garbage", b'{"format": 1, "entries": ', b"[1, 2, 3]",
    b'{"format": 1, "algorithm": "blake3", "root": [1, 2], "clock_ns": 0, "entries": {}}',
    b'{"format": 99}',
], ids=["empty", "binary", "truncated", "a list", "another run", "another format"])
def test_a_corrupt_cache_is_ignored(pytester: pytest.Pytester, project: Path,
                                    content: bytes) -> None:
    settle()
    session(pytester, project).assert_outcomes(passed=1)
    cache_file(project).write_bytes(content)
    mid_byte_flip(project / "checkpoints" / "last.pt")
    assert fingerprint_cache.load(project, "acceptance", project,
                                  fingerprint.preferred_algorithm(), None) is None
    assert verdict(project)["verdict"] == "STALE"


def test_a_cache_with_wrong_types_is_ignored_whole(pytester: pytest.Pytester,
                                                   project: Path) -> None:
    settle()
    session(pytester, project).assert_outcomes(passed=1)
    data = json.loads(cache_file(project).read_text())
    algorithm = data["algorithm"]
    for bad in ([1, 2, 3], ["1", 2, 3, 4, 5, "0" * 64], [1, 2, 3, 4, 5, 6], [True, 2, 3, 4, 5, "0"]):
        broken = {**data, "entries": {**data["entries"], "checkpoints/a.pt": bad}}
        assert fingerprint_cache.parse(broken, project, algorithm, None) is None
    assert fingerprint_cache.parse({**data, "clock_ns": "1"}, project, algorithm, None) is None
    assert fingerprint_cache.parse(data, project, algorithm, None) is not None


def test_a_symlinked_cache_is_never_followed_read_or_written_through(
    pytester: pytest.Pytester, project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settle()
    session(pytester, project).assert_outcomes(passed=1)
    old = read_ledger(project / "acceptance" / "ledger.jsonl").entries[-1]["files"]
    mid_byte_flip(project / "checkpoints" / "last.pt")
    # a forged cache outside the run, linked in: followed, it would accept the new bytes
    forge_cache(project, "checkpoints/last.pt", old["checkpoints/last.pt"])
    outside = tmp_path_factory.mktemp("outside") / "cache.json"
    cache_file(project).rename(outside)
    cache_file(project).symlink_to(outside)
    forged = outside.read_bytes()
    assert verdict(project)["verdict"] == "STALE"
    assert outside.read_bytes() == forged  # the verdict's rewrite replaced the link
    assert not cache_file(project).is_symlink()
    # and a session replaces a link rather than writing through it
    cache_file(project).unlink()
    cache_file(project).symlink_to(outside)
    session(pytester, project)
    assert outside.read_bytes() == forged and not cache_file(project).is_symlink()


def test_a_fifo_for_the_cache_is_never_waited_on(pytester: pytest.Pytester,
                                                 project: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    session(pytester, project).assert_outcomes(passed=1)
    cache_file(project).unlink()
    os.mkfifo(cache_file(project))
    proc = subprocess.run([sys.executable, "-m", "pytest_mlgates.cli", "verdict", str(project)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_fingerprint_this_interpreter_cannot_compute_is_unchecked(
    pytester: pytest.Pytester, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line made with BLAKE3, judged where the blake3 package is missing (or a line naming
    an algorithm this version does not know): never ACCEPTED, one line saying why."""
    session(pytester, project).assert_outcomes(passed=1)
    ledger = project / "acceptance" / "ledger.jsonl"
    line = json.loads(ledger.read_bytes().splitlines()[-1])
    assert line["fingerprint_hash"] == fingerprint.preferred_algorithm()
    for algorithm, available in (("blake3", False), ("sha3-512", True)):
        ledger.write_text(json.dumps({**line, "fingerprint_hash": algorithm}) + "\n")
        monkeypatch.setattr(fingerprint, "available",
                            lambda name, ok=available: ok and name in fingerprint.ALGORITHMS)
        result = verdict(project)
        assert result["verdict"] == "UNCHECKED", result
        assert result["reason"].startswith(f"the GREEN session fingerprinted the run with "
                                           f"{algorithm}, which this interpreter cannot compute")
    assert result["reason"].endswith("compute")
    ledger.write_text(json.dumps({**line, "fingerprint_hash": "blake3"}) + "\n")
    monkeypatch.setattr(fingerprint, "available", lambda name: name == "sha256")
    assert verdict(project)["reason"].endswith("(pip install blake3)")
