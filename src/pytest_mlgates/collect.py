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
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_mlgates.errors import GateFileError, MlgatesError
from pytest_mlgates.gatefile import Criterion, GateDocument, read_capped

TOP_LEVEL_KEYS = ("title", "metrics", "run", "must_haves", "exit_criteria", "preflight")
#: Keys of a gate file's ``run:`` section (how to read a run with no layout of its own).
RUN_KEYS = ("format", "log", "epochs_from", "checkpoints", "best", "tracked", "splits")
#: ``run:`` keys that describe a plain run's files; other formats know where theirs are.
PLAIN_ONLY_KEYS = ("log", "epochs_from", "checkpoints", "best", "tracked")
MUST_HAVE_KEYS = ("truths", "artifacts", "key_links")
STAGES = ("acceptance", "inflight", "preflight")
#: Keys of a criterion that are about the criterion itself, never gate parameters.
CRITERION_KEYS = ("name", "stage", "description", "across_runs")
#: What ends the id of a criterion's one item for all run dirs: ``name[across_runs]``.
ACROSS_RUNS_ID = "across_runs"
#: Keys of ``across_runs:`` (one item judges every --run-dir, seeds of one experiment).
ACROSS_RUNS_KEYS = ("at_least",)

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


# --------------------------------------------------------------------------- parsing


class _Located:
    """A YAML node's position, 1-based, in the file the user edits."""

    def __init__(self, display: str, line_offset: int) -> None:
        import yaml

        self.display = display
        self.line_offset = line_offset
        #: One safe constructor per file: builds plain data from nodes, never Python objects.
        self.constructor = yaml.constructor.SafeConstructor()

    def line(self, node: Any) -> int:
        return int(node.start_mark.line) + 1 + self.line_offset

    def column(self, node: Any) -> int:
        return int(node.start_mark.column) + 1

    def error(self, node: Any, message: str, *, column: int | None = None) -> GateFileError:
        col = self.column(node) if column is None else column
        return GateFileError(f"{self.display}:{self.line(node)}:{col}: {message}")


