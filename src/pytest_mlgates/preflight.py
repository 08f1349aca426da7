"""``pytest -m preflight --config C``: the checks a config must pass before any training.

The plugin core calls two functions here: :func:`add_options` from ``pytest_addoption``
and :func:`register` from ``pytest_configure``. When a config is known (``--config``, or
the ``mlgates_config`` ini option together with a ``-m`` expression that names
``preflight``), the built-in suite is added to the collection, one item per check::

    configs/default.yaml::preflight[config_validates] PASSED
    configs/default.yaml::preflight[no_nan_or_inf] FAILED   8 of 400 samples with NaN/Inf (...)
    configs/default.yaml::preflight[forward_softmax] SKIPPED depends on no_nan_or_inf, which failed

Every item carries the ``preflight`` marker, so ``-m preflight`` selects them together
with the user's own ``@pytest.mark.preflight`` tests and a gate file's ``preflight:``
section (:func:`gate_file_items`), and ``-m "not preflight"`` leaves them out.

This module is imported at plugin load: it imports nothing heavy. The checks themselves
(torch, numpy, the engine) live in ``preflight_checks.py`` and load when an item runs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_mlgates.preflight_checks import PreflightSuite

__all__ = ["PreflightFile", "PreflightItem", "add_options", "gate_file_items", "register"]

DEFAULT_TIMEOUT_S = 20.0

_SETTINGS_KEY = pytest.StashKey["_Settings"]()
_SUITE_KEY = pytest.StashKey["PreflightSuite"]()


class PreflightHookSpecs:
    """Hooks a ``conftest.py`` may implement to adapt the preflight suite."""

    @pytest.hookspec(firstresult=True)
    def pytest_mlgates_preflight_model(self, config: pytest.Config, mlgates_config: Any, dataset: Any) -> Any:
        """Return the ``torch.nn.Module`` the preflight checks should test, or None for the
        engine's ``build_model(config.model, ...)``. Called once per check that needs a
        fresh model, after ``torch.manual_seed(seed)``; ``mlgates_config`` is the validated
        ``model.config.Config`` and ``dataset`` the ``model.data.Dataset`` it builds.

        Example (``conftest.py``)::

            def pytest_mlgates_preflight_model(config, mlgates_config, dataset):
                from mypkg.nets import MyNet
                return MyNet(num_classes=dataset.num_classes)
        """


# --------------------------------------------------------------------------- options


def add_options(group: Any, parser: Any = None) -> None:
    """``--config`` (alias ``--mlgates-config``), ``--mlgates-preflight-timeout`` and the
    ``mlgates_config`` ini option. `group` is the plugin's ``parser.getgroup(...)``."""
    group.addoption(
        "--config", "--mlgates-config", dest="mlgates_config", metavar="C", default=None,
        help="experiment config whose preflight suite to collect (pytest -m preflight --config C)",
    )
    group.addoption(
        "--mlgates-preflight-timeout", dest="mlgates_preflight_timeout", type=float, metavar="S",
        default=None,
        help=f"seconds the first batch of each split may take before preflight calls the loader hung "
             f"(default {DEFAULT_TIMEOUT_S:g})",
    )
    parser = parser if parser is not None else getattr(group, "parser", None)
    if parser is not None:
        parser.addini("mlgates_config", type="string", default="",
                      help="config for `pytest -m preflight` when no --config is given (relative to the ini file)")
        parser.addini("mlgates_preflight_timeout", type="string", default="",
                      help=f"default of --mlgates-preflight-timeout (default {DEFAULT_TIMEOUT_S:g})")


