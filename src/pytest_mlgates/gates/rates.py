"""A rate weighed by its counts: ``class_recall``'s ``confidence:`` (SPEC "Honest numbers").

A recall of 1.0 on 3 samples is not evidence that the recall is above 0.8: with
``confidence: 0.95`` the floor applies to the lower end of the two-sided 95%
Clopper-Pearson interval of ``tp / n`` (0.292 for 3 of 3), where ``n`` is the class's
number of validation samples, read from the log (``val_support_<class>``, written by the
bundled engine) at the recall's own row, and ``tp = round(recall * n)``.

Where the log lacks a class's count and the user names their model and data (the
``mlgates_subject`` fixture with a ``val`` loader), the counts are recomputed
(:func:`recount`): ``n`` = the val samples of the class's label, ``tp`` = those the
checkpoint behind the judged row (``at: final``: the final/last checkpoint; ``at: best``:
the best) predicts right, by argmax.  They are used only where they explain the logged
recall (``|tp / n - recall| <= 0.5 / n``).  A run whose counts are neither logged nor
recomputable, or do not explain the recall, is UNVERIFIED in one line
(:class:`~pytest_mlgates.errors.Unverified`) naming every column at fault: the gate does
not guess a sample size.
"""

from __future__ import annotations

import math
from typing import Any

from pytest_mlgates.errors import MlgatesError, RunDirError, Unverified
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates._common import fmt, fmt_threshold, row_where
from pytest_mlgates.rundir import Run


def support_name(column: str) -> str:
    """The count column of a rate column: ``val_recall_3`` -> ``val_support_3`` (``recall``
    -> ``support``, first occurrence); ``<column>_support`` for a column without ``recall``."""
    return column.replace("recall", "support", 1) if "recall" in column else f"{column}_support"


def _support_column(run: Run, name: str, ctx: GateContext) -> tuple[str | None, str]:
    """(the log's count column of rate column ``name``, or None; the name looked for first).
    A gate file's ``metrics:`` map counts too: with ``val_recall_a: eval_recall_a`` the
    count is what ``val_support_a`` maps to, else ``eval_support_a``."""
    wanted: list[str] = []
    for canonical, real in ctx.metric_aliases.items():
        if real == name and canonical != name:
            count = support_name(canonical)
            wanted.append(ctx.metric_aliases.get(count, count))
    wanted.append(support_name(name))
    found = next((w for w in wanted if w in run.log), None)
    return found, wanted[0]


ADVICE = ("to weigh them, log val_support_<class> beside each recall, or provide the mlgates_subject "
          "fixture with a 'val' loader to recompute the counts from the run's checkpoint")


def weigh(run: Run, cells: list[tuple[str, int]], floor: float, confidence: float, ctx: GateContext,
          tag: str | None, classes: int, at: str = "final") -> GateResult:
    """GREEN when the ``confidence`` lower bound of every cell's rate (``(column, row)``) is
    above ``floor``; the line names the weakest bound with its counts (and, where they were
    recomputed, from what)."""
    from pytest_mlgates.stats import rate_lower_bound, successes

    log = run.log
    src = run.shown(log.source)
    level = f"{fmt_threshold(round(confidence * 100, 6))}%"
    needs = f"> {fmt_threshold(floor)}"
    problems: list[str] = []
    uncounted: list[tuple[str, int]] = []  # cells whose log holds no count column
    unlogged: list[str] = []  # what the log lacks, one problem per column
    counted: list[tuple[str, int, int, int, str]] = []  # (column, row, k, n, where the counts came from)
    for name, row in cells:
        value = float(log.array(name)[row])
        where = row_where(log, row, tag)
        column, wanted = _support_column(run, name, ctx)
        if column is None:
            uncounted.append((name, row))
            if not any(p.startswith(f"{name} = ") for p in unlogged):
                unlogged.append(f"{name} = {fmt(value)} {where}: no column {wanted} in {src} (the number of "
                                f"samples behind the rate), so its {level} lower bound cannot be computed")
            continue
        held = log.held(column)
        count = float(log.array(column)[row]) if held is None or bool(held[row]) else math.nan
        if not (math.isfinite(count) and count >= 0 and count.is_integer()):
            problems.append(f"{column} = {fmt(count)} {where} is not a count of samples, so the {level} "
                            f"lower bound of {name} cannot be computed")
            continue
        n = int(count)
        k = successes(value, n)
        if k is None:
            problems.append(f"{name} = {fmt(value)} {where} is not a whole number of the {n} samples of "
                            f"{column} ({value * n:.2f} of {n}), so its {level} lower bound cannot be computed")
            continue
        counted.append((name, row, k, n, ""))
    if uncounted:
        found = recount(run, uncounted, ctx, tag, at)
        if isinstance(found, str):  # not recomputable: what the log lacks, and why
            problems.append("; ".join([*unlogged, found]))
        else:
            for (name, row), got in zip(uncounted, found):
                if isinstance(got, str):
                    problems.append(got)
                else:
                    counted.append((name, row, *got))
    if problems:
        raise Unverified("; ".join(problems))
    weakest: tuple[float, str, int, int, int, str] | None = None  # (bound, column, row, k, n, source)
    for name, row, k, n, source in counted:
        bound = rate_lower_bound(k, n, confidence)
        if weakest is None or bound < weakest[0]:
            weakest = (bound, name, row, k, n, source)
    assert weakest is not None  # cells is not empty
    bound, name, row, k, n, source = weakest
    rate = fmt(float(log.array(name)[row]))
    where = row_where(log, row, tag)
    shown = f"{fmt(bound)} ({k}/{n})"
    counts = f"({k}/{n}, counts recomputed from {source})" if source else f"({k}/{n})"
    threshold = f"{needs} ({level} lower bound)"
    if bound > floor:
        return GateResult(True, shown, threshold,
                          f"lowest {level} lower bound over {classes} classes = {fmt(bound)}: "
                          f"{name} = {rate} {counts} {where}; needs {needs}")
    note = " (no sample of the class)" if n == 0 else ""
    return GateResult(False, shown, threshold,
                      f"{name} = {rate} {counts} {where}, {level} lower bound {fmt(bound)}{note}; needs {needs}")