def _closest(word: str, options: tuple[str, ...] | list[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else f" (valid: {', '.join(options)})"


def _pairs(node: Any) -> dict[str, tuple[Any, Any]]:
    """Key string -> (key node, value node) of a YAML mapping node."""
    return {str(k.value): (k, v) for k, v in node.value}


def _is_mapping(node: Any) -> bool:
    return node.id == "mapping"


def slugify(text: str, limit: int = 60) -> str:
    """A criterion name from a truth's text: ``"val_loss decreases"`` -> ``val_loss_decreases``."""
    slug = re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")
    return (slug[:limit].rstrip("_") or "truth")


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
    where = _Located(display, line_offset)
    root = _compose(text, where)
    if root is None:
        if plan:
            return None
        return GateDocument(path, None, {}, [])
    if not _is_mapping(root):
        raise where.error(root, "a gate file is a mapping of keys (title, must_haves, ...)")
    top = _pairs(root)
    if plan and "must_haves" not in top:
        return None
    if not plan:  # a plan's front matter carries the plan's own keys too (phase, wave, ...)
        for key, (knode, _) in top.items():
            if key not in TOP_LEVEL_KEYS:
                raise where.error(knode, f"unknown key {key!r}{_closest(key, TOP_LEVEL_KEYS)}")
    title = _scalar_text(top, "title", where)
    aliases = _metric_aliases(top, where)
    criteria: list[Criterion] = []
    if "must_haves" in top:
        criteria += _must_haves(top["must_haves"], where)
    if "exit_criteria" in top:
        criteria += _exit_criteria(top["exit_criteria"][1], where)
    _reject_duplicates(criteria, display)
    preflight = _construct(top["preflight"][1], where) if "preflight" in top else None
    run = _run_section(top["run"], where) if "run" in top else None
    return GateDocument(path, title, aliases, criteria, preflight, run)


def _compose(text: str, where: _Located) -> Any:
    """Compose (not construct) the YAML: nodes keep their positions for error messages.

    Only the safe constructor ever builds Python objects from them (see :func:`_construct`),
    so a ``!!python/...`` tag is an error, never code.  What the document would expand to is
    counted first (``bounded.check_yaml``): an alias bomb, a 5000-digit integer or absurd
    nesting is one line at its position, before a node is built.
    """
    import yaml

    from pytest_mlgates.bounded import YamlRefused, check_yaml

    try:
        check_yaml(text)
    except YamlRefused as err:
        line = err.line + where.line_offset
        at = f":{line}:{err.column}" if err.line else ""
        raise GateFileError(f"{where.display}{at}: {err.problem}; refused") from None
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        raise _yaml_error(err, where) from None
    except yaml.YAMLError as err:
        raise GateFileError(f"{where.display}: invalid YAML: {err}") from None
    finally:
        loader.dispose()


def _construct(node: Any, where: _Located) -> Any:
    """Plain Python data of a node, through PyYAML's safe constructor only."""
    import yaml

    try:
        return where.constructor.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as err:
        raise _yaml_error(err, where) from None
    except (ValueError, TypeError, OverflowError) as err:  # a date like 2001-13-45
        from pytest_mlgates.bounded import number_problem

        raise where.error(node, f"invalid YAML value ({number_problem(err)})") from None


def _yaml_error(err: Any, where: _Located) -> GateFileError:
    mark = err.problem_mark or err.context_mark
    problem = " ".join(str(err.problem or err.context or "invalid YAML").split())
    if mark is None:
        return GateFileError(f"{where.display}: invalid YAML: {problem}")
    line = mark.line + 1 + where.line_offset
    return GateFileError(f"{where.display}:{line}:{mark.column + 1}: invalid YAML: {problem}")


def _scalar_text(top: dict[str, tuple[Any, Any]], key: str, where: _Located) -> str | None:
    if key not in top:
        return None
    node = top[key][1]
    if node.id != "scalar":
        raise where.error(node, f"{key} must be a string")
    return str(node.value)


def _metric_aliases(top: dict[str, tuple[Any, Any]], where: _Located) -> dict[str, str]:
    if "metrics" not in top:
        return {}
    node = top["metrics"][1]
    data = _construct(node, where)
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise where.error(node, "metrics must map our names to the run's names, "
                                "e.g. {val_loss: eval_loss}")
    return dict(data)


def _relative_path(value: Any, node: Any, label: str, where: _Located) -> str:
    """A path relative to the run dir: a non-empty string, not absolute, no ``..``."""
    if not isinstance(value, str) or not value.strip():
        raise where.error(node, f"{label} must be a path relative to the run dir, got {value!r}")
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":") or ".." in parts or "\x00" in value:
        raise where.error(node, f"{label} {value!r} must stay inside the run dir (relative, no '..')")
    return value


def _run_section(pair: tuple[Any, Any], where: _Located) -> Any:
    """The ``run:`` section: how a run with no layout of its own is read (SPEC "A plain run")::

        run: {format: plain, log: logs/metrics.csv, epochs_from: 1, checkpoints: "ckpt/*.pt",
              best: "ckpt/best_{metric}.pt", tracked: [{metric: val_loss, mode: min}], splits: splits.json}
    """
    from pytest_mlgates.formats import FORMATS
    from pytest_mlgates.rundir import RunSection, default_mode

    key_node, node = pair
    if node.id == "scalar" and node.value in ("", "~", "null"):
        return None  # ``run:`` left empty: read the run as if it were absent
    if not _is_mapping(node):
        raise where.error(node, f"run must be a mapping with keys {', '.join(RUN_KEYS)}")
    pairs = _pairs(node)
    for key, (knode, _) in pairs.items():
        if key not in RUN_KEYS:
            raise where.error(knode, f"unknown key run.{key}{_closest(key, RUN_KEYS)}")
    values = {key: (_construct(v, where), v) for key, (_, v) in pairs.items()}
    fields: dict[str, Any] = {}
    if "format" in values:
        fmt, vnode = values["format"]
        if fmt not in FORMATS:
            raise where.error(vnode, f"run.format {fmt!r} is not a run format{_closest(str(fmt), FORMATS)}")
        fields["format"] = fmt
    for key in ("log", "checkpoints", "splits"):
        if key in values:
            fields[key] = _relative_path(values[key][0], values[key][1], f"run.{key}", where)
    if "best" in values:
        best, vnode = values["best"]
        best = _relative_path(best, vnode, "run.best", where)
        if "{metric}" not in best or re.search(r"\{(?!metric\})", best):
            raise where.error(vnode, f"run.best {best!r} must hold {{metric}} (and no other {{...}}), "
                                     "e.g. \"ckpt/best_{metric}.pt\"")
        fields["best"] = best
    if "epochs_from" in values:
        first, vnode = values["epochs_from"]
        if first not in (0, 1) or isinstance(first, bool):
            raise where.error(vnode, f"run.epochs_from must be 0 or 1 (the number of the log's first epoch), got {first!r}")
        fields["epochs_from"] = int(first)
    if "tracked" in values:
        tracked, vnode = values["tracked"]
        entries = [tracked] if isinstance(tracked, (str, dict)) else tracked
        out: list[tuple[str, str]] = []
        if not isinstance(entries, list) or not entries:
            raise where.error(vnode, "run.tracked must be a list of metric names or {metric, mode} mappings")
        for entry in entries:
            if isinstance(entry, str) and entry:
                out.append((entry, default_mode(entry)))
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("metric"), str) or not entry["metric"]:
                raise where.error(vnode, f"run.tracked entry {entry!r} must be a metric name or {{metric, mode}}")
            unknown = [k for k in entry if k not in ("metric", "mode")]
            if unknown:
                raise where.error(vnode, f"unknown key run.tracked.{unknown[0]}{_closest(str(unknown[0]), ('metric', 'mode'))}")
            mode = entry.get("mode", default_mode(entry["metric"]))
            if mode not in ("min", "max"):
                raise where.error(vnode, f"run.tracked mode of {entry['metric']!r} must be 'min' or 'max', got {mode!r}")
            out.append((entry["metric"], mode))
        fields["tracked"] = tuple(out)
    section = RunSection(**fields, origin=f"{where.display}:{where.line(key_node)}")
    fmt = section.forced_format()
    if fmt == "plain" and not section.log:
        raise where.error(node, "run: format: plain needs log: (the CSV or JSONL log, relative to the run dir)")
    if fmt != "plain":
        from pytest_mlgates.formats import format_module

        # a format whose files do not say everything (a Keras CSVLogger's file name, the
        # metric a .keras best file was kept for) takes some of these keys too
        accepted = getattr(format_module(fmt), "SECTION_KEYS", ()) if fmt else ()
        for key in PLAIN_ONLY_KEYS:
            if key in values and key not in accepted:
                knode = pairs[key][0]
                takes = f"; format: {fmt} takes {', '.join(accepted)}" if accepted else ""
                raise where.error(knode, f"run.{key} describes a plain run's files; it needs format: plain"
                                         + (f" (this run: says format: {fmt}{takes})" if fmt else ""))
    return section


