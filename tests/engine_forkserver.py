"""A pre-imported parent that forks real engine processes on request, for the fault tests.

Why it exists: ``python -m model train`` spends ~4 s importing torch, ``torch._dynamo`` and
scikit-learn before its first batch, so 20 kills and 20 resumes as fresh interpreters
would cost minutes on two cores. This process pays the imports once, runs no torch op
(so no OpenMP pool exists to be broken by ``fork``), and forks one child per request.
The child is a real engine process: it runs ``model.cli.main(argv)`` -- the same code
``python -m model train ARGV`` runs -- in its own session (process group, so a kill takes
the plot child with it), and it dies by a real SIGKILL.

Fault injection happens in the child, without touching the engine's code: it observes
the engine through public hooks (torch's global module hooks) and the calls every atomic
write and the plot child go through (``os.replace``, ``subprocess.run``), and at the
chosen occurrence it SIGKILLs its own process (group). A kill request whose moment never
comes leaves the run uninterrupted, and the reply says so (``killed: false``), so a test
can tell that its fault was never injected.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout::

    {"argv": [...], "cwd": DIR, "log": FILE, "kill": null}           # run to the end
    {"argv": [...], "cwd": DIR, "log": FILE, "kill": {"after": 0.7}}  # SIGKILL the group at 0.7 s
    {"argv": [...], "cwd": DIR, "log": FILE, "kill": {"event": "backward", "n": 12}}
    {"argv": [...], "cwd": DIR, "log": FILE, "kill": null, "count": FILE}  # write event counts
    -> {"returncode": 0 | 1 | -9, "killed": bool, "timed_out": bool, "seconds": 1.2}

Events (``n`` counts from 1, over the whole process): ``forward`` (a module called in
training mode), ``backward`` (a module's gradients computed, mid backward pass),
``checkpoint_write`` (a ``.pt`` temp file written and fsync'd, not yet renamed),
``log_write`` (the same for training_log.csv, metric_history.json,
training_results.json), ``plot`` (``n`` is a delay in milliseconds after the plot child
starts; the engine and the plot child are killed together).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from typing import Any

LOG_FILES = ("training_log.csv", "metric_history.json", "training_results.json")
TIMEOUT_S = 120.0


def _temp_target(src: Any) -> str:
    """``.last.pt.abc123.tmp`` -> ``last.pt`` (the engine's temp-file naming), else ''."""
    name = os.path.basename(os.fspath(src))
    if not (name.startswith(".") and name.endswith(".tmp")):
        return ""
    return name[1:].rsplit(".", 2)[0]


class Injector:
    """Counts the engine's events in this (child) process; SIGKILLs it at the chosen one."""

    def __init__(self, event: str | None, n: int, count_file: str | None) -> None:
        self.event, self.n, self.count_file = event, n, count_file
        self.counts: dict[str, float] = {"forward": 0, "backward": 0, "checkpoint_write": 0,
                                         "log_write": 0, "plot": 0}
        self.started = time.monotonic()

    def hit(self, event: str) -> None:
        self.counts[event] += 1
        if event == self.event and self.counts[event] == self.n and event != "plot":
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        import subprocess

        import torch.nn.modules.module as module_hooks

        def forward_pre_hook(module: Any, args: Any) -> None:
            if module.training:
                self.hit("forward")

        def backward_hook(module: Any, grad_input: Any, grad_output: Any) -> None:
            self.hit("backward")

        if self.event in ("forward", None):
            module_hooks.register_module_forward_pre_hook(forward_pre_hook)
        if self.event in ("backward", None):
            module_hooks.register_module_full_backward_hook(backward_hook)

        real_replace = os.replace

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            target = _temp_target(src)
            if target.endswith(".pt"):
                self.hit("checkpoint_write")
            elif target in LOG_FILES:
                self.hit("log_write")
            real_replace(src, dst, *args, **kwargs)

        os.replace = replace  # type: ignore[assignment]

        real_run = subprocess.run

        def run(args: Any, *a: Any, **kw: Any) -> Any:
            if "model.plots" in list(map(str, args)):
                self.counts["plot"] += 1
                self.counts["plot_started_s"] = round(time.monotonic() - self.started, 3)
                if self.event == "plot":
                    proc = subprocess.Popen(args)  # the real plot child, in our process group
                    time.sleep(self.n / 1000.0)
                    os.killpg(0, signal.SIGKILL)
                    proc.wait()
            return real_run(args, *a, **kw)

        subprocess.run = run  # type: ignore[assignment]

    def write_counts(self) -> None:
        if self.count_file:
            with open(self.count_file, "w", encoding="utf-8") as fh:
                json.dump(self.counts, fh)


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become a process group, run the engine, exit with its code."""
    code = 70
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # not the request pipe
        os.close(devnull)
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.chdir(request["cwd"])
        kill = request.get("kill") or {}
        injector = Injector(kill.get("event"), int(kill.get("n", 0)), request.get("count"))
        if injector.event is not None or injector.count_file:
            injector.install()
        from model.cli import main

        try:
            code = main(list(request["argv"]))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        injector.write_counts()
    except BaseException:  # noqa: BLE001 -- reported through the log file and exit code 70
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(request)
    after = (request.get("kill") or {}).get("after")
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        elapsed = time.monotonic() - started
        if (after is not None and elapsed >= after) or elapsed > TIMEOUT_S:
            timed_out = elapsed > TIMEOUT_S
            try:
                os.killpg(pid, signal.SIGKILL)  # the engine and any child it started
            except ProcessLookupError:  # so early that it is not a group leader yet
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.001)
    code = os.waitstatus_to_exitcode(status)
    return {"returncode": code, "killed": code == -signal.SIGKILL and not timed_out,
            "timed_out": timed_out, "seconds": round(time.monotonic() - started, 3)}


def main() -> None:
    # everything the engine imports, paid once here; no torch op runs in this process
    import sklearn.datasets  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401  -- the optimizer imports it on first use (~1 s)

    import model.cli
    import model.data
    import model.train  # noqa: F401

    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if line.strip():
            out.write(json.dumps(_serve(json.loads(line))) + "\n")
            out.flush()


if __name__ == "__main__":
    main()


# --------------------------------------------------------------------------- the test side


class ForkServer:
    """The test's handle on a running fork server (``with ForkServer() as fs: fs.run(...)``)."""

    def __init__(self, cwd: str) -> None:
        import subprocess

        self.cwd = cwd
        # one thread per engine: libgomp's pool does not survive fork (children run ~50x
        # slower), and on a shared 2-core machine one thread each is the fair share anyway
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, __file__], cwd=cwd, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ready = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not ready.strip():
            raise RuntimeError(f"fork server did not start (exit {self.proc.wait()})")

    def run(self, argv: list[str], log: str, kill: dict[str, Any] | None = None,
            count: str | None = None) -> dict[str, Any]:
        request = {"argv": argv, "cwd": self.cwd, "log": log, "kill": kill, "count": count}
        self.proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        reply = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not reply.strip():
            raise RuntimeError(f"fork server died (exit {self.proc.wait()})")
        return json.loads(reply)

    def close(self) -> None:
        """Stop the server (it holds no state worth a clean interpreter exit)."""
        self.proc.kill()
        self.proc.wait(timeout=30)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe:
                pipe.close()

    def __enter__(self) -> ForkServer:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
