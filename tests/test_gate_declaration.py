"""A gate is one function, declared where it is written: its one-line doc, its parameters
(checker, default, required) and the mutations ``mlgates prove`` aims at it; the registry
is one line naming its module (docs/internals.md, "Adding a gate").

The first test adds a gate the documented way -- a module of its own plus one ``GATES``
line -- and follows it through collection, a run and the mutation ``prove`` applies."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from pytest_mlgates import gates
from pytest_mlgates.collect import parse_gate_text
from pytest_mlgates.errors import MlgatesError
from pytest_mlgates.formats import format_module, open_run
from pytest_mlgates.formats._mutations import Mutations
from pytest_mlgates.gates import (
    GATE_NAMES,
    GATES,
    GateContext,
    declaration,
    get_gate,
    validate_params,
)

NEW_GATE = '''
"""A gate of its own, outside the plugin: the last value of a column stays below a ceiling."""

from __future__ import annotations

from typing import Any

from pytest_mlgates.formats._mutations import Mutation, Mutations
from pytest_mlgates.gates import GateContext, GateResult
from pytest_mlgates.gates import params as p
from pytest_mlgates.rundir import Run


def last_below_mutations(m: Mutations, params: dict[str, Any]) -> tuple[list[Mutation], str]:
    column = m.real(params["column"])
    return [Mutation(f"last_below:{column}", f"{column} set to 1e6 in every epoch",
                     m.set_log([column], lambda i, v: 1e6))], ""


@p.gate(doc="the last value of a column is below a ceiling",
        params={"column": p.Param(p.string, required=True), "ceiling": p.Param(p.number, 1.0)},
        mutations=last_below_mutations)
def last_below(run: Run, params: dict[str, Any], ctx: GateContext) -> GateResult:
    value = float(run.log.array(params["column"])[-1])
    return GateResult(value < params["ceiling"], f"{value:g}", f"< {params['ceiling']:g}",
                      f"{params['column']} = {value:g}; needs < {params['ceiling']:g}")
'''


@pytest.fixture
def new_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "extra_gates").mkdir()
    (tmp_path / "extra_gates" / "my_last_below.py").write_text(textwrap.dedent(NEW_GATE))
    monkeypatch.syspath_prepend(str(tmp_path / "extra_gates"))
    monkeypatch.setitem(GATES, "last_below", "my_last_below")  # the one registry line
    return "last_below"


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "training_log.csv").write_text("epoch,train_loss,val_loss\n1,0.9,0.8\n2,0.5,0.4\n")
    return run


def test_a_gate_added_as_one_module_and_one_registry_line_is_collected_run_and_proven(
        tmp_path: Path, new_gate: str) -> None:
    # collection: its parameters are checked with the messages every gate gives
    text = "exit_criteria:\n  - name: low\n    gate: last_below\n    column: val_loss\n    ceiling: 0.5\n"
    document = parse_gate_text(text, tmp_path / "a.gates.yaml")
    assert [(c.name, c.gate, c.params) for c in document.acceptance_criteria()] == [
        ("low", "last_below", {"column": "val_loss", "ceiling": 0.5})]
    with pytest.raises(MlgatesError, match=r"^gate last_below: parameter 'ceiling' must be a number, got 'x'$"):
        validate_params(new_gate, {"column": "val_loss", "ceiling": "x"})
    with pytest.raises(MlgatesError, match=r"^gate last_below: parameter 'column' is required$"):
        validate_params(new_gate, {})
    with pytest.raises(MlgatesError, match=r"unknown parameter 'ceilng'; did you mean 'ceiling'\?"):
        validate_params(new_gate, {"column": "val_loss", "ceilng": 1})
    assert gates.gate_params(new_gate) == {"column": "string", "ceiling": "number"}

    # a run: defaults merged, the gate's own line
    run_dir = _run(tmp_path)
    spec = get_gate(new_gate)
    assert spec.doc == "the last value of a column is below a ceiling"
    ctx = GateContext(rootdir=tmp_path)
    result = spec.fn(open_run(run_dir), {"column": "val_loss"}, ctx)
    assert result.passed and result.message == "val_loss = 0.4; needs < 1"

    # prove: the format overrides nothing here, so the gate's own mutations are aimed at it
    run = open_run(run_dir)
    tiers, note = format_module(run.format).Mutations(run).for_criterion(new_gate, {"column": "val_loss"})
    assert note == "" and [t.description for t in tiers] == ["val_loss set to 1e6 in every epoch"]
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    tiers[0].apply(copy)
    assert not spec.fn(open_run(copy), {"column": "val_loss"}, ctx).passed


def test_every_builtin_gate_is_declared_beside_its_function_with_its_mutations() -> None:
    for name in GATE_NAMES:
        declared = declaration(name)
        assert declared.fn.__module__ == GATES[name] and declared.fn.__name__ == name
        assert declared.doc and declared.mutations is not None, name
        required = [k for k, v in declared.params.items() if v.required]
        assert all(declared.params[k].default is None for k in required), name
    # the shared map keeps only what formats share; no gate's mutations live there
    assert [a for a in vars(Mutations) if a.startswith("gate_")] == []


def test_a_registry_line_naming_no_declared_gate_or_no_module_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(GATES, "not_declared", "pytest_mlgates.gates.log")
    with pytest.raises(MlgatesError, match=r"^gate not_declared: pytest_mlgates.gates.log has no @gate function "
                                           r"named not_declared$"):
        validate_params("not_declared", {})
    monkeypatch.setitem(GATES, "not_there", "no_such_gates_module")
    with pytest.raises(MlgatesError, match=r"^gate not_there: cannot import no_such_gates_module \(No module named"):
        validate_params("not_there", {})


def test_the_documented_diff_adds_a_working_gate(tmp_path: Path) -> None:
    """docs/internals.md's "Adding a gate" diff applies to this checkout's src/ as printed,
    and the gate it adds is collected, judges a real log and is turned RED by its mutation."""
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "internals.md").read_text(encoding="utf-8")
    section = doc.split("## Adding a gate", 1)[1]
    diff = re.search(r"```diff\n(.*?)```\n", section, re.DOTALL)
    assert diff, "docs/internals.md: no diff under 'Adding a gate'"
    shutil.copytree(root / "src" / "pytest_mlgates", tmp_path / "src" / "pytest_mlgates",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "gate.diff").write_text(diff.group(1), encoding="utf-8")
    applied = subprocess.run(["git", "apply", "--unidiff-zero", "gate.diff"], cwd=tmp_path, capture_output=True,
                             text=True, check=False)
    assert applied.returncode == 0, applied.stderr
    run_dir = _run(tmp_path)
    (run_dir / "training_log.csv").write_text("epoch,train_loss,val_loss,lr\n1,0.9,0.8,0.1\n2,0.5,0.4,0.01\n")
    script = textwrap.dedent(f"""
        import shutil
        from pathlib import Path
        from pytest_mlgates.formats import format_module, open_run
        from pytest_mlgates.gates import GateContext, get_gate, validate_params
        validate_params("lr_decayed", {{"factor": 0.5}})
        spec, ctx, run = get_gate("lr_decayed"), GateContext(rootdir={str(tmp_path)!r}), open_run({str(run_dir)!r})
        result = spec.fn(run, {{}}, ctx)
        print(result.passed, result.message)
        tiers, note = format_module(run.format).Mutations(run).for_criterion("lr_decayed", {{}})
        shutil.copytree({str(run_dir)!r}, {str(tmp_path / "mutated")!r})
        tiers[0].apply(Path({str(tmp_path / "mutated")!r}))
        print(spec.fn(open_run({str(tmp_path / "mutated")!r}), {{}}, ctx).passed)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "src")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["True lr = 0.010 at epoch 2 (final); needs <= 0.5 x 0.100", "False"], proc.stdout