def _must_haves(pair: tuple[Any, Any], where: _Located) -> list[Criterion]:
    _, node = pair
    if node.id == "scalar" and node.value in ("", "~", "null"):
        return []
    if not _is_mapping(node):
        raise where.error(node, "must_haves must be a mapping with truths, artifacts, key_links")
    out: list[Criterion] = []
    for key, (k, v) in _pairs(node).items():
        if key not in MUST_HAVE_KEYS:
            raise where.error(k, f"unknown key must_haves.{key}{_closest(key, MUST_HAVE_KEYS)}")
        for entry in _sequence(v, f"must_haves.{key}", where):
            if key == "truths":
                crit = _truth(entry, where)
            elif key == "artifacts":
                crit = _artifact(entry, where)
            else:
                crit = _key_link(entry, where)
            out.append(_across_runs(crit, entry, where))
    return out


def _sequence(node: Any, label: str, where: _Located) -> list[Any]:
    if node.id == "scalar" and node.value in ("", "~", "null"):
        return []
    if node.id != "sequence":
        raise where.error(node, f"{label} must be a list")
    return list(node.value)


def _entry_mapping(node: Any, label: str, where: _Located) -> dict[str, Any]:
    if not _is_mapping(node):
        raise where.error(node, f"each entry of {label} must be a mapping")
    data = _construct(node, where)
    for key in data:
        if not isinstance(key, str):
            raise where.error(node, f"{label}: keys must be strings, got {key!r}")
    return dict(data)


