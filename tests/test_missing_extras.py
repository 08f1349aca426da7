"""A gate that needs an optional library (torch, Pillow, ...) on a machine without it fails
its item in one line naming the extra to install -- whether it asks through
``require_extra`` or imports the library itself -- never "internal error" or a traceback.

torch is installed here, so the inner session hides it (``sys.modules["torch"] = None``
makes ``import torch`` raise ModuleNotFoundError, as on a machine without it).
tests/test_wheel_install.py checks the same in a real venv without torch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gate_helpers import make_run

from pytest_mlgates.errors import MissingExtraError, is_missing_extra, missing_extra, require_extra

GATES = """\
exit_criteria:
  - name: no_nan
    gate: finite_log
  - name: best_model_gives_a_softmax
    gate: checkpoint_softmax
  - name: one_best_checkpoint_per_tracked_metric
    gate: best_checkpoints
"""


@pytest.fixture
def engine_run(tmp_path: Path) -> Path:
    # made before pytester starts (a fixture asked first): pytester drops the modules a test
    # imported when it ends, and torch, imported by make_run, cannot be imported twice
    return make_run(tmp_path / "run")


@pytest.mark.slow
def test_gates_needing_torch_name_the_extra_without_it(engine_run: Path, pytester: pytest.Pytester) -> None:
    pytester.makefile(".gates.yaml", acceptance=GATES)
    pytester.makeconftest("import sys\nsys.modules['torch'] = None  # a machine without torch\n")
    result = pytester.runpytest_subprocess("acceptance.gates.yaml", "--run-dir", engine_run, "-p", "no:cacheprovider",
                                           "--mlgates-archive=off")
    result.assert_outcomes(passed=1, failed=2)
    output = result.stdout.str()
    assert "Traceback" not in output and "internal error" not in output
    # each item's failure section (the short summary repeats them, cut to the terminal's width)
    lines = [line for line in result.stdout.lines
             if "needs torch, which is not installed" in line and not line.startswith("FAILED ")]
    assert len(lines) == 2, output
    assert lines[0].startswith("gate checkpoint_softmax needs torch")  # the gate imports torch itself
    assert all(line.endswith("; pip install 'pytest-mlgates[torch]'") for line in lines)


def test_missing_extra_names_the_extra_of_each_library() -> None:
    with pytest.raises(MissingExtraError, match=r"^gate plots needs PIL, .*pip install 'pytest-mlgates\[images\]'$"):
        require_extra("PIL.Image_not_there", "gate plots")
    err = ModuleNotFoundError("No module named 'sklearn'", name="sklearn")
    assert is_missing_extra(err)
    assert str(missing_extra(err, "gate shortcut")).endswith("pip install 'pytest-mlgates[sklearn]'")
    assert not is_missing_extra(ModuleNotFoundError("No module named 'wine'", name="wine"))
