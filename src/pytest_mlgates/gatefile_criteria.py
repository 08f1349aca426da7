"""A gate file's criteria: ``must_haves`` (truths, artifacts, key links) and ``exit_criteria``.

Each entry becomes one :class:`~pytest_mlgates.gatefile.Criterion` with the line it came
from: a truth (a sentence, or a sentence with ``check:``/``gate:``), an artifact, a key
link, or an exit criterion with exactly one of ``check:`` (compiled here, its errors
pointing at the file's column) or ``gate:`` (its parameters validated against the gate
registry, never loading the gate itself), plus ``stage:`` and ``across_runs:``.  Names are
unique within a file.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from pytest_mlgates.errors import GateFileError, MlgatesError
from pytest_mlgates.gatefile import Criterion
from pytest_mlgates.gatefile_yaml import Located, closest, construct, is_mapping, mapping_pairs

__all__ = ["ACROSS_RUNS_ID", "CRITERION_KEYS", "STAGES", "exit_criteria", "must_haves", "reject_duplicates",
           "slugify"]

MUST_HAVE_KEYS = ("truths", "artifacts", "key_links")
STAGES = ("acceptance", "inflight", "preflight")
#: Keys of a criterion that are about the criterion itself, never gate parameters.
CRITERION_KEYS = ("name", "stage", "description", "across_runs")
#: What ends the id of a criterion's one item for all run dirs: ``name[across_runs]``.
ACROSS_RUNS_ID = "across_runs"
#: Keys of ``across_runs:`` (one item judges every --run-dir, seeds of one experiment).
ACROSS_RUNS_KEYS = ("at_least",)


def slugify(text: str, limit: int = 60) -> str:
    """A criterion name from a truth's text: ``"val_loss decreases"`` -> ``val_loss_decreases``."""
    slug = re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")
    return (slug[:limit].rstrip("_") or "truth")


def must_haves(pair: tuple[Any, Any], where: Located) -> list[Criterion]:
    _, node = pair
    if node.id == "scalar" and node.value in ("", "~", "null"):
        return []
    if not is_mapping(node):
        raise where.error(node, "must_haves must be a mapping with truths, artifacts, key_links")
    out: list[Criterion] = []
    for key, (k, v) in mapping_pairs(node).items():
        if key not in MUST_HAVE_KEYS:
            raise where.error(k, f"unknown key must_haves.{key}{closest(key, MUST_HAVE_KEYS)}")
        for entry in _sequence(v, f"must_haves.{key}", where):
            if key == "truths":
                crit = _truth(entry, where)
            elif key == "artifacts":
                crit = _artifact(entry, where)
            else:
                crit = _key_link(entry, where)
            out.append(_across_runs(crit, entry, where))
    return out


def _sequence(node: Any, label: str, where: Located) -> list[Any]:
    if node.id == "scalar" and node.value in ("", "~", "null"):
        return []
    if node.id != "sequence":
        raise where.error(node, f"{label} must be a list")
    return list(node.value)


def _entry_mapping(node: Any, label: str, where: Located) -> dict[str, Any]:
    if not is_mapping(node):
        raise where.error(node, f"each entry of {label} must be a mapping")
    data = construct(node, where)
    for key in data:
        if not isinstance(key, str):
            raise where.error(node, f"{label}: keys must be strings, got {key!r}")
    return dict(data)


