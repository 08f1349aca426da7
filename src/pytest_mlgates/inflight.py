"""In-flight gates: the engine asks, after every epoch, whether the run is already doomed.

The config names a gate file (``gates.inflight``); the engine builds a hook once, before
training, and calls it after each epoch ``>= gates.after_epoch``, once ``last.pt`` and
the logs of that epoch are on disk::

    >>> hook = make_hook(config, "acceptance/inflight.gates.yaml")
    >>> hook(Path("runs/default"), 1)
    'criterion every_best_checkpoint: best_val_auroc.pt missing ...'

A returned string is the reason a RED criterion gives; the engine stops with status
``aborted_by_gate`` and that reason. ``None`` means every in-flight criterion is GREEN.

Criteria are parsed by the same ``collect.parse_gate_file`` and evaluated by the same
``expr``/``gates`` code as ``pytest acceptance/``: an in-flight verdict and the later
acceptance verdict cannot disagree about what a criterion means.

Which criteria run in flight: those that say ``stage: inflight``; when none in the file
does, every criterion of the file except ``stage: preflight`` ones and plain truths (a
file named by ``gates.inflight`` is an in-flight file).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["InflightGateWarning", "inflight_criteria", "make_hook"]

Hook = Callable[[Path, int], "str | None"]


class InflightGateWarning(UserWarning):
    """A criterion that could not be evaluated this epoch (it does not stop the run)."""


def inflight_criteria(document: Any) -> list[Any]:
    """The criteria of a parsed gate file that the engine evaluates during training."""
    marked = [c for c in document.criteria if c.stage == "inflight"]
    if marked:
        return marked
    return [c for c in document.criteria if c.stage != "preflight" and c.kind != "truth"]


def make_hook(config: Any, gates_file: str | Path) -> Hook:
    """Parse `gates_file` now (a broken file stops the run before it starts, with one
    line naming file, line and column) and return the per-epoch hook."""
    from model.config import ConfigError
    from pytest_mlgates.collect import parse_gate_file
    from pytest_mlgates.errors import MlgatesError

    path = Path(gates_file)
    try:
        document = parse_gate_file(path, plan=path.name.endswith("-PLAN.md"), display=str(gates_file))
    except MlgatesError as err:
        raise ConfigError(f"gates.inflight: {err}") from None
    if document is None:
        raise ConfigError(f"gates.inflight: {gates_file}: a plan without must_haves front matter has no criteria")
    criteria = inflight_criteria(document)
    if not criteria:
        warnings.warn(f"gates.inflight: {gates_file} has no criteria to evaluate during training",
                      InflightGateWarning, stacklevel=2)
    return _InflightHook(document, criteria, rootdir=Path.cwd())


class _InflightHook:
    """Evaluates the in-flight criteria on the run dir as it is after an epoch."""

    def __init__(self, document: Any, criteria: list[Any], rootdir: Path) -> None:
        self.document = document
        self.criteria = criteria
        self.rootdir = rootdir
        self._warned: set[tuple[str, str]] = set()

    def __call__(self, run_dir: Path, epoch: int) -> str | None:
        from pytest_mlgates.errors import MlgatesError
        from pytest_mlgates.rundir import open_run

        try:
            run = open_run(run_dir)  # fresh every epoch: the log has grown
        except MlgatesError as err:
            self._note("run", f"after epoch {epoch}: {err}")
            return None
        for criterion in self.criteria:
            try:
                passed, message = self._evaluate(criterion, run)
            except MlgatesError as err:
                # not evaluable (yet): say so in train.log; acceptance will still judge it
                self._note(criterion.name, f"after epoch {epoch}: criterion {criterion.name} not evaluated: {err}")
                continue
            if not passed:
                return f"criterion {criterion.name}: {' '.join(str(message).split())}"
        return None

    def _evaluate(self, criterion: Any, run: Any) -> tuple[bool, str]:
        aliases = dict(self.document.metric_aliases)
        if criterion.kind == "check":
            outcome = criterion.check.evaluate(run.eval_env(aliases))
            return bool(outcome.passed), outcome.text
        from pytest_mlgates import gates

        ctx = gates.GateContext(rootdir=self.rootdir, metric_aliases=aliases)
        result = gates.get_gate(criterion.gate).fn(run, dict(criterion.params), ctx)
        return bool(result.passed), result.message

    def _note(self, key: str, message: str) -> None:
        if (key, message) not in self._warned:
            self._warned.add((key, message))
            warnings.warn(f"in-flight gates: {message}", InflightGateWarning, stacklevel=3)