# --------------------------------------------------------------------------- recomputed counts


def _class_of(name: str, ctx: GateContext) -> str | None:
    """The class a recall column is of: ``val_recall_3`` -> ``3``, ``eval_recall_cat`` (or
    what the gate file maps ``val_recall_cat`` to) -> ``cat``; None for a column that names
    no class."""
    canonical = next((c for c, real in ctx.metric_aliases.items() if real == name and c != name), name)
    for column in (canonical, name):
        if "recall_" in column:
            return column.split("recall_", 1)[1] or None
    return None


def _label_of(name: str, ctx: GateContext, subject: Any, run: Run, split: str) -> int | str:
    """The label of recall column ``name``: its class when that is a whole number, else the
    class's position in ``subject.class_names``, else in the class names the run records;
    or the one-line problem."""
    cls = _class_of(name, ctx)
    if cls is None:
        return (f"{name}: names no class (val_recall_<class>), so its counts cannot be recomputed on {split}; "
                f"log {support_name(name)}")
    if cls.isascii() and cls.isdigit():
        return int(cls)
    names = list(subject.class_names or ()) or (run.recorded_class_names or [])
    if cls in names:
        return names.index(cls)
    support = support_name(name)
    if names:
        return (f"{name}: class {cls!r} is not a label number and not among the class names "
                f"({', '.join(names)[:120]}), so its counts cannot be recomputed on {split}; log {support}")
    return (f"{name}: class {cls!r} is not a label number, and neither the run nor {subject.name}.class_names "
            f"names the classes in label order, so its counts cannot be recomputed on {split}; give "
            f"{subject.name} class_names=[...], or log {support}")


def _checkpoint_for(run: Run, at: str) -> tuple[str, str] | str:
    """(name, how messages show it) of the checkpoint behind the rows a gate reads ``at``:
    the final (else last) checkpoint, or the best; or why there is none."""
    first: str | None = None
    for name in (("final", "last") if at == "final" else ("best",)):
        try:
            path = run.checkpoint_path(name)
        except RunDirError as exc:
            first = first or str(exc)
            continue
        if path.is_file():
            return name, run.checkpoint_shown(name)
        first = first or f"{run.shown(path)}: not found"
    return f"no {at} checkpoint to recompute the counts from ({first})"


