"""A gate file's ``run:`` section: how to read a run with no layout of its own.

``run: {format: plain, log: ..., epochs_from: 1, checkpoints: ..., best: ..., tracked: ...,
splits: ...}`` (SPEC "A plain run") checked key by key into a
:class:`~pytest_mlgates.rundir.RunSection`; every path stays inside the run dir, and a key
that only describes a plain run's files is refused for a format that knows its own.
"""

from __future__ import annotations

import re
from typing import Any

from pytest_mlgates.gatefile_yaml import Located, closest, construct, is_mapping, mapping_pairs

__all__ = ["PLAIN_ONLY_KEYS", "RUN_KEYS", "run_section"]

#: Keys of a gate file's ``run:`` section (how to read a run with no layout of its own).
RUN_KEYS = ("format", "log", "epochs_from", "checkpoints", "best", "tracked", "splits")
#: ``run:`` keys that describe a plain run's files; other formats know where theirs are.
PLAIN_ONLY_KEYS = ("log", "epochs_from", "checkpoints", "best", "tracked")


def _relative_path(value: Any, node: Any, label: str, where: Located) -> str:
    """A path relative to the run dir: a non-empty string, not absolute, no ``..``."""
    if not isinstance(value, str) or not value.strip():
        raise where.error(node, f"{label} must be a path relative to the run dir, got {value!r}")
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":") or ".." in parts or "\x00" in value:
        raise where.error(node, f"{label} {value!r} must stay inside the run dir (relative, no '..')")
    return value


def run_section(pair: tuple[Any, Any], where: Located) -> Any:
    """The ``run:`` section: how a run with no layout of its own is read (SPEC "A plain run")::

        run: {format: plain, log: logs/metrics.csv, epochs_from: 1, checkpoints: "ckpt/*.pt",
              best: "ckpt/best_{metric}.pt", tracked: [{metric: val_loss, mode: min}], splits: splits.json}
    """
    from pytest_mlgates.formats import FORMATS
    from pytest_mlgates.rundir import RunSection, default_mode

    key_node, node = pair
    if node.id == "scalar" and node.value in ("", "~", "null"):
        return None  # ``run:`` left empty: read the run as if it were absent
    if not is_mapping(node):
        raise where.error(node, f"run must be a mapping with keys {', '.join(RUN_KEYS)}")
    pairs = mapping_pairs(node)
    for key, (knode, _) in pairs.items():
        if key not in RUN_KEYS:
            raise where.error(knode, f"unknown key run.{key}{closest(key, RUN_KEYS)}")
    values = {key: (construct(v, where), v) for key, (_, v) in pairs.items()}
    fields: dict[str, Any] = {}
    if "format" in values:
        fmt, vnode = values["format"]
        if fmt not in FORMATS:
            raise where.error(vnode, f"run.format {fmt!r} is not a run format{closest(str(fmt), FORMATS)}")
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
                raise where.error(vnode, f"unknown key run.tracked.{unknown[0]}{closest(str(unknown[0]), ('metric', 'mode'))}")
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
