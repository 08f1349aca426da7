"""What the engine's writer process holds to write a big checkpoint, measured in one run.

The writer process (src/model/writer.py) receives the tensor bytes through a pipe and
writes ``torch.save``'s format from views into them: its peak memory should be about one
checkpoint, not two (a joined archive) or three (zipfile into a buffer). Printed, over
``--epochs`` jobs of the same checkpoint: the writer's peak resident memory (``VmHWM``)
over the checkpoint's size, how long the training thread is held by each hand-over, and, for scale, how long ``torch.save`` into a
buffer takes on the training thread (what the thread writer does). The file is loaded
back with ``weights_only=True`` and compared tensor by tensor.

    python bench/writer_memory.py [--mib 200] [--epochs 5]

Goal: writer peak <= 1.1 x the checkpoint + 20 MiB.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200, help="checkpoint size in MiB")
    parser.add_argument("--epochs", type=int, default=5, help="jobs, one an epoch")
    args = parser.parse_args()

    import torch

    from model.writer import ProcessWriter

    per_tensor = max(1, args.mib * 2**20 // 4 // 10)
    generator = torch.Generator().manual_seed(0)
    ckpt = {"model": {f"layer{i}.weight": torch.randn(per_tensor, generator=generator)
                      for i in range(10)},
            "optimizer": {"step": torch.tensor(7.0)}, "epoch": 1}
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "last.pt"
        writer = ProcessWriter()
        writer.submit({"epoch": 0}, [Path(tmp) / "warm.pt"], [])  # the writer is up, as it
        writer.flush()  # is when an epoch of training has gone by
        hand_overs, writes = [], []
        for _ in range(args.epochs):  # one job per epoch; the peak must not grow with them
            started = time.perf_counter()
            writer.submit(ckpt, [target], [])
            hand_overs.append(time.perf_counter() - started)
            writer.flush()
            writes.append(time.perf_counter() - started)
        writer.close()
        size_mib = target.stat().st_size / 2**20
        loaded = torch.load(target, weights_only=True)
        same = all(torch.equal(loaded["model"][k], v) for k, v in ckpt["model"].items())
    buffer = io.BytesIO()
    started = time.perf_counter()
    torch.save(ckpt, buffer)
    torch_save = time.perf_counter() - started

    peak_mib = (writer.peak_rss_kib or 0) / 1024
    goal = 1.1 * size_mib + 20
    print(f"writer process, a {size_mib:.0f} MiB checkpoint (10 tensors) written {args.epochs} times")
    print(f"  writer peak memory {peak_mib:8.1f} MiB = {peak_mib / size_mib:.2f} x the checkpoint"
          f"  (goal <= 1.1 x + 20 MiB = {goal:.0f}) {'OK' if peak_mib <= goal else 'MISSED'}")
    later = statistics.median(hand_overs[1:]) if len(hand_overs) > 1 else float("nan")
    print(f"  training thread held by the hand-over: {later:.3f} s (median after the first job; "
          f"the first, which pages in the writer's buffer, {hand_overs[0]:.3f} s); torch.save into "
          f"a buffer on the training thread: {torch_save:.3f} s")
    print(f"  written and fsync'd {statistics.median(writes):.3f} s after the hand-over began "
          f"(median; the next epoch trains meanwhile)")
    print(f"  loaded back with weights_only=True: {'equal' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
