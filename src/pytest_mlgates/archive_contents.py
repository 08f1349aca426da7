"""What an archived session dir holds besides the plugin's own log and results.json.

``summary.md`` (GitHub-flavoured, also appended to ``$GITHUB_STEP_SUMMARY``),
``junit.xml`` (pytest's xunit1 shape, the ``mlgates.*`` values as properties), the dir's
name and time stamps, and the git state of the code under test::

    >>> archive_dir_name(now, "GREEN", "1a2b3c4d")
    '20261125T101500.123456Z-1a2b3c4d-green'
    >>> format_markdown("runs/x", "RED", [record.as_dict() for record in records])
    '### ❌ mlgates: `runs/x` is RED ...'

Text from a run dir or a gate file is a stranger's: in Markdown it links nowhere (a code
span where it could), and everything is capped.  Git runs with a timeout, and only when
the session is archived (``git_state``).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pytest_mlgates.archive_records import PROP, CriterionRecord, capped, count_statuses

__all__ = ["archive_dir_name", "format_markdown", "git_state", "iso_time", "junit_xml"]

_GIT_TIMEOUT_S = 5.0
#: GitHub's limit on a step summary ($GITHUB_STEP_SUMMARY), shared by a session's runs.
SUMMARY_CAP = (1 << 20) - (8 << 10)


def iso_time(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def archive_dir_name(moment: _dt.datetime, verdict: str, uid: str) -> str:
    """``20261125T101500.123456Z-1a2b3c4d-green``: sorts by time, never collides."""
    stamp = moment.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{uid}-{verdict.lower()}"


def git_state(root: Path) -> dict[str, Any] | None:
    """``{commit, dirty}`` of the code under test, or None outside git (or git missing)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False,
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"commit": commit.stdout.strip(), "dirty": dirty}


# --------------------------------------------------------------------------- formats


#: What could make GitHub render a link, an image or HTML in a cell: such text goes in a
#: code span, where GitHub renders none of them.
_LINKY = re.compile(r"://|www\.|@|[\[\]`\\&]|<\S")


def _code(value: Any, cap: int = 300, *, always: bool = False) -> str:
    """Text from a run dir or gate file for a Markdown table cell that links nowhere:
    plain when nothing in it could become a link or HTML, else a code span."""
    text = " ".join(("" if value is None else str(value)).split())
    text = capped(text, cap).replace("|", "\\|")
    if not text or not (always or _LINKY.search(text)):
        return text
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def format_markdown(run: str, verdict: str, criteria: list[dict[str, Any]],
                    limit: int = SUMMARY_CAP) -> str:
    """GitHub-flavoured summary of one run's session (also for $GITHUB_STEP_SUMMARY).

    It links nothing (every value is a code span) and stays under ``limit`` bytes (GitHub
    refuses a step summary over 1 MiB): rows past it are left out, in a line that says so."""
    mark = "✅" if verdict == "GREEN" else "❌"
    head = [
        f"### {mark} mlgates: {_code(run, always=True)} is {verdict}",
        "",
        "| criterion | gate | value | threshold | status |",
        "|---|---|---|---|---|",
    ]
    counts = count_statuses(criteria)
    tail = ["", ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "total"), ""]
    size = len("\n".join(head + tail).encode("utf-8")) + 200  # room for the cut line
    lines = list(head)
    for i, c in enumerate(criteria):
        row = "| " + " | ".join(
            _code(c.get(k)) for k in ("name", "gate", "value", "threshold")) + f" | {c['status']} |"
        size += len(row.encode("utf-8")) + 1
        if size > limit:
            left = len(criteria) - i
            red = sum(1 for rest in criteria[i:] if rest["status"] != "GREEN")
            lines.append(f"\n{left} more criteria ({red} not GREEN) are not shown: GitHub's step "
                         "summary holds 1 MiB; results.json in the archive has them all.")
            break
        lines.append(row)
    return "\n".join(lines + tail)


def junit_xml(
    records: list[CriterionRecord], started: _dt.datetime, finished: _dt.datetime
) -> str:
    """A JUnit XML document (pytest's xunit1 shape) for one run's items, with the
    ``mlgates.*`` values as properties."""
    suite = ET.Element("testsuite", name="mlgates")
    counts = {"failures": 0, "errors": 0, "skipped": 0}
    for record in records:
        parts = record.id.split("::")
        module = parts[0]
        for suffix in (".py", ".yaml", ".yml", ".md"):
            if module.endswith(suffix):
                module = module[: -len(suffix)]
                break
        classname = ".".join([module.replace("/", ".")] + parts[1:-1])
        case = ET.SubElement(
            suite, "testcase", classname=classname, name=parts[-1],
            time=f"{record.duration:.3f}",
        )
        properties = ET.SubElement(case, "properties")
        for key, value in record.props.items():
            ET.SubElement(properties, "property", name=PROP + key, value=str(value))
        message = str(record.as_dict()["message"] or "")
        if record.outcome == "failed":
            counts["failures"] += 1
            ET.SubElement(case, "failure", message=message).text = record.detail or message
        elif record.outcome == "error":
            counts["errors"] += 1
            ET.SubElement(case, "error", message=message).text = record.detail or message
        elif record.outcome == "skipped":
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", type="pytest.skip", message=message)
    suite.set("errors", str(counts["errors"]))
    suite.set("failures", str(counts["failures"]))
    suite.set("skipped", str(counts["skipped"]))
    suite.set("tests", str(len(records)))
    suite.set("time", f"{(finished - started).total_seconds():.3f}")
    suite.set("timestamp", started.astimezone().isoformat(timespec="seconds"))
    suite.set("hostname", os.uname().nodename if hasattr(os, "uname") else "")
    root = ET.Element("testsuites")
    root.append(suite)
    return '<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(root, encoding="unicode") + "\n"