class _Settings:
    """Where the config is and whether this session asked for the preflight suite."""

    def __init__(self, config: pytest.Config) -> None:
        given = config.getoption("mlgates_config", None)
        ini = _ini(config, "mlgates_config")
        self.explicit = bool(given)
        if given:
            self.config_path: Path | None = (config.invocation_params.dir / given).absolute()
        elif ini:
            base = config.inipath.parent if config.inipath else config.rootpath
            self.config_path = (base / ini).absolute()
        else:
            self.config_path = None
        timeout = config.getoption("mlgates_preflight_timeout", None)
        if timeout is None:
            raw = _ini(config, "mlgates_preflight_timeout")
            try:
                timeout = float(raw) if raw else DEFAULT_TIMEOUT_S
            except ValueError:
                raise pytest.UsageError(f"ini option mlgates_preflight_timeout: {raw!r} is not a number") from None
        if timeout <= 0:
            raise pytest.UsageError(f"--mlgates-preflight-timeout: must be > 0 seconds, got {timeout:g}")
        self.timeout = float(timeout)
        run_dirs = config.getoption("mlgates_run_dirs", None) or []
        self.run_dir = (config.invocation_params.dir / run_dirs[0]) if run_dirs else None
        markexpr = str(config.getoption("markexpr", "") or "")
        # An ini default alone must not add the suite to every plain `pytest` run.
        self.wanted = self.config_path is not None and (self.explicit or "preflight" in markexpr)


def _ini(config: pytest.Config, name: str) -> str:
    try:
        return str(config.getini(name) or "").strip()
    except ValueError:  # option not registered (plugin core without add_options)
        return ""


# --------------------------------------------------------------------------- registration


def register(config: pytest.Config) -> None:
    """Called from ``pytest_configure``: hook specs, the marker, the collection plugin."""
    config.pluginmanager.add_hookspecs(PreflightHookSpecs)
    config.addinivalue_line("markers", "preflight: a check that runs before training (pytest -m preflight)")
    settings = _Settings(config)
    config.stash[_SETTINGS_KEY] = settings
    if not config.pluginmanager.has_plugin("mlgates-preflight"):
        config.pluginmanager.register(_PreflightCollection(), "mlgates-preflight")


class _PreflightCollection:
    """Adds the built-in suite in front of the collected items (same order on every worker)."""

    @pytest.hookimpl(tryfirst=True)  # before the -m filter deselects by marker
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        settings = config.stash.get(_SETTINGS_KEY, None)
        if settings is None or not settings.wanted or settings.config_path is None:
            return
        path = settings.config_path
        try:
            nodeid = str(path.relative_to(config.rootpath).as_posix())
        except ValueError:
            nodeid = path.name
        file = PreflightFile.from_parent(session, path=path, nodeid=nodeid)
        suite = list(file.collect())
        # count them as collected, as pytest's own collection would (terminal "collected N items")
        session.ihook.pytest_collectreport(
            report=pytest.CollectReport(nodeid, "passed", None, list[pytest.Item | pytest.Collector](suite)))
        items[:0] = suite


def _suite(config: pytest.Config) -> PreflightSuite:
    """The one suite of this process: config, dataset and first batches are built once."""
    suite = config.stash.get(_SUITE_KEY, None)
    if suite is None:
        from pytest_mlgates.preflight_checks import PreflightSuite

        settings = config.stash.get(_SETTINGS_KEY, None)
        if settings is None or settings.config_path is None:
            raise _PreflightError("no config: run `pytest -m preflight --config C` (or set the "
                                  "mlgates_config ini option)")

        def model_factory(mlgates_config: Any, dataset: Any) -> Any:
            return config.hook.pytest_mlgates_preflight_model(
                config=config, mlgates_config=mlgates_config, dataset=dataset)

        suite = PreflightSuite(settings.config_path, run_dir=settings.run_dir, timeout=settings.timeout,
                               model_factory=model_factory)
        config.stash[_SUITE_KEY] = suite
    return suite


# --------------------------------------------------------------------------- nodes


class _PreflightError(Exception):
    """A preflight check that failed; ``str()`` is the one line shown."""


class PreflightFile(pytest.File):
    """The config file, as a collector of the built-in checks in their fixed order."""

    def collect(self) -> Iterator[pytest.Item]:
        from pytest_mlgates.preflight_checks import CHECK_ORDER  # light: no torch at import

        for check in CHECK_ORDER:
            yield PreflightItem.from_parent(self, name=f"preflight[{check}]", check=check, params={})


