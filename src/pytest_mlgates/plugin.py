"""pytest hooks only.  Loaded in every pytest run of a user's environment (``pytest11``).

So this module imports nothing heavy (no torch, numpy, sklearn, matplotlib, yaml) and does
no work at option-registration or configure time: gate files are parsed by ``collect.py``
when pytest meets one, runs are opened by ``items.py`` when an item runs, and the table is
built by ``summary.py`` at the end.  Everything is imported inside the hook that needs it.
"""

from __future__ import annotations

from collections.abc import Generator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

DEFAULT_GATE_PATTERNS = ["*.gates.yaml", "*.gates.yml"]
DEFAULT_PLAN_PATTERNS = ["*-PLAN.md"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlgates", "pytest-mlgates: exit criteria of ML training runs")
    group.addoption(
        "--run-dir", "--mlgates-run-dir", action="append", dest="mlgates_run_dirs",
        metavar="DIR", default=[],
        help="run dir to check gate files against; repeat for several runs "
             "(each criterion becomes one item per run dir)",
    )
    from pytest_mlgates.formats import FORMATS  # names only: no reader is imported

    group.addoption(
        "--run-format", "--mlgates-run-format", dest="mlgates_run_format", default=None,
        choices=("auto", *FORMATS),
        help="read the run dirs as this trainer's output instead of detecting it; wins over "
             "a gate file's run: {format: NAME} (default: auto)",
    )
    group.addoption(
        "--mlgates-strict", action="store_true", dest="mlgates_strict", default=False,
        help="fail UNVERIFIED truths (criteria without a check) instead of skipping them",
    )
    group.addoption(
        "--baseline-run", "--mlgates-baseline-run", dest="mlgates_baseline_run",
        metavar="DIR", default=None,
        help="run dir the 'baseline' gate compares against",
    )
    parser.addini("mlgates_gate_patterns", type="args", default=DEFAULT_GATE_PATTERNS,
                  help="glob patterns of gate files (default: *.gates.yaml *.gates.yml)")
    parser.addini("mlgates_plan_patterns", type="args", default=DEFAULT_PLAN_PATTERNS,
                  help="glob patterns of Markdown phase plans with must_haves front matter")
    parser.addini("mlgates_run_dirs", type="linelist", default=[],
                  help="run dirs used when no --run-dir is given (relative to the rootdir)")
    from pytest_mlgates import archive, preflight

    preflight.add_options(group, parser)  # --config, --mlgates-preflight-timeout
    archive.add_options(group)  # --mlgates-archive


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mlgates: a hand-written acceptance test; it gets a row in the mlgates table "
        "(use the run, load_model and gate_values fixtures)",
    )
    from pytest_mlgates import archive, preflight

    preflight.register(config)  # the preflight marker, suite and hook specs
    archive.register(config)  # RED/GREEN evidence, written on the controller at the end


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    name = file_path.name
    config = parent.config
    gate_patterns = config.getini("mlgates_gate_patterns")
    plan_patterns = config.getini("mlgates_plan_patterns")
    is_gate = any(fnmatch(name, p) for p in gate_patterns)
    is_plan = not is_gate and any(fnmatch(name, p) for p in plan_patterns)
    if not (is_gate or is_plan):
        return None
    from pytest_mlgates.collect import GateFile

    return GateFile.from_parent(parent, path=file_path, plan=is_plan)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """With several ``--run-dir``, a test using the ``run`` fixture runs once per run dir."""
    if "run" not in metafunc.fixturenames:
        return
    from pytest_mlgates.items import get_settings

    runs = get_settings(metafunc.config).run_dirs
    if len(runs) > 1:
        metafunc.parametrize("run", runs, indirect=True, ids=[r.label for r in runs])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``-n``, one run dir's items go to one worker (``sweep.py`` says why); None
    leaves the choice to xdist."""
    from pytest_mlgates import sweep

    return sweep.RunScheduling(config, log) if sweep.wanted(config) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report = yield
    if isinstance(item, pytest.Function) and item.get_closest_marker("mlgates") is not None:
        from pytest_mlgates.fixtures import record_marked_test

        record_marked_test(item, call, report)
    return report


def pytest_terminal_summary(
    terminalreporter: Any, exitstatus: int, config: pytest.Config
) -> None:
    if hasattr(config, "workerinput"):  # xdist worker: the controller prints the table
        return
    from pytest_mlgates.summary import collect_records, format_table

    records = collect_records(terminalreporter.stats)
    if not records:
        return
    terminalreporter.write_sep("=", "mlgates")
    for line in format_table(records).splitlines():
        terminalreporter.write_line(line)
    from pytest_mlgates.inflight import read_inflight_stop
    from pytest_mlgates.items import get_settings

    for run in get_settings(config).run_dirs:
        stop = read_inflight_stop(run.path)
        if stop is not None:  # a run an in-flight gate stopped is not done, whatever is GREEN now
            terminalreporter.write_line(
                f"{run.label}: stopped by an in-flight gate after epoch {stop.get('epoch')} "
                f"({run.label}/mlgates_inflight.json): {stop.get('reason')}", red=True)


# --------------------------------------------------------------------------- fixtures
# Bodies live in fixtures.py and are imported when a test asks for the fixture.


@pytest.fixture
def run(request: pytest.FixtureRequest) -> Any:
    """The parsed run dir (``pytest_mlgates.rundir.Run``) of ``--run-dir``: ``.log``,
    ``.config``, ``.final``, ``.best``, ``.checkpoint(name)``.  With several run dirs the
    test runs once per run dir."""
    from pytest_mlgates.fixtures import run_for_request

    return run_for_request(request)


@pytest.fixture
def load_model(run: Any, request: pytest.FixtureRequest) -> Any:
    """``load_model("best_val_loss")`` -> the ``torch.nn.Module`` of that checkpoint (built
    by the ``mlgates_subject`` fixture), in eval mode; ``load_model("final.pt",
    model="pkg.mod:Net", kwargs={...})`` for a class named here."""
    from pytest_mlgates.fixtures import ModelLoader

    return ModelLoader(run, request)


@pytest.fixture
def mlgates_run_dir(request: pytest.FixtureRequest) -> Any:
    """The run dir (a ``Path``) the requesting item judges: a gate item's run, the ``run``
    of a test; None in preflight.  A ``mlgates_subject`` fixture that depends on the run
    (the bundled engine's does) asks for it, and is then function-scoped."""
    from pytest_mlgates.fixtures import run_dir_for_request

    return run_dir_for_request(request)


@pytest.fixture
def gate_values(run: Any, request: pytest.FixtureRequest) -> Any:
    """``gate_values("final.val_loss")`` evaluates a ``check:`` expression on the run;
    ``gate_values.require("final.val_recall_3 > 0")`` fails the test with the gate's line."""
    from pytest_mlgates.fixtures import GateValues

    return GateValues(run)
