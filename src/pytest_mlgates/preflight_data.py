"""The preflight checks of the data: one timed pass over each split's loader, and what it shows.

:func:`scan_split` reads every batch of a split's real loader once (each batch within the
time budget; a hung DataLoader is a failed check, not a frozen terminal) and keeps what the
data checks read: non-finite samples, constant image bands, per-feature ranges, label
counts, the first batches (for the model checks) and up to ``_PROBE_SAMPLES`` images for the
shortcut probe.  The checks here -- ``loaders_first_batch``, ``no_nan_or_inf``,
``no_missing_band``, ``split_integrity``, ``classes_in_every_split``, ``shortcut_probe`` --
are functions of a :class:`~pytest_mlgates.preflight_contract.Suite` that
``preflight_checks.PreflightSuite`` runs in dependency order.

numpy is imported inside the functions that need it.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_mlgates.preflight_contract import CheckFailed, CheckSkipped, Suite, first, gist

__all__ = ["SplitScan", "classes_in_every_split", "loaders_first_batch", "no_missing_band", "no_nan_or_inf",
           "scan_split", "shortcut_probe", "split_integrity"]

#: Images kept per split for the shortcut probe (enough for a cross-validated AUC).
_PROBE_SAMPLES = 4000


@dataclass
class SplitScan:

    samples: int = 0
    batches: int = 0
    nonfinite: list[int] = field(default_factory=list)  # positions, in loader order
    dead_band: list[int] = field(default_factory=list)  # positions of images with a constant band
    labels: dict[int, int] = field(default_factory=dict)  # class -> count
    bad_labels: list[Any] = field(default_factory=list)
    feature_min: Any = None  # tabular: per-feature min / max
    feature_max: Any = None
    images: list[Any] = field(default_factory=list)  # up to _PROBE_SAMPLES (N, C, H, W) arrays
    image_labels: list[Any] = field(default_factory=list)
    truncated: bool = False


def loaders_first_batch(suite: Suite, timeout: float | None = None, max_samples: int = 200_000) -> str:
    budget = suite.timeout if timeout is None else float(timeout)
    sizes = []
    for split, loader in suite.subject.loaders.items():
        scan = scan_split(suite, split, loader, budget, int(max_samples))
        if scan.samples == 0:
            raise CheckFailed(f"{suite.label}.loaders[{split!r}] gave no samples")
        more = f", first {scan.samples} checked" if scan.truncated else ""
        sizes.append(f"{split} {scan.samples}{more}")
    return f"every batch arrived within {budget:g} s: " + ", ".join(sizes)


def scan_split(suite: Suite, split: str, loader: Any, budget: float, max_samples: int) -> SplitScan:
    """One pass over a loader (each batch within ``budget`` s), keeping what checks need."""
    import numpy as np

    scan = SplitScan()
    kept: list[tuple[Any, Any]] = []
    where = f"{suite.label}.loaders[{split!r}]"
    for index, batch in enumerate(_batches_within(loader, budget, where)):
        x, y = _pair(batch, where, index)
        xs = _arrays(x)
        y_np = _as_numpy(y)
        if y_np is None or y_np.ndim != 1:
            raise CheckFailed(f"{where} batch {index}: labels of shape "
                              f"{getattr(y, 'shape', type(y).__name__)}; needs a 1-d tensor of class indices")
        n = len(y_np)
        if any(len(a) != n for a in xs.values()):
            raise CheckFailed(f"{where} batch {index}: {n} labels for inputs of "
                              f"{[a.shape[0] for a in xs.values()]} samples")
        if len(kept) < 64:
            kept.append((x, y))
        if y_np.dtype.kind not in "iu" and not (y_np.dtype.kind == "f" and np.all(np.mod(y_np, 1) == 0)):
            scan.bad_labels.extend(y_np[:3].tolist())
        else:
            values, counts = np.unique(y_np.astype(np.int64), return_counts=True)
            for v, c in zip(values.tolist(), counts.tolist()):
                scan.labels[v] = scan.labels.get(v, 0) + c
        for name, a in xs.items():
            if a.dtype.kind != "f":
                continue
            flat = a.reshape(n, -1)
            bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
            scan.nonfinite.extend((scan.samples + bad).tolist())
            if a.ndim == 4 and name == "x":
                with np.errstate(invalid="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN band
                    bands = a.reshape(n, a.shape[1], -1)
                    dead = ~(np.nanmax(bands, axis=2) > np.nanmin(bands, axis=2))
                scan.dead_band.extend((scan.samples + np.flatnonzero(dead.any(axis=1))).tolist())
                room = _PROBE_SAMPLES - sum(len(i) for i in scan.images)
                if room > 0:
                    scan.images.append(a[:room])
                    scan.image_labels.append(y_np[:room])
            elif a.ndim == 2 and name == "x":
                with np.errstate(invalid="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column
                    lo, hi = np.nanmin(a, axis=0), np.nanmax(a, axis=0)
                scan.feature_min = lo if scan.feature_min is None else np.fmin(scan.feature_min, lo)
                scan.feature_max = hi if scan.feature_max is None else np.fmax(scan.feature_max, hi)
        scan.samples += n
        scan.batches += 1
        if scan.samples >= max_samples:
            scan.truncated = True
            break
    suite.scans[split] = scan
    suite.kept[split] = kept
    return scan


def _splits_report(suite: Suite, field_name: str, what: str) -> str | None:
    """None when no split has a bad sample; else raise one line: how many, where."""
    parts, total, seen = [], 0, 0
    for split, scan in suite.scans.items():
        hits = getattr(scan, field_name)
        seen += scan.samples
        if hits:
            total += len(hits)
            parts.append(f"{split}: {len(hits)}, first at positions {first(sorted(hits))}")
    if total:
        raise CheckFailed(f"{total} of {seen} samples {what} ({'; '.join(parts)}; positions in loader order)")
    return None


def no_nan_or_inf(suite: Suite) -> str:
    _splits_report(suite, "nonfinite", "with NaN/Inf")
    seen = sum(s.samples for s in suite.scans.values())
    return f"all {seen} samples finite"


def no_missing_band(suite: Suite) -> str:
    import numpy as np

    _splits_report(suite, "dead_band", "with a constant (missing) band")
    train = suite.scans.get("train")
    if train is not None and train.feature_min is not None:
        dead = ~(train.feature_max > train.feature_min)
        # A feature constant in every split (a digit's corner pixel) carries nothing but is
        # no fault; one constant over train that varies elsewhere is a dead input in the
        # data the model learns from.
        varies = np.zeros_like(dead)
        for split, scan in suite.scans.items():
            if split != "train" and scan.feature_min is not None and len(scan.feature_min) == len(dead):
                varies |= (scan.feature_max > scan.feature_min) | (scan.feature_min != train.feature_min)
        bad = np.flatnonzero(dead & varies)
        if len(bad):
            others = ", ".join(s for s in suite.scans if s != "train")
            raise CheckFailed(f"{len(bad)} of {len(dead)} features constant over the train split but not in "
                              f"{others}: columns {first(bad.tolist())} (a dead input in training)")
        note = f"; {int(dead.sum())} constant in every split" if dead.any() else ""
        return f"{len(dead)} features: none constant over train alone{note}"
    seen = sum(s.samples for s in suite.scans.values())
    return f"every band of all {seen} samples varies"


def split_integrity(suite: Suite) -> str:
    import numpy as np

    ids, groups = suite.subject.sample_ids, suite.subject.groups
    if ids is None and groups is None:
        raise CheckSkipped(f"needs {suite.label}.sample_ids (and optionally groups): "
                           "{split: ids} to check that no sample is in two splits")
    problems = []
    counts = []
    for kind, table in (("sample ids", ids), ("group ids", groups)):
        if table is None:
            continue
        names = list(table)
        values = {s: np.unique(np.asarray(list(table[s]))) for s in names}
        counts.append(f"{sum(len(v) for v in values.values())} {kind}")
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                shared = np.intersect1d(values[a], values[b])
                if len(shared):
                    problems.append(f"{len(shared)} {kind} in {a} and {b} {first(shared.tolist())}")
    if problems:
        raise CheckFailed("; ".join(problems))
    return ", ".join(counts) + ", each in one split"


def classes_in_every_split(suite: Suite) -> str:
    k = suite.subject.num_classes
    missing = []
    for split, scan in suite.scans.items():
        if scan.bad_labels:
            raise CheckFailed(f"{suite.label}.loaders[{split!r}]: labels {first(scan.bad_labels, 3)} are not "
                              "class indices; needs integers 0..num_classes-1")
        outside = sorted(c for c in scan.labels if not 0 <= c < k)
        if outside:
            raise CheckFailed(f"{suite.label}.loaders[{split!r}]: label {outside[0]} outside 0..{k - 1} "
                              f"(num_classes {k})")
        absent = [c for c in range(k) if c not in scan.labels]
        if absent:
            missing.append(f"{split} lacks class {', '.join(map(str, absent))}")
    if missing:
        raise CheckFailed("; ".join(missing))
    return f"all {k} classes in every split ({', '.join(suite.scans)})"


def shortcut_probe(suite: Suite, max_auc: float = 0.65, radius: float | None = None) -> str:
    import numpy as np

    from pytest_mlgates.probes import DEFAULT_RADIUS, core_mask, core_probe_auc

    train = suite.scans.get("train")
    if train is None or not train.images:
        raise CheckSkipped("no central crop to probe: the train inputs are not images (N, C, H, W)")
    images = np.concatenate(train.images)
    labels = np.concatenate(train.image_labels)
    r = float(DEFAULT_RADIUS if radius is None else radius)
    h, w = images.shape[2], images.shape[3]
    covered = float(core_mask(h, w, r).mean())
    if covered > 0.25:
        raise CheckSkipped(f"a core of radius {r:g} covers {covered:.0%} of a {h}x{w} image: "
                           "not a central crop")
    auc = core_probe_auc(images, labels, radius=r, seed=0)
    text = f"central-crop probe AUC = {auc:.3f} (radius {r:g}, {len(labels)} train images)"
    if not auc <= max_auc:
        raise CheckFailed(f"{text}; needs <= {max_auc:g}: the image core alone predicts the class")
    return text


# ---------------------------------------------------------------------- reading a loader


def _pair(batch: Any, where: str, index: int) -> tuple[Any, Any]:
    """A batch as (x, y); one line naming what it is otherwise."""
    if isinstance(batch, Mapping):
        keys = ", ".join(map(str, list(batch)[:6]))
        raise CheckFailed(f"{where} batch {index}: a dict with keys [{keys}]; needs (x, y) pairs "
                          "(wrap the loader to yield (inputs, labels))")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = f"a {len(batch)}-tuple" if isinstance(batch, (tuple, list)) else f"a {type(batch).__name__}"
        raise CheckFailed(f"{where} batch {index}: {got}; needs (x, y) pairs")
    return batch[0], batch[1]


def _as_numpy(value: Any) -> Any:
    import numpy as np

    detach = getattr(value, "detach", None)
    if callable(detach):
        value = detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception:  # noqa: BLE001 - not array-like
        return None


def _arrays(x: Any) -> dict[str, Any]:
    """The inputs of a batch as numpy arrays: ``{"x": array}`` or one per key of a dict."""
    if isinstance(x, Mapping):
        out = {str(k): _as_numpy(v) for k, v in x.items()}
        return {k: v for k, v in out.items() if v is not None and v.ndim >= 1}
    array = _as_numpy(x)
    if array is None or array.ndim < 1:
        raise CheckFailed(f"inputs of type {type(x).__name__} are not an array or tensor")
    return {"x": array}




_DONE = object()


def _batches_within(loader: Any, timeout: float, where: str) -> Iterator[Any]:
    """The loader's batches, each within ``timeout`` s, or a :class:`CheckFailed` naming the
    batch that did not come (a hung DataLoader is a failed check, not a frozen terminal).

    The loader runs in a daemon thread that hands batches over one at a time; a loader that
    hangs is left behind in that thread.
    """
    handover: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in loader:
                while not stop.is_set():
                    try:
                        handover.put(("batch", batch), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handover.put(("done", _DONE))
        except BaseException as exc:  # noqa: BLE001 - reported in the consumer's thread
            handover.put(("error", exc))

    thread = threading.Thread(target=produce, name="mlgates-preflight-loader", daemon=True)
    thread.start()
    index = 0
    try:
        while True:
            try:
                kind, item = handover.get(timeout=timeout)
            except queue.Empty:
                raise CheckFailed(f"{where}: batch {index} did not arrive within {timeout:g} s") from None
            if kind == "done":
                return
            if kind == "error":
                raise CheckFailed(f"{where} batch {index}: {gist(item)}")
            yield item
            index += 1
    finally:
        stop.set()

