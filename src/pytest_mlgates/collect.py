"""Gate files and Markdown phase plans become criteria, and criteria become pytest items.

A gate file (``*.gates.yaml``) or a phase plan's front matter (``*-PLAN.md``) is parsed once
per collecting process into a :class:`~pytest_mlgates.gatefile.GateDocument`: a list of
:class:`~pytest_mlgates.gatefile.Criterion`, each with the line it came from.  Everything a
user can get wrong in the file (bad YAML, an unknown key, a bad ``check:`` expression, an
unknown gate or parameter, a duplicate name) is found here, at collection, and reported as
ONE line ``file:line:column: what is wrong`` — the whole file is one collection error,
never a traceback into the plugin.

PyYAML is imported inside :func:`parse_gate_text`: this module is only imported when pytest
meets a file that matches the gate patterns.

This module is the document level and the pytest node: the top-level keys, ``title:`` and
``metrics:``, and :class:`GateFile`, which yields one item per criterion per run dir.  The
YAML nodes are handled by ``gatefile_yaml.py``, the ``run:`` section by
``gatefile_run.py``, the criteria by ``gatefile_criteria.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_mlgates.errors import GateFileError, MlgatesError
from pytest_mlgates.gatefile import Criterion, GateDocument, read_capped
from pytest_mlgates.gatefile_criteria import (
    ACROSS_RUNS_ID,
    exit_criteria,
    must_haves,
    reject_duplicates,
)
from pytest_mlgates.gatefile_run import run_section
from pytest_mlgates.gatefile_yaml import (
    Located,
    closest,
    compose,
    construct,
    is_mapping,
    mapping_pairs,
)

TOP_LEVEL_KEYS = ("title", "metrics", "run", "must_haves", "exit_criteria", "preflight")

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def parse_gate_file(path: Path, *, plan: bool, display: str | None = None) -> GateDocument | None:
    """Read and parse one gate file or phase plan.  ``None`` for a plan without must_haves."""
    display = display or str(path)
    try:  # a regular file of at most 16 MB: a FIFO is refused, never waited on
        text = read_capped(path).decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise GateFileError(f"{display}: cannot read: {err}") from None
    return parse_gate_text(text, path, plan=plan, display=display)


def parse_gate_text(
    text: str, path: Path, *, plan: bool = False, display: str | None = None
) -> GateDocument | None:
    """Parse a gate file's text (or a plan's whole Markdown text) into a GateDocument.

    Raises :class:`GateFileError` whose message is one line naming file, line and column.
    """
    display = display or str(path)
    line_offset = 0
    if plan:
        match = _FRONT_MATTER.match(text)
        if match is None:
            return None
        text = match.group(1) or ""
        line_offset = 1
    where = Located(display, line_offset)
    root = compose(text, where)
    if root is None:
        if plan:
            return None
        return GateDocument(path, None, {}, [])
    if not is_mapping(root):
        raise where.error(root, "a gate file is a mapping of keys (title, must_haves, ...)")
    top = mapping_pairs(root)
    if plan and "must_haves" not in top:
        return None
    if not plan:  # a plan's front matter carries the plan's own keys too (phase, wave, ...)
        for key, (knode, _) in top.items():
            if key not in TOP_LEVEL_KEYS:
                raise where.error(knode, f"unknown key {key!r}{closest(key, TOP_LEVEL_KEYS)}")
    title = _scalar_text(top, "title", where)
    aliases = _metric_aliases(top, where)
    criteria: list[Criterion] = []
    if "must_haves" in top:
        criteria += must_haves(top["must_haves"], where)
    if "exit_criteria" in top:
        criteria += exit_criteria(top["exit_criteria"][1], where)
    reject_duplicates(criteria, display)
    preflight = construct(top["preflight"][1], where) if "preflight" in top else None
    run = run_section(top["run"], where) if "run" in top else None
    return GateDocument(path, title, aliases, criteria, preflight, run)


def _scalar_text(top: dict[str, tuple[Any, Any]], key: str, where: Located) -> str | None:
    if key not in top:
        return None
    node = top[key][1]
    if node.id != "scalar":
        raise where.error(node, f"{key} must be a string")
    return str(node.value)


def _metric_aliases(top: dict[str, tuple[Any, Any]], where: Located) -> dict[str, str]:
    if "metrics" not in top:
        return {}
    node = top["metrics"][1]
    data = construct(node, where)
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise where.error(node, "metrics must map our names to the run's names, "
                                "e.g. {val_loss: eval_loss}")
    return dict(data)


# --------------------------------------------------------------------------- pytest nodes


class GateFile(pytest.File):
    """A ``*.gates.yaml`` file or a ``*-PLAN.md`` plan: one item per criterion per run dir."""

    def __init__(self, *, plan: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan

    def collect(self) -> Iterator[pytest.Item]:
        from pytest_mlgates.items import GateItem, RunDir, get_settings

        document = parse_gate_file(self.path, plan=self.plan, display=self._display())
        if document is None:
            return
        if document.run is not None:  # the run fixture reads the runs as the gate files do
            get_settings(self.config).run_sections[str(self.path)] = document.run
        if document.preflight is not None:  # items only when this session runs preflight
            from pytest_mlgates.preflight import gate_file_items

            yield from gate_file_items(self, document.preflight)
        run_dirs = list(get_settings(self.config).run_dirs)
        runs: list[RunDir | None] = list(run_dirs) or [None]
        for criterion in document.acceptance_criteria():
            if criterion.across_runs is not None and run_dirs:  # one item for the seeds
                yield GateItem.from_parent(
                    self, name=f"{criterion.name}[{ACROSS_RUNS_ID}]", criterion=criterion,
                    document=document, run=None, runs=run_dirs)
                continue
            for run in runs:
                label = criterion.name if run is None else f"{criterion.name}[{run.label}]"
                yield GateItem.from_parent(
                    self, name=label, criterion=criterion, document=document, run=run)

    def _display(self) -> str:
        try:
            return str(self.path.relative_to(self.config.invocation_params.dir))
        except ValueError:
            return str(self.path)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:  # type: ignore[override]
        """A gate file's problems are one line: ``file:line:col: what is wrong``."""
        if isinstance(excinfo.value, MlgatesError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)
