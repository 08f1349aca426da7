"""Gates about the run dir's files: provenance, plots, artifacts, key links, splits."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path
from typing import Any

from pytest_mlgates.bounded import shown_value
from pytest_mlgates.errors import GateFailure, RunDirError
from pytest_mlgates.formats._mutations import Mutation, Mutations, leak_split, remove
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates import params as p
from pytest_mlgates.gates._common import as_list, engine_only
from pytest_mlgates.rundir import Run
from pytest_mlgates.runfiles import (
    MAX_TEXT_BYTES,
    open_run_file,
    read_bytes_file,
    read_json_file,
    read_text_file,
    resolve_inside,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _sha256(run: Run, rel: str) -> str:
    h = hashlib.sha256()
    with open_run_file(run.path, rel, run.shown(run.path / rel)) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _exists(run: Run, rel: str) -> Path | None:
    """The resolved path when ``rel`` is a file inside the run dir; None when absent."""
    path = run.resolve(rel)
    if not path.exists():
        return None
    return path


def _not_found(looked: list[str]) -> str:
    """``a: not found`` naming every place looked at: ``a: not found (nor b)``."""
    return f"{looked[0]}: not found" + (f" (nor {', '.join(looked[1:])})" if len(looked) > 1 else "")


# --------------------------------------------------------------------------- provenance


@p.gate(doc="launched from an experiment config through the entry point; config hash matches",
        params={"allow_defaults": p.Param(p.boolean, False)}, mutations=engine_only("provenance"))
def provenance(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    """Launched through the entry point from an experiment config whose resolved copy is
    the ``config.yaml`` in the run dir (sha256), and not with ``--allow-defaults``."""
    shown = run.shown(run.path / "provenance.json")
    prov = run.provenance
    threshold = "entry point + experiment config + matching sha256"
    if prov is None:
        return GateResult(False, "missing", threshold, f"{shown}: not found; needs provenance written at launch")
    entry = prov.get("entry_point")
    if not isinstance(entry, str) or not entry.strip():
        return GateResult(False, "no entry_point", threshold,
                          f"{shown}: entry_point = {shown_value(entry)}; needs the command that launched the run")
    config_path = prov.get("config_path")
    if not isinstance(config_path, str) or not config_path.strip():
        return GateResult(False, "no config_path", threshold,
                          f"{shown}: config_path = {shown_value(config_path)}; needs a run launched from an "
                          "experiment config, not defaults")
    if prov.get("allow_defaults") and not params["allow_defaults"]:
        return GateResult(False, "allow_defaults", threshold,
                          f"{shown}: allow_defaults = true; needs a run that did not bypass the default-config guard")
    expected = prov.get("resolved_config_sha256")
    cfg = run.path / "config.yaml"
    if not (cfg.exists() or cfg.is_symlink()):
        return GateResult(False, "config.yaml missing", threshold, f"{run.shown(cfg)}: not found; needs the resolved config")
    actual = _sha256(run, "config.yaml")  # a link out of the run dir or a FIFO: one line, never read
    if not isinstance(expected, str) or actual != expected:
        return GateResult(False, actual[:12], f"sha256 {str(expected)[:12]}",
                          f"{run.shown(cfg)}: sha256 = {actual[:12]}...; needs {str(expected)[:12]}... "
                          f"(resolved_config_sha256 in {shown}): the config was changed after the run")
    return GateResult(True, actual[:12], threshold,
                      f"launched by '{entry}' from {config_path}; config.yaml sha256 {actual[:12]}... matches")


# --------------------------------------------------------------------------- plots


#: A plot larger than this is refused before decoding (a 40000x40000 PNG of a few MB
#: would otherwise decode into gigabytes).
MAX_PLOT_PIXELS = 25_000_000


def _png_size(data: bytes, shown: str) -> tuple[int, int]:
    if not data.startswith(PNG_SIGNATURE):
        raise RunDirError(f"{shown}: not a PNG (bad signature)")
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise RunDirError(f"{shown}: not a PNG (no IHDR chunk)")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _check_png(run: Run, rel: str, shown: str, min_size: int) -> str | None:
    """None when the PNG is real, large enough and not blank; else what is wrong."""
    size = run.file(rel).stat().st_size
    if size > MAX_TEXT_BYTES:
        return f"{shown}: {size} bytes, too large for a plot"
    data = read_bytes_file(run.path, rel, shown)
    try:
        width, height = _png_size(data, shown)
    except RunDirError as exc:
        return str(exc)
    if width < min_size or height < min_size:
        return f"{shown}: {width}x{height} pixels; needs at least {min_size}x{min_size}"
    if width * height > MAX_PLOT_PIXELS:
        return (f"{shown}: {width}x{height} pixels, more than the {MAX_PLOT_PIXELS} a plot may have; "
                "not decoded")
    import io

    from pytest_mlgates.errors import require_extra

    image_module = require_extra("PIL.Image", "gate plots")
    try:
        with image_module.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.load()
            extrema = image.getextrema()
    except Exception as exc:  # noqa: BLE001 - a corrupt PNG raises many types
        return f"{shown}: PNG does not decode ({exc.__class__.__name__}: {str(exc)[:100]})"
    bands = extrema if extrema and isinstance(extrema[0], tuple) else [extrema]
    if all(low == high for low, high in bands):
        return f"{shown}: blank image (every pixel the same)"
    return None


@p.gate(doc="every plot is a real, non-blank PNG",
        params={"files": p.Param(p.strings, ["plots/loss_curve.png", "plots/recall_curve.png"]),
                "min_size": p.Param(p.pos_int, 100)},
        mutations=engine_only("plots"))
def plots(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    files = as_list(params["files"]) or []
    min_size = int(params["min_size"])
    for rel in files:
        path = _exists(run, rel)
        shown = run.shown(run.path / rel)
        if path is None:
            return GateResult(False, "missing", "real PNG", f"{shown}: not found; needs a plot")
        if path.is_dir():
            return GateResult(False, "not a file", "real PNG", f"{shown}: is not a file; needs a PNG")
        # the file found (an MLflow run's may be in its artifacts folder), inside the run
        found = path.relative_to(run.path).as_posix() if path.is_relative_to(run.path) else rel
        problem = _check_png(run, found, shown, min_size)
        if problem:
            return GateResult(False, "bad PNG", "real PNG", problem)
    return GateResult(True, f"{len(files)} files", "real PNG",
                      f"{len(files)} plots are real, non-blank PNGs of at least {min_size}x{min_size}")


# --------------------------------------------------------------------------- artifact


def artifact_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    rel = str(params.get("path"))
    return [Mutation(f"remove:{rel}", f"{rel} deleted", remove(rel))], ""


@p.gate(doc="a file exists in the run dir (optionally containing text or loading as a model)",
        params={"path": p.Param(p.string, required=True), "contains": p.Param(p.string),
                "loads": p.Param(p.loads), "provides": p.Param(p.string)},
        mutations=artifact_mutations)
def artifact(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    rel = params["path"]
    if not isinstance(rel, str):
        raise GateFailure("gate artifact: parameter 'path' is required")
    path, looked = run.locate(rel)  # an MLflow run looks in its run folder and its artifacts
    shown = looked[0]
    what = params.get("provides") or "the artifact"
    if path is None:
        return GateResult(False, "missing", "exists", f"{_not_found(looked)}; needs {what}")
    contains = params.get("contains")
    if contains is not None:
        if path.is_dir():
            return GateResult(False, "directory", f"contains {contains!r}", f"{shown}: is a directory; needs a text file")
        text = read_text_file(path, shown, root=run.path)
        if contains not in text:
            first = text.splitlines()[0][:60] if text else ""
            return GateResult(False, "absent", f"contains {contains!r}",
                              f"{shown}: {contains!r} not found (first line {first!r}); needs it in the file")
    loads = params.get("loads")
    if loads:
        from pytest_mlgates.gates.rebuild import checkpoint_softmax

        opts: dict[str, Any] = dict(loads) if isinstance(loads, dict) else {}
        opts.pop("softmax", None)
        softmax_params = {"checkpoint": rel, "model": None, "kwargs": None, "input_shape": None,
                          "prefix": None, "samples": 16}
        softmax_params.update(opts)
        return checkpoint_softmax(run, softmax_params, ctx)
    detail = f" and contains {contains!r}" if contains is not None else ""
    return GateResult(True, "exists", "exists", f"{shown}: exists{detail}")


# --------------------------------------------------------------------------- key_link

_REGEX_META = set(".^$*+?{}[]\\|()")


def key_link_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    rel = str(params.get("from"))
    return [Mutation(f"remove:{rel}", f"{rel} deleted", remove(rel))], ""


@p.gate(doc="an artifact exists and the code that makes it contains the pattern",
        params={"from": p.Param(p.string, required=True), "to": p.Param(p.string, required=True),
                "pattern": p.Param(p.string)},
        mutations=key_link_mutations)
def key_link(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    """``from`` (in the run dir) exists, and the code ``to`` (under rootdir) holds ``pattern``."""
    src, dst, pattern = params["from"], params["to"], params.get("pattern")
    found, looked = run.locate(src)
    shown_src = looked[0]
    if found is None:
        return GateResult(False, "missing", "exists", f"{_not_found(looked)}; needs the artifact the link starts from")
    target = resolve_inside(Path(ctx.rootdir), dst, "rootdir")
    if not target.exists():
        return GateResult(False, "missing", "exists", f"{dst}: not found under {ctx.rootdir}; needs the code the link points to")
    if pattern is None:
        return GateResult(True, "linked", "exists", f"{shown_src} -> {dst}: both exist")
    if target.is_dir():
        return GateResult(False, "directory", f"matches {pattern!r}", f"{dst}: is a directory; needs a file to search")
    text = read_text_file(target, dst, root=Path(ctx.rootdir))
    matched: bool
    if set(pattern) & _REGEX_META:
        if len(pattern) > 500:
            raise GateFailure("gate key_link: pattern longer than 500 characters")
        try:
            matched = re.search(pattern, text, re.MULTILINE) is not None
        except re.error as exc:
            raise GateFailure(f"gate key_link: pattern {pattern!r} is not a valid regex ({exc})") from None
    else:
        matched = pattern in text
    if not matched:
        return GateResult(False, "no match", f"matches {pattern!r}",
                          f"{dst}: pattern {pattern!r} not found; needs the code that makes {src}")
    return GateResult(True, "linked", f"matches {pattern!r}", f"{shown_src} -> {dst}: {pattern!r} found")


# --------------------------------------------------------------------------- split_integrity

_NOT_SPLITS = {"dataset", "strategy", "seed", "groups"}


def _id_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise RunDirError(f"{where}: expected a list of ids, got {type(value).__name__}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise RunDirError(f"{where}: {shown_value(v, 40)} is not an integer or string id")
    return value


def split_integrity_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    rel = str(params.get("path") or m.run.splits_file)
    groups = str(params.get("groups") or "groups")
    return [Mutation(f"leak:{rel}", f"a train index copied into val in {rel}", leak_split(rel, groups))], ""


@p.gate(doc="no sample index or group id appears in two splits",
        params={"path": p.Param(p.string), "splits": p.Param(p.strings), "groups": p.Param(p.string, "groups")},
        mutations=split_integrity_mutations)
def split_integrity(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    rel = params["path"] or run.splits_file  # splits.json, or where the gate file's run: says
    shown = run.shown(run.path / rel)
    path = run.resolve(rel)
    data = read_json_file(path, shown, root=run.path)
    if not isinstance(data, dict):
        raise RunDirError(f"{shown}: expected a JSON object of named index lists")
    wanted = as_list(params["splits"])
    if wanted is None:
        wanted = [k for k, v in data.items() if k not in _NOT_SPLITS and isinstance(v, list)]
    missing = [w for w in wanted if w not in data]
    if missing:
        raise RunDirError(f"{shown}: no split '{missing[0]}' (splits: {', '.join(k for k in data if k not in _NOT_SPLITS)})")
    if len(wanted) < 2:
        raise GateFailure(f"{shown}: fewer than two splits to compare ({', '.join(wanted) or 'none'})")
    indices = {name: _id_list(data[name], f"{shown}: {name}") for name in wanted}
    problems: list[tuple[int, str]] = []
    for kind, table in (("indices", indices), ("group ids", _groups(data, params["groups"], wanted, indices, shown))):
        if table is None:
            continue
        seen: dict[Any, str] = {}
        overlap: dict[tuple[str, str], list[Any]] = {}
        for name in wanted:
            for item in dict.fromkeys(table[name]):
                other = seen.get(item)
                if other is not None and other != name:
                    overlap.setdefault((other, name), []).append(item)
                else:
                    seen.setdefault(item, name)
        total = sum(len(v) for v in overlap.values())
        if total:
            (a, b), ids = next(iter(overlap.items()))
            first = ", ".join(str(i) for i in sorted(ids, key=str)[:5])
            problems.append((total, f"{kind} in two splits = {total} ({a} & {b}: {first}{' ...' if len(ids) > 5 else ''}) in {shown}; needs 0"))
    if problems:
        return GateResult(False, str(problems[0][0]), "0", problems[0][1] + (f" (+ {problems[1][1].split(' =')[0]})" if len(problems) > 1 else ""))
    counted = ", ".join(f"{n} {len(indices[n])}" for n in wanted)
    return GateResult(True, "0", "0", f"no index or group id in two splits ({counted}) in {shown}")


def _groups(data: dict[str, Any], key: str, wanted: list[str], indices: dict[str, list[Any]],
            shown: str) -> dict[str, list[Any]] | None:
    groups = data.get(key)
    if groups is None:
        return None
    if not isinstance(groups, dict):
        raise RunDirError(f"{shown}: '{key}' must map split names to group id lists")
    table: dict[str, list[Any]] = {}
    for name in wanted:
        if name not in groups:
            raise RunDirError(f"{shown}: '{key}' has no '{name}' list")
        ids = _id_list(groups[name], f"{shown}: {key}.{name}")
        if len(ids) != len(indices[name]):
            raise RunDirError(f"{shown}: {key}.{name} has {len(ids)} ids for {len(indices[name])} indices")
        table[name] = ids
    return table
