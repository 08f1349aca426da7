"""The pytest item of one criterion against one run dir, and the session's shared state.

An item's verdict travels to the controller as ``user_properties`` (plain ``str``/``None``,
so xdist can carry them and JUnit writes them as ``<property>``)::

    mlgates.criterion  mlgates.gate  mlgates.run  mlgates.value  mlgates.threshold
    mlgates.status (GREEN | RED | UNVERIFIED | ERROR)  mlgates.message

A failed item shows one line, e.g. ``val_recall_3 = 0.000 at epoch 12 (final); needs > 0``.
A gate that crashes shows ``internal error in gate X: ValueError: ...`` (the traceback only
with ``--fulltrace``), so no session ever ends in INTERNALERROR because of a run dir.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

if TYPE_CHECKING:
    from pytest_mlgates.gatefile import Criterion, GateDocument
    from pytest_mlgates.rundir import Run, RunSection

GREEN, RED, UNVERIFIED, ERROR = "GREEN", "RED", "UNVERIFIED", "ERROR"
NO_RUN_DIR = "no run dir: pass --run-dir DIR (or set mlgates_run_dirs in the ini file)"


@dataclass(frozen=True)
class RunDir:
    """A run dir as the user named it (``label``, shown in ids) and where it is."""

    label: str
    path: Path


@dataclass
class Settings:
    """Options of this session, read once; ``runs`` caches opened runs (and their errors)."""

    run_dirs: list[RunDir]
    baseline: RunDir | None
    strict: bool
    gate_patterns: list[str]
    plan_patterns: list[str]
    run_format: str | None = None
    #: opened runs (or their errors) by (path, the gate file's run: section)
    runs: dict[tuple[Path, Any], Any] = field(default_factory=dict)
    envs: dict[tuple[Path, Any, tuple[tuple[str, str], ...]], Any] = field(default_factory=dict)
    #: the run: section of every gate file collected, by the file's path (for the run fixture)
    run_sections: dict[str, Any] = field(default_factory=dict)


SETTINGS_KEY = pytest.StashKey[Settings]()


def _run_dir(value: str, base: Path) -> RunDir:
    label = value.rstrip("/\\") or value
    path = Path(label).expanduser()
    return RunDir(label, path if path.is_absolute() else base / path)


def get_settings(config: pytest.Config) -> Settings:
    """The session's :class:`Settings`, built on first use from options and ini values.

    Cheap on purpose (no file system access): it runs for every collected file.
    """
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is not None:
        return settings
    invocation = config.invocation_params.dir
    given = config.getoption("mlgates_run_dirs") or []
    if given:
        candidates = [_run_dir(v, invocation) for v in given]
    else:
        candidates = [_run_dir(v, config.rootpath) for v in config.getini("mlgates_run_dirs")]
    run_dirs: list[RunDir] = []
    for run in candidates:
        if run.label not in {r.label for r in run_dirs}:
            run_dirs.append(run)
    baseline_value = config.getoption("mlgates_baseline_run")
    settings = Settings(
        run_dirs=run_dirs,
        baseline=_run_dir(baseline_value, invocation) if baseline_value else None,
        strict=bool(config.getoption("mlgates_strict")),
        gate_patterns=list(config.getini("mlgates_gate_patterns")),
        plan_patterns=list(config.getini("mlgates_plan_patterns")),
        run_format=config.getoption("mlgates_run_format", None),
    )
    config.stash[SETTINGS_KEY] = settings
    return settings


def open_cached_run(config: pytest.Config, run: RunDir, section: RunSection | None = None) -> Run:
    """Open a run dir once per process and ``run:`` section: its log is parsed and its
    checkpoints loaded once, however many criteria read them.  A run dir that cannot be
    opened (or fits two formats, or none) fails every item with the same one-line error."""
    from pytest_mlgates.errors import MlgatesError
    from pytest_mlgates.formats import open_run

    settings = get_settings(config)
    cache = settings.runs
    key = (run.path, section)
    if key not in cache:
        # --run-format names the format of the --run-dir runs; a baseline is detected
        forced = settings.run_format if run != settings.baseline else None
        try:
            cache[key] = open_run(run.path, forced, section)
        except MlgatesError as err:
            cache[key] = err
    found = cache[key]
    if isinstance(found, BaseException):
        raise found
    return found  # type: ignore[no-any-return]


class GateCrash(Exception):
    """A gate raised something other than an MlgatesError: a bug, shown as one line."""

    def __init__(self, line: str, original: BaseException) -> None:
        super().__init__(line)
        self.original = original


def _gate_entry(request: pytest.FixtureRequest) -> None:
    """What a gate item calls; pytest resolves its fixtures (``request`` only: the
    ``mlgates_subject`` a gate may need is asked for lazily, when the gate needs it)."""


class GateItem(pytest.Function):
    """One criterion of a gate file, judged against one run dir.

    A ``pytest.Function`` so that pytest's fixture machinery serves it: a gate that needs
    the user's model or data gets the ``mlgates_subject`` fixture visible from the gate
    file's folder (``request.getfixturevalue``), as a test there would.
    """

    def __init__(
        self,
        *,
        criterion: Criterion,
        document: GateDocument,
        run: RunDir | None,
        runs: list[RunDir] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("callobj", _gate_entry)
        super().__init__(**kwargs)
        self.criterion = criterion
        self.document = document
        self.run = run
        #: every run dir, for a criterion with ``across_runs:`` (then ``run`` is None)
        self.runs = runs

    # -- what pytest shows ---------------------------------------------------------------

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.criterion.line - 1, f"gate: {self.name}"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:  # type: ignore[override]
        from pytest_mlgates.errors import MlgatesError

        err = excinfo.value
        if isinstance(err, GateCrash):
            if self.config.getoption("fulltrace", False):
                tb = "".join(traceback.format_exception(err.original))
                return f"{err}\n{tb}"
            return str(err)
        if isinstance(err, MlgatesError):
            return str(err)
        return super().repr_failure(excinfo)

    # -- running ---------------------------------------------------------------------------

    def _record(self, status: str, message: str, value: Any = None, threshold: Any = None,
                per_run: dict[str, dict[str, Any]] | None = None) -> None:
        run = self.run.label if self.run else None
        if self.runs:
            run = "+".join(r.label for r in self.runs)
        self.user_properties[:] = [
            ("mlgates.criterion", self.criterion.name),
            ("mlgates.gate", self.criterion.gate_label),
            ("mlgates.run", run),
            ("mlgates.value", _text(value)),
            ("mlgates.threshold", _text(threshold)),
            ("mlgates.status", status),
            ("mlgates.message", " ".join(str(message).split())),
        ]
        if self.runs:
            # each run's own value, for its ledger (JSON text: xdist carries builtins only)
            import json

            shown = per_run or {r.label: {} for r in self.runs}
            self.user_properties.append(("mlgates.runs", json.dumps(shown, sort_keys=True)))

    def runtest(self) -> None:
        from pytest_mlgates.errors import GateFailure, MlgatesError, Unverified

        crit = self.criterion
        self._record(ERROR, "did not finish")
        if crit.kind == "truth":
            self._unverified(f"UNVERIFIED: {crit.text} (no check)")
        if self.runs:
            self._across_runs()
            return
        if self.run is None:
            self._record(ERROR, NO_RUN_DIR)
            raise GateFailure(NO_RUN_DIR)
        try:
            passed, message, value, threshold = self._evaluate()
        except Unverified as err:  # the run lacks what the gate needs (counts): not RED
            self._unverified(f"UNVERIFIED: {err}")
        except GateFailure as err:
            # A gate that found the run wanting is RED; one that wrapped its own crash
            # (``raise GateFailure(...) from exc``) did not measure anything: ERROR.
            cause = err.__cause__
            crashed = cause is not None and not isinstance(cause, MlgatesError)
            self._record(ERROR if crashed else RED, str(err), err.measured, err.threshold)
            raise
        except MlgatesError as err:
            self._record(ERROR, str(err))
            raise
        except Exception as err:  # noqa: BLE001 - a bug in a gate: one line, never INTERNALERROR
            line = f"internal error in gate {crit.gate_label}: {type(err).__name__}: {err}"
            line = " ".join(line.split())
            self._record(ERROR, line)
            raise GateCrash(line, err) from None
        self._record(GREEN if passed else RED, message, value, threshold)
        if not passed:
            raise GateFailure(message)

    def _unverified(self, line: str) -> None:
        """Record UNVERIFIED and skip; under ``--mlgates-strict`` fail instead."""
        from pytest_mlgates.errors import GateFailure

        if get_settings(self.config).strict:
            self._record(UNVERIFIED, line + "; fails under --mlgates-strict")
            raise GateFailure(line + "; fails under --mlgates-strict")
        self._record(UNVERIFIED, line)
        _skip_at_item(line)

    def _across_runs(self) -> None:
        """``across_runs: {at_least: K}``: judge every run dir, GREEN when K of them pass;
        the line names every run's value (and each failing run's own line)."""
        from pytest_mlgates.errors import GateFailure

        runs = list(self.runs or [])
        need = int(self.criterion.across_runs or 1)
        names = ", ".join(r.label for r in runs)
        if len(runs) < 2 or need > len(runs):
            if len(runs) < 2:
                line = (f"across_runs: judges the seeds of one experiment together, and this "
                        f"session has one --run-dir ({names}); pass one --run-dir per seed")
            else:
                line = (f"across_runs: at_least {need} can never pass: this session has "
                        f"{len(runs)} --run-dir ({names})")
            self._record(RED, line, f"{len(runs)} runs", f"at least {need} runs")
            raise GateFailure(line)
        per_run: dict[str, dict[str, Any]] = {}
        passed = 0
        thresholds: list[str] = []
        for run in runs:
            status, message, value, threshold = self._evaluate_one(run)
            passed += status == GREEN
            if threshold is not None and _text(threshold) not in thresholds:
                thresholds.append(str(_text(threshold)))
            per_run[run.label] = {"status": status, "value": _text(value),
                                  "threshold": _text(threshold), "message": message}
        parts = []
        for label, one in per_run.items():
            part = f"{label} = {one['value'] if one['value'] is not None else '-'} {one['status']}"
            if one["status"] != GREEN:
                part += f" ({one['message']})"
            parts.append(part)
        ok = passed >= need
        threshold = f"at least {need} of {len(runs)} runs" + (
            f" {thresholds[0]}" if len(thresholds) == 1 else "")
        line = f"{passed} of {len(runs)} runs pass, needs at least {need}: " + "; ".join(parts)
        self._record(GREEN if ok else RED, line, f"{passed}/{len(runs)} runs", threshold, per_run)
        if not ok:
            raise GateFailure(line)

    def _evaluate_one(self, run: RunDir) -> tuple[str, str, Any, Any]:
        """(status, one-line message, value, threshold) of this criterion on one run dir,
        a run's failure or error being its status, never the item's exception."""
        from pytest_mlgates.errors import GateFailure, MlgatesError, Unverified

        try:
            passed, message, value, threshold = self._evaluate(run)
        except Unverified as err:
            return UNVERIFIED, str(err), None, None
        except GateFailure as err:
            cause = err.__cause__
            crashed = cause is not None and not isinstance(cause, MlgatesError)
            return (ERROR if crashed else RED), str(err), err.measured, err.threshold
        except MlgatesError as err:
            return ERROR, str(err), None, None
        except Exception as err:  # noqa: BLE001 - a bug in a gate: one line, never INTERNALERROR
            line = f"internal error in gate {self.criterion.gate_label}: {type(err).__name__}: {err}"
            return ERROR, " ".join(line.split()), None, None
        return (GREEN if passed else RED), " ".join(str(message).split()), value, threshold

    def _evaluate(self, which: RunDir | None = None) -> tuple[bool, str, Any, Any]:
        """(passed, one-line message, value, threshold) of this criterion on this run (or
        on ``which``, one of an ``across_runs`` item's run dirs)."""
        which = which or self.run
        assert which is not None
        run = open_cached_run(self.config, which, self.document.run)
        crit = self.criterion
        if crit.kind == "check":
            from pytest_mlgates.expr import format_value

            outcome = crit.check.evaluate(self._env(run, which))
            value = None if outcome.value is None else format_value(outcome.value)
            return bool(outcome.passed), outcome.text, value, outcome.needs
        from pytest_mlgates import gates

        settings = get_settings(self.config)
        baseline = None
        if settings.baseline is not None and crit.gate == "baseline":
            baseline = open_cached_run(self.config, settings.baseline, self.document.run)
        ctx = gates.GateContext(
            rootdir=self.config.rootpath,
            baseline=baseline,
            metric_aliases=dict(self.document.metric_aliases),
            strict=settings.strict,
            subject=self._subject if not self.runs else self._no_subject,
        )
        result = gates.get_gate(str(crit.gate)).fn(run, dict(crit.params), ctx)
        return bool(result.passed), result.message, result.value, result.threshold

    def _subject(self) -> Any:
        """The ``mlgates_subject`` fixture's value for this item (None when no fixture is
        visible or it returns None); its failure is this item's one-line error."""
        from pytest_mlgates.errors import MlgatesError

        request = cast("pytest.FixtureRequest | None", self.funcargs.get("request"))
        if request is None:
            return None
        try:
            return request.getfixturevalue("mlgates_subject")
        except pytest.FixtureLookupError:
            return None
        except MlgatesError:
            raise
        except (pytest.skip.Exception, pytest.fail.Exception) as exc:
            raise MlgatesError(f"mlgates_subject: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the user's fixture failed: one line, not a traceback
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise MlgatesError(f"mlgates_subject: {type(exc).__name__}: {first}"[:300]) from None

    def _no_subject(self) -> Any:
        """An ``across_runs`` item judges several run dirs, and the ``mlgates_subject``
        fixture is built for one run dir: where one is visible, a gate that asks for it
        says so, in one line (ERROR for that run); where none is, the gate gets None."""
        from pytest_mlgates.errors import MlgatesError

        visible: Any = True  # a pytest that cannot answer: assume one is
        try:
            visible = self.session._fixturemanager.getfixturedefs("mlgates_subject", self)
        except Exception:  # noqa: BLE001, S110 - see above
            pass
        if not visible:  # no fixture: the gate goes on as it does without one (``model:``)
            return None
        raise MlgatesError(f"gate {self.criterion.gate_label} needs the mlgates_subject fixture, "
                           "which is built per run dir; judge it without across_runs")

    def _env(self, run: Run, which: RunDir | None = None) -> Any:
        settings = get_settings(self.config)
        aliases = self.document.metric_aliases
        which = which or self.run
        key = (which.path if which else Path(), self.document.run, tuple(sorted(aliases.items())))
        if key not in settings.envs:
            settings.envs[key] = run.eval_env(dict(aliases))
        return settings.envs[key]


def _skip_at_item(reason: str) -> None:
    """Skip, reported at the criterion's line in the gate file (not at this module)."""
    try:
        raise pytest.skip.Exception(reason, _use_item_location=True)
    except TypeError:  # a pytest without the keyword: plain skip
        pytest.skip(reason)


def _text(value: Any) -> str | None:
    """A value as the plain string JUnit and xdist carry (floats short, None kept)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
