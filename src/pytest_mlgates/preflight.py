"""``pytest -m preflight``: the checks the user's code must pass before any training.

The user describes their code once, in a ``mlgates_subject`` fixture returning a
:class:`~pytest_mlgates.PreflightSubject` (see ``subject.py``).  When a session asks for
preflight (``-m`` naming ``preflight``, or ``--config C``), the built-in suite is added to
the collection, one item per check, next to the conftest that defines the fixture (or
under the config file when ``--config`` names one)::

    configs/default.yaml::preflight[subject_builds] PASSED
    configs/default.yaml::preflight[no_nan_or_inf] FAILED   8 of 400 samples with NaN/Inf (...)
    configs/default.yaml::preflight[forward_softmax] SKIPPED depends on no_nan_or_inf, which failed

Every item carries the ``preflight`` marker, so ``-m preflight`` selects them together
with the user's own ``@pytest.mark.preflight`` tests and a gate file's ``preflight:``
section (:func:`gate_file_items`), and ``-m "not preflight"`` leaves them out.

Items are ``pytest.Function``\\ s, so the subject comes through pytest's own fixture
machinery (``request.getfixturevalue``): a conftest's fixture wins over a parent's, and a
conftest defining ``mlgates_subject`` is plain pytest code that also works with the plugin
disabled.  ``--config C`` is handed to the fixture (``pytestconfig.getoption("mlgates_config")``):
the bundled engine's conftest builds its subject from it.

This module is imported at plugin load: it imports nothing heavy.  The checks (torch,
numpy) live in ``preflight_checks.py`` (the runner) and the modules it imports, and load when
an item runs.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

if TYPE_CHECKING:
    from pytest_mlgates.preflight_checks import PreflightSuite

__all__ = ["SUBJECT_FIXTURE", "PreflightFile", "PreflightItem", "add_options", "gate_file_items", "register"]

DEFAULT_TIMEOUT_S = 20.0
#: The fixture a conftest defines to hand its code to the plugin.
SUBJECT_FIXTURE = "mlgates_subject"

_SETTINGS_KEY = pytest.StashKey["_Settings"]()
_SUITES_KEY = pytest.StashKey[dict[int, "PreflightSuite"]]()


# --------------------------------------------------------------------------- options


def add_options(group: Any, parser: Any = None) -> None:
    """``--config`` (alias ``--mlgates-config``), ``--mlgates-preflight-timeout`` and the
    ``mlgates_config`` ini option. `group` is the plugin's ``parser.getgroup(...)``."""
    group.addoption(
        "--config", "--mlgates-config", dest="mlgates_config", metavar="C", default=None,
        help="experiment config handed to the mlgates_subject fixture; collects the preflight suite "
             "(pytest -m preflight --config C)",
    )
    group.addoption(
        "--mlgates-preflight-timeout", dest="mlgates_preflight_timeout", type=float, metavar="S",
        default=None,
        help=f"seconds each batch of a loader may take before preflight calls the loader hung "
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
        self.wanted = self.explicit or "preflight" in markexpr


def _ini(config: pytest.Config, name: str) -> str:
    try:
        return str(config.getini(name) or "").strip()
    except ValueError:  # option not registered (plugin core without add_options)
        return ""


def config_path(config: pytest.Config) -> Path | None:
    """The experiment config of this session (``--config``, else the ``mlgates_config`` ini
    option), absolute; None when neither is set.  What a subject fixture builds from."""
    settings = config.stash.get(_SETTINGS_KEY, None)
    return settings.config_path if settings is not None else None


# --------------------------------------------------------------------------- registration


def register(config: pytest.Config) -> None:
    """Called from ``pytest_configure``: the marker and the collection plugin."""
    config.addinivalue_line("markers", "preflight: a check that runs before training (pytest -m preflight)")
    settings = _Settings(config)
    config.stash[_SETTINGS_KEY] = settings
    if not config.pluginmanager.has_plugin("mlgates-preflight"):
        config.pluginmanager.register(_PreflightCollection(), "mlgates-preflight")


class _PreflightCollection:
    """Adds the built-in suite in front of the collected items (same order on every worker)."""

    def __init__(self) -> None:
        self.folders: list[pytest.Collector] = []

    def pytest_collectstart(self, collector: pytest.Collector) -> None:
        if isinstance(collector, (pytest.Dir, pytest.Package, pytest.Session)):
            self.folders.append(collector)

    @pytest.hookimpl(tryfirst=True)  # before the -m filter deselects by marker
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        settings = config.stash.get(_SETTINGS_KEY, None)
        if settings is None or not settings.wanted:
            return
        suite: list[pytest.Item] = []
        for parent, path in _suite_places(session, settings, self.folders):
            file = PreflightFile.from_parent(parent, path=path)
            items_here = list(file.collect())
            session.ihook.pytest_collectreport(
                report=pytest.CollectReport(file.nodeid, "passed", None,
                                            list[pytest.Item | pytest.Collector](items_here)))
            suite += items_here
        items[:0] = suite


def _visible_subject(session: pytest.Session, node: pytest.Collector) -> Any:
    """The ``mlgates_subject`` definition a node under ``node`` would get, or None."""
    manager = getattr(session, "_fixturemanager", None)  # pytest's fixture manager (no public handle)
    try:
        found = manager.getfixturedefs(SUBJECT_FIXTURE, node) if manager is not None else None
    except Exception:  # noqa: BLE001 - an older pytest's signature: treat as not visible
        return None
    return found[-1] if found else None


def _suite_places(session: pytest.Session, settings: _Settings,
                  folders: list[pytest.Collector]) -> list[tuple[pytest.Collector, Path]]:
    """(parent collector, path) of each suite: one per ``mlgates_subject`` definition, under
    the shallowest folder from which that definition is the one pytest would use -- so the
    suite's items get it, and a conftest further down with its own fixture gets its own
    suite.  The path is the config file (``--config``) when it lies in that folder, else the
    file defining the fixture.  With no definition but a config, one suite whose first check
    says what is missing; with neither, none (``-m preflight`` then runs the user's own
    marked tests only)."""
    root = session.config.rootpath
    places: dict[int, tuple[pytest.Collector, Path]] = {}
    for folder in sorted({id(f): f for f in [session, *folders]}.values(), key=lambda f: len(f.nodeid)):
        definition = _visible_subject(session, folder)
        if definition is None or id(definition) in places:
            continue
        base = Path(getattr(folder, "path", root))
        if settings.config_path is not None and _is_under(settings.config_path, base):
            path = settings.config_path
        else:
            path = _defining_file(definition, base)
        places[id(definition)] = (folder, path)
    if not places and settings.config_path is not None:  # asked for a config's suite: say what is missing
        places[0] = (session, settings.config_path)
    return sorted(places.values(), key=lambda p: str(p[1]))


def _defining_file(definition: Any, folder: Path) -> Path:
    """The folder's conftest.py (where fixtures usually live), else the file that defines
    the fixture when it lies in the folder."""
    conftest = folder / "conftest.py"
    if conftest.is_file():
        return conftest
    try:
        path = Path(inspect.getfile(definition.func)).resolve()
    except (TypeError, AttributeError):
        return conftest
    return path if _is_under(path, folder) else conftest


def _is_under(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- nodes


class _PreflightError(Exception):
    """A preflight check that failed; ``str()`` is the one line shown."""


class PreflightFile(pytest.File):
    """Where a suite lives (a config, a conftest): collects the built-in checks in order."""

    def collect(self) -> Iterator[pytest.Item]:
        from pytest_mlgates.preflight_checks import CHECK_ORDER  # light: no torch at import

        for check in CHECK_ORDER:
            yield PreflightItem.from_parent(self, name=f"preflight[{check}]", check=check, params={})


def _preflight_entry(request: pytest.FixtureRequest) -> None:
    """What a preflight item calls; its fixtures are resolved by pytest (``request`` only:
    the subject is asked for lazily, so a broken fixture is one check's failure)."""


class PreflightItem(pytest.Function):
    """One preflight check (built in, or from a gate file's ``preflight:`` section)."""

    def __init__(self, *, check: str, params: dict[str, Any], **kwargs: Any) -> None:
        kwargs.setdefault("callobj", _preflight_entry)
        super().__init__(**kwargs)
        self.check = check
        self.params = params
        self.add_marker("preflight")
        if self.config.pluginmanager.has_plugin("xdist"):
            # under `--dist loadgroup` the whole suite runs on one worker and scans the data once
            self.add_marker(pytest.mark.xdist_group("mlgates-preflight"))

    def runtest(self) -> None:
        outcome = _suite(self).outcome(self.check, self.params)
        self.user_properties.append(("mlgates.preflight", self.check))
        self.user_properties.append(("mlgates.preflight_message", outcome.message))
        if outcome.status == "skipped":
            raise _skip_here(outcome.message)
        if outcome.status == "failed":
            raise _PreflightError(outcome.message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:  # type: ignore[override]
        if isinstance(excinfo.value, _PreflightError):
            name = self.name[len("preflight["):-1] if self.name.startswith("preflight[") else self.name
            label = self.check if name == self.check else f"{name} ({self.check})"
            return f"preflight {label}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"preflight: {self.name}"


def _suite(item: PreflightItem) -> PreflightSuite:
    """The suite of the subject this item sees; one per subject object and process, so the
    loaders are scanned once however many items ask."""
    from pytest_mlgates.preflight_checks import PreflightSuite

    subject = _subject_of(item)
    suites = item.config.stash.setdefault(_SUITES_KEY, {})
    key = id(subject)
    suite = suites.get(key)
    if suite is None or suite.subject is not subject:
        settings = item.config.stash[_SETTINGS_KEY]
        suite = PreflightSuite(subject, timeout=settings.timeout, run_dir=settings.run_dir)
        suites[key] = suite
    return suite


class NoSubjectError(Exception):
    """No ``mlgates_subject`` fixture is visible from a preflight item."""


def _subject_of(item: pytest.Function) -> Any:
    """The ``mlgates_subject`` fixture's value for this item, or the exception it raised (the
    suite turns either into ``subject_builds``'s verdict)."""
    from pytest_mlgates.errors import MlgatesError

    request = cast("pytest.FixtureRequest | None", item.funcargs.get("request"))
    if request is None:  # not set up through pytest (a unit test calling runtest directly)
        return NoSubjectError("no fixture request")
    try:
        return request.getfixturevalue(SUBJECT_FIXTURE)
    except pytest.FixtureLookupError:
        settings = item.config.stash[_SETTINGS_KEY]
        hint = (f" that builds your subject from --config {settings.config_path.name}"
                if settings.config_path is not None else "")
        return MlgatesError(
            f"no {SUBJECT_FIXTURE} fixture: define one in conftest.py{hint}, returning "
            "pytest_mlgates.PreflightSubject(model=..., loaders=..., loss=..., num_classes=...) "
            "(docs/preflight.md)")
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        return MlgatesError(f"{SUBJECT_FIXTURE}: {exc}")
    except Exception as exc:  # noqa: BLE001 - the user's fixture: its failure is one check's line
        return exc


# --------------------------------------------------------------------------- gate files


def gate_file_items(parent: pytest.File, section: Any) -> list[pytest.Item]:
    """Items for a gate file's ``preflight:`` section (called by ``collect.GateFile``).

    The section is a list; each entry names a built-in check and sets its parameters::

        preflight:
          - {name: strict_core_probe, check: shortcut_probe, max_auc: 0.6, radius: 3}
          - loss_at_init                          # a bare name: default parameters

    Entries are validated here, whether or not the suite runs, so a typo is a collection
    error naming the file and the entry. Items are made only when this session runs the
    preflight suite (``--config``, or ``-m`` naming preflight).
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