def recount(run: Run, cells: list[tuple[str, int]], ctx: GateContext, tag: str | None,
            at: str) -> str | list[tuple[int, int, str] | str]:
    """The counts of each cell whose log lacks them, recomputed from the checkpoint behind
    its row on the subject's ``val`` split: per cell ``(k, n, where they came from)`` or
    the one-line problem (no label for its class, a logged recall the checkpoint does not
    give); or, where nothing can be recomputed, why (and how to make it verifiable)."""
    try:
        subject = ctx.subject()
    except MlgatesError as exc:  # a fixture that fails, or one item over several run dirs (across_runs)
        return f"counts not recomputed: {exc}"
    if subject is None:
        return ADVICE
    loaders = getattr(subject, "loaders", None) or {}
    if "val" not in loaders:
        return (f"{subject.name} has no 'val' loader (its loaders: {', '.join(map(str, loaders))[:120]}) to "
                "recompute the counts from; give it one, or log val_support_<class> beside each recall")
    if at not in ("final", "best"):
        return (f"counts are recomputed from one checkpoint, for at: final or at: best, not at: {at}; "
                "log val_support_<class> beside each recall to weigh every row")
    split = f"{subject.name}'s val split"
    chosen = _checkpoint_for(run, at)
    if isinstance(chosen, str):
        return f"{chosen}; log val_support_<class> beside each recall"
    name, shown = chosen
    log = run.log
    labels: list[int | str] = [_label_of(column, ctx, subject, run, split) for column, _ in cells]
    if all(isinstance(label, str) for label in labels):
        return [str(label) for label in labels]
    try:
        ckpt = run.checkpoint(name)
        epoch = run.log_epoch_of(ckpt)
        if epoch is not None and log.index == "epoch":
            for _, row in cells:
                if float(log.labels[row]) != float(epoch):
                    return (f"{shown} holds epoch {epoch}, not the judged {row_where(log, row, tag)[3:]}, so it "
                            f"cannot give the counts behind the logged recall; log val_support_<class>")
        from pytest_mlgates.gates.rebuild import checkpoint_model

        model, _ = checkpoint_model(run, ckpt, {}, ctx, shown)
        right, total = val_counts(model, subject)
    except MlgatesError as exc:
        return f"counts not recomputed: {exc}"
    out: list[tuple[int, int, str] | str] = []
    for (column, row), label in zip(cells, labels):
        if isinstance(label, str):
            out.append(label)
            continue
        n = total.get(label, 0)
        k = right.get(label, 0)
        value = float(log.array(column)[row])
        if not n or not abs(k / n - value) <= 0.5 / n:
            got = f"{k}/{n} = {fmt(k / n)}" if n else f"no sample of label {label}"
            out.append(f"{column} = {fmt(value)} {row_where(log, row, tag)} is not what {shown} gives on {split} "
                       f"({got}), so the counts behind it are unknown")
            continue
        out.append((k, n, f"{shown} on {split}"))
    return out


def val_counts(model: Any, subject: Any) -> tuple[dict[int, int], dict[int, int]]:
    """(right, total) per label over the subject's ``val`` loader: ``total[c]`` its samples
    of label ``c``, ``right[c]`` those ``model`` predicts as ``c`` (argmax of its output),
    in eval mode under ``torch.no_grad``.  One line (GateFailure) for batches, labels or
    outputs that are not what a classifier gives."""
    import torch

    from pytest_mlgates.errors import GateFailure
    from pytest_mlgates.models import forward, gist, to_device_of

    where = f"{subject.name}.loaders['val']"
    labels: list[Any] = []
    hits: list[Any] = []
    model.eval()
    try:
        with torch.no_grad():
            for batch in subject.loaders["val"]:
                if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                    raise GateFailure(f"{where}: batches are not (x, y) pairs")
                x, y = batch
                y = torch.as_tensor(y).cpu()
                if y.ndim != 1 or y.dtype.is_floating_point or y.dtype.is_complex or (y.numel() and int(y.min()) < 0):
                    raise GateFailure(f"{where}: labels are not a vector of class numbers "
                                      f"(shape {tuple(y.shape)}, {y.dtype})")
                logits = forward(model, to_device_of(x, model))
                if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != y.shape[0]:
                    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                    raise GateFailure(f"the model's output on {where} is not (batch, classes) ({shape}) "
                                      f"for {y.shape[0]} labels")
                y = y.long()
                labels.append(y)
                hits.append(y[logits.argmax(dim=1).cpu() == y])
    except MlgatesError:
        raise
    except Exception as exc:  # noqa: BLE001 - the loader and the model are user code
        raise GateFailure(f"{where}: {exc.__class__.__name__}: {gist(exc)}") from None
    every = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    size = int(every.max()) + 1 if every.numel() else 0
    total = torch.bincount(every, minlength=size).tolist()
    right = torch.bincount(torch.cat(hits), minlength=size).tolist() if hits else [0] * size
    return dict(enumerate(right)), dict(enumerate(total))
