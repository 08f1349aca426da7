"""What a hostile run dir costs a session: wall time and peak memory, case by case, against
a bare session of the same gate file on a healthy run.

The cases are the engine entries of the hostile corpus (``HOSTILE`` in
``tests/broken_runs.py``: FIFOs, links out, alias bombs, 5000-digit integers, list and
tuple bombs, zip and PNG bombs, ...).  Each is met alone by every built-in gate -- one
``pytest`` process per case, ``--run-dir runs/<case>``, the archive off -- and the
baseline is the same session with ``--run-dir runs/healthy``.  The process's own peak RSS
comes from ``os.wait4`` (not the whole tree's), the slowest item from its JUnit XML::

    .venv/bin/python bench/hostile.py                         # every engine entry (a few minutes)
    .venv/bin/python bench/hostile.py h_fifo_log h_yaml_bomb_config   # only these
    .venv/bin/python bench/hostile.py h_fifo_log --no-warm --healthy-run runs/mine   # a smoke run

Prints one line per case, then the worst wall time, the worst peak RSS and the slowest
single item, each against the baseline.  Exits 1 when a session crashed (an exit code
other than 0 or 1, or INTERNALERROR / a traceback in its output), hung past
``--timeout``, or ran out of the ``--limit-gb`` address space; no figure is a goal here.

The healthy run every entry is copied from is, by default, the synthetic engine run of
``tests/gate_helpers.make_run`` (the corpus tests' own; it imports torch and scikit-learn
into this process to write it); ``--healthy-run DIR`` copies a finished engine run dir
(``python -m model train``) instead -- the same files, trained for real.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS = REPO_ROOT / "tests"


def build(scratch: Path, names: list[str], healthy_run: Path | None = None) -> None:
    """The named entries (and ``healthy``) under ``scratch/runs``, copies of ``healthy_run``
    (default: a synthetic one, made here); the gate file, the conftest the corpus tests use
    (imports before the clock), and the ``src/train.py`` key_link reads."""
    sys.path[:0] = [str(TESTS), str(REPO_ROOT / "src")]
    from broken_runs import HOSTILE, build_corpus
    from test_broken_corpus import CONFTEST, gate_file_text

    unknown = [n for n in names if n not in HOSTILE]
    if unknown:
        raise SystemExit(f"hostile: no such case {unknown[0]!r} (cases: {', '.join(HOSTILE)})")
    if healthy_run is not None:  # build_corpus copies its _healthy_source, made only when missing
        if not (healthy_run / "training_results.json").is_file():
            raise SystemExit(f"hostile: --healthy-run {healthy_run} is not a finished engine run dir")
        shutil.copytree(healthy_run, scratch / "runs" / "_healthy_source",
                        ignore=shutil.ignore_patterns("*.lock"))
    build_corpus(scratch / "runs", names=["healthy", *[n for n in names if n != "healthy"]], table=HOSTILE)
    (scratch / "acc.gates.yaml").write_text(gate_file_text(title="every gate against one hostile run"))
    (scratch / "conftest.py").write_text(CONFTEST)
    (scratch / "src").mkdir(exist_ok=True)
    (scratch / "src" / "train.py").write_text("def save_checkpoint(): ...\n")


def session(scratch: Path, name: str, timeout: float, limit_gb: float) -> dict[str, object]:
    """One pytest process on ``runs/<name>``: wall s, peak RSS MiB, slowest item s, exit code."""
    junit = scratch / f"junit-{name}.xml"
    command = [sys.executable, "-m", "pytest", "acc.gates.yaml", "--run-dir", f"runs/{name}",
               "--baseline-run", "runs/healthy", "--mlgates-archive=off", "-p", "no:cacheprovider",
               "-p", "no:xdist", "-q", f"--junitxml={junit}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    limit = int(limit_gb * (1 << 30))
    # the limit is set by a launcher that then execs pytest (same pid for os.wait4)
    launcher = [sys.executable, "-c", ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_AS, "
                                       f"({limit}, {limit})); os.execv(sys.argv[1], sys.argv[1:])")]

    out_path = scratch / f"out-{name}.txt"
    with open(out_path, "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen([*launcher, *command], cwd=scratch, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = started + timeout
        hung = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                hung = True
                break
            time.sleep(0.02)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text(errors="replace")
    slowest, slowest_item = 0.0, ""
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            t = float(case.get("time") or 0)
            if t > slowest:
                slowest, slowest_item = t, case.get("name") or ""
    crashed = hung or proc.returncode not in (0, 1) or "INTERNALERROR" in text or "Traceback" in text \
        or "MemoryError" in text
    return {"name": name, "wall": wall, "rss": usage.ru_maxrss / 1024, "slowest": slowest,
            "slowest_item": slowest_item, "code": proc.returncode, "hung": hung, "crashed": crashed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help="hostile entries to run (default: all of the engine's)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a session counts as hung")
    parser.add_argument("--limit-gb", type=float, default=2.0, help="RLIMIT_AS of each session (GiB)")
    parser.add_argument("--no-warm", action="store_true", help="skip the warm-up session (a quick smoke run)")
    parser.add_argument("--healthy-run", type=Path, metavar="DIR",
                        help="copy this finished engine run dir as the healthy run (default: a synthetic one)")
    args = parser.parse_args(argv)

    sys.path[:0] = [str(TESTS)]
    from broken_runs import HOSTILE

    names = args.cases or [n for n in HOSTILE if n != "healthy"]
    with tempfile.TemporaryDirectory(prefix="mlgates-hostile-") as tmp:
        scratch = Path(tmp)
        print(f"building {len(names)} hostile run dirs and a healthy one ...", flush=True)
        build(scratch, names, args.healthy_run and args.healthy_run.resolve())
        if not args.no_warm:
            session(scratch, "healthy", args.timeout, args.limit_gb)  # warm the file cache
        base = session(scratch, "healthy", args.timeout, args.limit_gb)
        print(f"{'baseline (healthy)':34} {base['wall']:7.2f} s  {base['rss']:7.1f} MiB  "
              f"slowest item {base['slowest']:.2f} s", flush=True)
        results = []
        for name in names:
            r = session(scratch, name, args.timeout, args.limit_gb)
            results.append(r)
            flag = "  HUNG" if r["hung"] else "  CRASHED" if r["crashed"] else ""
            print(f"{name:34} {r['wall']:7.2f} s  {r['rss']:7.1f} MiB  slowest item {r['slowest']:.2f} s  "
                  f"exit {r['code']}{flag}", flush=True)
    worst_wall = max(results, key=lambda r: r["wall"])
    worst_rss = max(results, key=lambda r: r["rss"])
    worst_item = max(results, key=lambda r: r["slowest"])
    print(f"worst wall     {worst_wall['wall']:.2f} s ({worst_wall['name']}); baseline {base['wall']:.2f} s; "
          f"ratio {worst_wall['wall'] / base['wall']:.2f}")
    print(f"worst peak RSS {worst_rss['rss']:.1f} MiB ({worst_rss['name']}); baseline {base['rss']:.1f} MiB; "
          f"ratio {worst_rss['rss'] / base['rss']:.2f}")
    print(f"slowest item   {worst_item['slowest']:.2f} s ({worst_item['slowest_item']} on {worst_item['name']}); "
          f"baseline {base['slowest']:.2f} s")
    bad = [r["name"] for r in results if r["crashed"]]
    print(f"{len(results)} cases, {len(results) - len(bad)} held (no crash, no hang, within "
          f"{args.limit_gb:g} GiB of address space)")
    if bad:
        print(f"crashed or hung: {', '.join(map(str, bad))}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