class PreflightItem(pytest.Item):
    """One preflight check (built in, or from a gate file's ``preflight:`` section)."""

    def __init__(self, *, check: str, params: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.params = params
        self.add_marker("preflight")
        if self.config.pluginmanager.has_plugin("xdist"):
            # under `--dist loadgroup` the whole suite runs on one worker and builds the data once
            self.add_marker(pytest.mark.xdist_group("mlgates-preflight"))

    def runtest(self) -> None:
        outcome = _suite(self.config).outcome(self.check, self.params)
        self.user_properties.append(("mlgates.preflight", self.check))
        self.user_properties.append(("mlgates.preflight_message", outcome.message))
        if outcome.status == "skipped":
            raise _skip_here(outcome.message)
        if outcome.status == "failed":
            raise _PreflightError(outcome.message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, _PreflightError):
            name = self.name[len("preflight["):-1] if self.name.startswith("preflight[") else self.name
            label = self.check if name == self.check else f"{name} ({self.check})"
            return f"preflight {label}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"preflight: {self.name}"


# --------------------------------------------------------------------------- gate files


def gate_file_items(parent: pytest.File, section: Any) -> list[pytest.Item]:
    """Items for a gate file's ``preflight:`` section (called by ``collect.GateFile``).

    The section is a list; each entry names a built-in check and sets its parameters::

        preflight:
          - {name: strict_core_probe, check: shortcut_probe, max_auc: 0.6, radius: 3}
          - loss_at_init                          # a bare name: default parameters

    Entries are validated here, whether or not the suite runs, so a typo is a collection
    error naming the file and the entry. Items are made only when this session runs the
    preflight suite (``--config``, or the ini option with ``-m preflight``).
    """
    from pytest_mlgates.errors import GateFileError
    from pytest_mlgates.preflight_checks import CHECKS

    where = _display(parent)
    if section is None:
        return []
    if not isinstance(section, list):
        raise GateFileError(f"{where}: preflight: must be a list of checks, got {type(section).__name__}")
    entries: list[tuple[str, str, dict[str, Any]]] = []
    for i, entry in enumerate(section):
        label = f"{where}: preflight[{i}]"
        if isinstance(entry, str):
            entry = {"check": entry}
        if not isinstance(entry, dict):
            raise GateFileError(f"{label}: must be a check name or a mapping with 'check:', got {entry!r}")
        check = entry.get("check")
        if not isinstance(check, str) or check not in CHECKS:
            close = difflib.get_close_matches(str(check), list(CHECKS), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise GateFileError(f"{label}: check {check!r} is not a preflight check{hint} "
                                f"(valid: {', '.join(CHECKS)})")
        name = entry.get("name", check)
        if not isinstance(name, str) or not name or any(c in name for c in "[]:/ "):
            raise GateFileError(f"{label}: name must be a word without spaces, brackets or ':', got {name!r}")
        params = {k: v for k, v in entry.items() if k not in ("name", "check", "description")}
        allowed = CHECKS[check].params
        for key, value in params.items():
            if key not in allowed:
                valid = ", ".join(allowed) or "none"
                raise GateFileError(f"{label}: '{check}' has no parameter '{key}' (valid: {valid})")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise GateFileError(f"{label}: {key} must be a positive number, got {value!r}")
        if any(name == n for n, _, _ in entries):
            raise GateFileError(f"{label}: name '{name}' is used twice")
        entries.append((name, check, params))
    settings = parent.config.stash.get(_SETTINGS_KEY, None)
    if settings is None or not settings.wanted:
        return []
    return [PreflightItem.from_parent(parent, name=f"preflight[{name}]", check=check, params=params)
            for name, check, params in entries]


def _skip_here(message: str) -> BaseException:
    """A skip reported at the item's location (the config), not at this module's line."""
    try:
        return pytest.skip.Exception(message, _use_item_location=True)
    except TypeError:  # a pytest without the keyword: the location is only cosmetic
        return pytest.skip.Exception(message)


def _display(node: pytest.File) -> str:
    try:
        return str(node.path.relative_to(node.config.invocation_params.dir))
    except ValueError:
        return str(node.path)