def _stage(data: dict[str, Any], node: Any, where: Located) -> str:
    stage = data.get("stage", "acceptance")
    if stage not in STAGES:
        raise where.error(node, f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return str(stage)


def _name(data: dict[str, Any], default: str | None, node: Any, where: Located) -> str:
    name = data.get("name", default)
    if not isinstance(name, str) or not name.strip():
        raise where.error(node, "every criterion needs a name: (a non-empty string)")
    if "[" in name or "]" in name or "::" in name:
        raise where.error(node, f"criterion name {name!r} may not contain '[', ']' or '::'")
    return name.strip()


def _truth(node: Any, where: Located) -> Criterion:
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


def _artifact(node: Any, where: Located) -> Criterion:
    data = _entry_mapping(node, "must_haves.artifacts", where)
    path = data.get("path")
    if not isinstance(path, str) or not path:
        raise where.error(node, "an artifact needs path: (relative to the run dir)")
    name = _name(data, f"artifact:{path}", node, where)
    params = {k: v for k, v in data.items() if k not in CRITERION_KEYS}
    return _gate_criterion(name, "artifact", params, data, node, where)


def _key_link(node: Any, where: Located) -> Criterion:
    data = _entry_mapping(node, "must_haves.key_links", where)
    src, dst = data.get("from"), data.get("to")
    if not isinstance(src, str) or not isinstance(dst, str):
        raise where.error(node, "a key link needs from: (run dir path) and to: (code path)")
    name = _name(data, f"key_link:{src}->{dst}", node, where)
    params = {k: v for k, v in data.items() if k not in CRITERION_KEYS}
    return _gate_criterion(name, "key_link", params, data, node, where)


def exit_criteria(node: Any, where: Located) -> list[Criterion]:
    out = []
    for entry in _sequence(node, "exit_criteria", where):
        data = _entry_mapping(entry, "exit_criteria", where)
        name = _name(data, None, entry, where)
        out.append(_across_runs(_checked_criterion(name, data, entry, where), entry, where))
    return out


def _across_runs(crit: Criterion, node: Any, where: Located) -> Criterion:
    """``across_runs: {at_least: K}`` of a criterion, checked here: a mapping whose only key
    is ``at_least``, a whole number from 1 up (it may not exceed the number of ``--run-dir``
    seeds either, but that is only known when the item runs: a RED line naming the count)."""
    if not is_mapping(node) or "across_runs" not in mapping_pairs(node):
        return crit
    value_node = mapping_pairs(node)["across_runs"][1]
    value = construct(value_node, where)
    usage = "across_runs must be a mapping {at_least: K}, K a whole number from 1 to the number of --run-dir seeds"
    if not isinstance(value, dict):
        raise where.error(value_node, f"criterion {crit.name!r}: {usage}, got {value!r}")
    for key in value:
        if key not in ACROSS_RUNS_KEYS:
            raise where.error(value_node, f"criterion {crit.name!r}: unknown key across_runs.{key}"
                                          f"{closest(str(key), ACROSS_RUNS_KEYS)}")
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
    where: Located,
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
                                    f"{closest(key, allowed)}")
    source = data["check"]
    if not isinstance(source, str) or not source.strip():
        raise where.error(node, f"criterion {name!r}: check must be an expression string")
    check = _compile(source, mapping_pairs(node)["check"][1], where)
    return Criterion(name, "check", where.line(node), column=where.column(node), source=source,
                     text=text,
                     stage=_stage(data, node, where), check=check)


def _compile(source: str, value_node: Any, where: Located) -> Any:
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
    where: Located,
    *,
    text: str | None = None,
) -> Criterion:
    from pytest_mlgates import gates

    pairs = mapping_pairs(node)
    # The gate's module is imported here for its parameters (gate modules import nothing
    # heavy at module level: collecting 1,000 criteria stays fast); what a gate needs to run
    # (numpy, torch) loads when it first runs.
    at = pairs["gate"][1] if "gate" in pairs and gate not in gates.GATES else node
    try:
        gates.validate_params(gate, params)
    except MlgatesError as err:
        try:
            known = set(gates.gate_params(gate)) if gate in gates.GATES else None
        except MlgatesError:  # a GATES line naming no declared gate: err says so
            known = None
        if known is not None:  # point at the parameter the gate does not know or take
            for key, (knode, _) in pairs.items():
                if key in params and (key not in known or f"parameter '{key}' " in str(err)):
                    at = knode
                    break
        raise where.error(at, f"criterion {name!r}: {err}") from None
    return Criterion(name, "gate", where.line(node), column=where.column(node), gate=gate,
                     text=text, params=params,
                     stage=_stage(data, node, where))


def reject_duplicates(criteria: list[Criterion], display: str) -> None:
    seen: dict[str, int] = {}
    for crit in criteria:
        if crit.name in seen:
            raise GateFileError(
                f"{display}:{crit.line}:{crit.column}: duplicate criterion name {crit.name!r} "
                f"(first at line {seen[crit.name]}); names must be unique in a file")
        seen[crit.name] = crit.line
