"""Bodies of the ``run``, ``load_model`` and ``gate_values`` fixtures (declared in plugin.py).

For acceptance criteria a gate file cannot express, write a Python test; it sees the same
run dir as the gate files and gets a row in the mlgates table when marked ``mlgates``::

    import pytest

    @pytest.mark.mlgates
    def test_minority_recall_beats_chance(run, load_model, gate_values):
        assert run.final.val_recall_3 > 0.1
        gate_values.require("min(val_loss) < first(val_loss)")
        model = load_model("best_val_loss")          # torch.nn.Module, eval mode (mlgates_subject's)
        assert not model.training

torch is imported only when ``load_model`` is called.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mlgates.items import (
    ERROR,
    GREEN,
    NO_RUN_DIR,
    RED,
    UNVERIFIED,
    RunDir,
    get_settings,
    open_cached_run,
)


def run_for_request(request: pytest.FixtureRequest) -> Any:
    """The Run of the test's run dir: the parametrized one, else the only one given."""
    from pytest_mlgates.errors import MlgatesError

    param = getattr(request, "param", None)
    if isinstance(param, RunDir):
        chosen = param
    else:
        runs = get_settings(request.config).run_dirs
        if not runs:
            pytest.fail(NO_RUN_DIR, pytrace=False)
        chosen = runs[0]
    sections = get_settings(request.config).run_sections
    distinct = list(dict.fromkeys(sections.values()))
    if len(distinct) > 1:
        files = ", ".join(sorted(f for f, sec in sections.items() if sec in distinct[:2]))
        pytest.fail(f"run fixture: the gate files collected give different run: sections ({files}); "
                    "the run fixture reads a run one way: collect one of them", pytrace=False)
    try:
        # a gate file's run: section (a plain run's log and checkpoints) applies here too
        return open_cached_run(request.config, chosen, distinct[0] if distinct else None)
    except MlgatesError as err:
        pytest.fail(str(err), pytrace=False)


def run_dir_for_request(request: pytest.FixtureRequest) -> Any:
    """The run dir the requesting node judges: a gate item's run; the parametrized or only
    ``--run-dir`` of a test that uses ``run``; None for preflight items and tests without
    a run dir."""
    from pytest_mlgates.items import GateItem
    from pytest_mlgates.preflight import PreflightItem

    node = request.node
    if isinstance(node, GateItem):
        return node.run.path if node.run is not None else None
    if isinstance(node, PreflightItem):
        return None
    callspec = getattr(node, "callspec", None)
    if callspec is not None and isinstance(callspec.params.get("run"), RunDir):
        return callspec.params["run"].path
    runs = get_settings(request.config).run_dirs
    return runs[0].path if runs else None


class ModelLoader:
    """``load_model(name="best_val_loss", *, model=None, kwargs=None, prefix=None)``.

    ``name`` is a checkpoint of the run: ``best_val_loss``, ``final``, ``last``, ``best``
    (the monitor's), or a path relative to the run dir.  With ``model="pkg.mod:Class"``
    that class is built with ``kwargs`` and given the checkpoint's state dict (found under
    ``model``, ``state_dict``, ``model_state_dict``, or the dict itself; ``prefix``
    stripped from its keys, Lightning's ``model.`` automatically).  Without it the
    ``mlgates_subject`` fixture builds the model, as the gates do.  The module comes back
    in eval mode.
    """

    def __init__(self, run: Any, request: pytest.FixtureRequest | None = None) -> None:
        self.run = run
        self.request = request

    def __call__(
        self,
        name: str = "best_val_loss",
        *,
        model: str | None = None,
        kwargs: dict[str, Any] | None = None,
        prefix: str | None = None,
    ) -> Any:
        from pytest_mlgates.errors import GateFailure
        from pytest_mlgates.models import model_from_subject, model_from_target

        checkpoint = self.run.checkpoint(name)
        shown = self.run.checkpoint_shown(name)
        if model is not None:
            return model_from_target(checkpoint, {"model": model, "kwargs": kwargs, "prefix": prefix}, shown)
        subject = None
        if self.request is not None:
            try:
                subject = self.request.getfixturevalue("mlgates_subject")
            except pytest.FixtureLookupError:
                subject = None
        if subject is None:
            raise GateFailure(f"{shown}: load_model needs model='pkg.mod:Class' or a mlgates_subject fixture "
                              "that builds your model")
        return model_from_subject(subject, checkpoint, shown)


class GateValues:
    """``check:`` expressions evaluated on the test's run, as in a gate file.

    * ``gate_values("final.val_loss")`` -> the number (a float); for a true/false check
      such as ``gate_values("final.val_loss < 1")`` -> True or False;
    * ``gate_values.outcome(expr)`` -> the full Outcome (passed, value, where, needs, text);
    * ``gate_values.require(expr)`` -> fails the test with the gate's one line when false.
    """

    def __init__(self, run: Any, metric_aliases: dict[str, str] | None = None) -> None:
        self.run = run
        self.metric_aliases = dict(metric_aliases or {})
        self._env: Any = None

    def outcome(self, expression: str) -> Any:
        """The Outcome of a true/false check, exactly as a gate file's ``check:`` gives it."""
        from pytest_mlgates.expr import compile_check

        return compile_check(expression).evaluate(self._environment())

    def __call__(self, expression: str) -> Any:
        """A number for a number (``final.val_loss``), True/False for a check."""
        from pytest_mlgates.errors import ExprError
        from pytest_mlgates.expr import compile_check

        try:
            return self.outcome(expression).passed
        except ExprError as err:
            if "must be true or false" not in str(err):
                raise
        # A number: compare it with itself, and the Outcome's value is that number.
        check = compile_check(f"({expression}) == ({expression})")
        return check.evaluate(self._environment()).value

    def _environment(self) -> Any:
        if self._env is None:
            self._env = self.run.eval_env(self.metric_aliases)
        return self._env

    def require(self, expression: str) -> Any:
        __tracebackhide__ = True
        result = self.outcome(expression)
        if not result.passed:
            pytest.fail(result.text, pytrace=False)
        return result


def record_marked_test(item: pytest.Function, call: pytest.CallInfo[None], report: Any) -> None:
    """Give a ``@pytest.mark.mlgates`` test its row in the table (and JUnit properties).

    The call phase decides GREEN/RED; a setup that failed is ERROR, a skip UNVERIFIED.
    """
    if call.when == "teardown" or (call.when == "setup" and report.passed):
        return
    if report.passed:
        status = GREEN
    elif report.skipped:
        status = UNVERIFIED
    else:
        status = RED if call.when == "call" else ERROR
    message = ""
    if call.excinfo is not None:
        message = " ".join(call.excinfo.exconly().split())[:300]
    marker = item.get_closest_marker("mlgates")
    criterion = marker.args[0] if marker and marker.args else item.originalname
    run = None
    callspec = getattr(item, "callspec", None)
    if callspec is not None and isinstance(callspec.params.get("run"), RunDir):
        run = callspec.params["run"].label
    elif "run" in item.fixturenames:
        runs = get_settings(item.config).run_dirs
        run = runs[0].label if runs else None
    report.user_properties.extend([
        ("mlgates.criterion", str(criterion)),
        ("mlgates.gate", "python"),
        ("mlgates.run", run),
        ("mlgates.value", None),
        ("mlgates.threshold", None),
        ("mlgates.status", status),
        ("mlgates.message", message),
    ])