def _stage(data: dict[str, Any], node: Any, where: _Located) -> str:
    stage = data.get("stage", "acceptance")
    if stage not in STAGES:
        raise where.error(node, f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return str(stage)


def _name(data: dict[str, Any], default: str | None, node: Any, where: _Located) -> str:
    name = data.get("name", default)
    if not isinstance(name, str) or not name.strip():
        raise where.error(node, "every criterion needs a name: (a non-empty string)")
    if "[" in name or "]" in name or "::" in name:
        raise where.error(node, f"criterion name {name!r} may not contain '[', ']' or '::'")
    return name.strip()


def _truth(node: Any, where: _Located) -> Criterion:
    if node.id == "scalar":
        text = str(node.value)
        if not text.strip():
            raise where.error(node, "a truth is a non-empty sentence")
        return Criterion(slugify(text), "truth", where.line(node), column=where.column(node),
                         text=text)
    data = _entry_mapping(node, "must_haves.truths", where)
    if "truth" not in data or not isinstance(data["truth"], str):
        raise where.error(node, "a truth entry needs truth: \"the sentence\" (and check: or gate:)")
    text = data["truth"]
    name = _name(data, slugify(text), node, where)
    rest = {k: v for k, v in data.items() if k != "truth"}
    if "check" not in rest and "gate" not in rest:
        extra = [k for k in rest if k not in CRITERION_KEYS]
        if extra:
            raise where.error(node, f"unknown key {extra[0]!r} in a truth without check/gate")
        return Criterion(name, "truth", where.line(node), column=where.column(node), text=text,
                         stage=_stage(data, node, where))
    return _checked_criterion(name, rest, node, where, extra_keys=("truth",), text=text)


def _artifact(node: Any, where: _Located) -> Criterion:
    data = _entry_mapping(node, "must_haves.artifacts", where)
    path = data.get("path")
    if not isinstance(path, str) or not path:
        raise where.error(node, "an artifact needs path: (relative to the run dir)")
    name = _name(data, f"artifact:{path}", node, where)
    params = {k: v for k, v in data.items() if k not in CRITERION_KEYS}
    return _gate_criterion(name, "artifact", params, data, node, where)


def _key_link(node: Any, where: _Located) -> Criterion:
    data = _entry_mapping(node, "must_haves.key_links", where)
    src, dst = data.get("from"), data.get("to")
    if not isinstance(src, str) or not isinstance(dst, str):
        raise where.error(node, "a key link needs from: (run dir path) and to: (code path)")
    name = _name(data, f"key_link:{src}->{dst}", node, where)
    params = {k: v for k, v in data.items() if k not in CRITERION_KEYS}
    return _gate_criterion(name, "key_link", params, data, node, where)


def _exit_criteria(node: Any, where: _Located) -> list[Criterion]:
    out = []
    for entry in _sequence(node, "exit_criteria", where):
        data = _entry_mapping(entry, "exit_criteria", where)
        name = _name(data, None, entry, where)
        out.append(_across_runs(_checked_criterion(name, data, entry, where), entry, where))
    return out


def _across_runs(crit: Criterion, node: Any, where: _Located) -> Criterion:
    """``across_runs: {at_least: K}`` of a criterion, checked here: a mapping whose only key
    is ``at_least``, a whole number from 1 up (it may not exceed the number of ``--run-dir``
    seeds either, but that is only known when the item runs: a RED line naming the count)."""
    if not _is_mapping(node) or "across_runs" not in _pairs(node):
        return crit
    value_node = _pairs(node)["across_runs"][1]
    value = _construct(value_node, where)
    usage = "across_runs must be a mapping {at_least: K}, K a whole number from 1 to the number of --run-dir seeds"
    if not isinstance(value, dict):
        raise where.error(value_node, f"criterion {crit.name!r}: {usage}, got {value!r}")
    for key in value:
        if key not in ACROSS_RUNS_KEYS:
            raise where.error(value_node, f"criterion {crit.name!r}: unknown key across_runs.{key}"
                                          f"{_closest(str(key), ACROSS_RUNS_KEYS)}")
    at_least = value.get("at_least")
    if isinstance(at_least, bool) or not isinstance(at_least, int) or at_least < 1:
        raise where.error(value_node, f"criterion {crit.name!r}: across_runs.at_least must be a whole "
                                      f"number >= 1 (valid: 1 to the number of --run-dir seeds), "
                                      f"got {at_least!r}")
    return dataclasses.replace(crit, across_runs=at_least)


def _checked_criterion(
    name: str,
    data: dict[str, Any],
    node: Any,
    where: _Located,
    *,
    extra_keys: tuple[str, ...] = (),
    text: str | None = None,
) -> Criterion:
    """A criterion with exactly one of ``check:`` (an expression) or ``gate:`` (+ params)."""
    if ("check" in data) == ("gate" in data):
        raise where.error(node, f"criterion {name!r} needs exactly one of check: or gate:")
    if "gate" in data:
        gate = data["gate"]
        if not isinstance(gate, str):
            raise where.error(node, f"criterion {name!r}: gate must be a gate's name")
        params = {k: v for k, v in data.items()
                  if k not in CRITERION_KEYS and k != "gate" and k not in extra_keys}
        return _gate_criterion(name, gate, params, data, node, where, text=text)
    allowed = (*CRITERION_KEYS, "check", *extra_keys)
    for key in data:
        if key not in allowed:
            raise where.error(node, f"criterion {name!r}: unknown key {key!r} next to check:"
                                    f"{_closest(key, allowed)}")
    source = data["check"]
    if not isinstance(source, str) or not source.strip():
        raise where.error(node, f"criterion {name!r}: check must be an expression string")
    check = _compile(source, _pairs(node)["check"][1], where)
    return Criterion(name, "check", where.line(node), column=where.column(node), source=source,
                     text=text,
                     stage=_stage(data, node, where), check=check)


def _compile(source: str, value_node: Any, where: _Located) -> Any:
    from pytest_mlgates.errors import ExprError
    from pytest_mlgates.expr import compile_check

    try:
        return compile_check(source)
    except ExprError as err:
        quoted = 1 if getattr(value_node, "style", None) in ('"', "'") else 0
        offset = int(getattr(err, "offset", 0) or 0)
        column = where.column(value_node) + quoted + offset
        # The file's column replaces the expression's own "at column N".
        reason = re.sub(r"\s+at column \d+", "", str(err))
        raise where.error(value_node, f"bad check {source!r}: {reason}", column=column) from None


def _gate_criterion(
    name: str,
    gate: str,
    params: dict[str, Any],
    data: dict[str, Any],
    node: Any,
    where: _Located,
    *,
    text: str | None = None,
) -> Criterion:
    from pytest_mlgates import gates

    pairs = _pairs(node)
    # Only the registry is consulted here; a gate's implementation (and what it imports)
    # loads when the gate first runs, so collecting 1,000 criteria stays fast.
    at = pairs["gate"][1] if "gate" in pairs and gate not in gates.GATE_NAMES else node
    try:
        gates.validate_params(gate, params)
    except MlgatesError as err:
        if gate in gates.GATE_NAMES:  # point at the parameter the gate does not know or take
            known = set(gates.gate_params(gate))
            for key, (knode, _) in pairs.items():
                if key in params and (key not in known or f"parameter '{key}' " in str(err)):
                    at = knode
                    break
        raise where.error(at, f"criterion {name!r}: {err}") from None
    return Criterion(name, "gate", where.line(node), column=where.column(node), gate=gate,
                     text=text, params=params,
                     stage=_stage(data, node, where))


def _reject_duplicates(criteria: list[Criterion], display: str) -> None:
    seen: dict[str, int] = {}
    for crit in criteria:
        if crit.name in seen:
            raise GateFileError(
                f"{display}:{crit.line}:{crit.column}: duplicate criterion name {crit.name!r} "
                f"(first at line {seen[crit.name]}); names must be unique in a file")
        seen[crit.name] = crit.line


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
