"""The pytest11 entry module is light: a pytest run with the plugin loaded imports no torch,
numpy, scikit-learn, matplotlib or PyYAML (as hypothesis's own plugin test checks)."""

from __future__ import annotations

import pytest

HEAVY = ("torch", "numpy", "sklearn", "matplotlib", "yaml")

PROBE = f"""
import sys

def test_plugin_loaded_and_nothing_heavy_imported(pytestconfig):
    assert pytestconfig.pluginmanager.hasplugin("mlgates")
    loaded = [m for m in {HEAVY!r} if m in sys.modules]
    assert loaded == []
"""


def test_plain_pytest_run_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_probe=PROBE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_help_shows_the_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines([
        "*pytest-mlgates*",
        "*--run-dir=DIR, --mlgates-run-dir=DIR*",
        "*--mlgates-strict*",
        "*--baseline-run=DIR, --mlgates-baseline-run=DIR*",
        "*mlgates_gate_patterns*",
    ])


def test_check_only_gate_file_imports_no_numpy_or_torch(pytester: pytest.Pytester) -> None:
    """A gate file of checks runs on the log alone: no ML library is needed to judge it."""
    pytester.makefile(".gates.yaml", a="exit_criteria:\n  - name: few\n    check: 'len(epoch) < 3'\n")
    (pytester.path / "run").mkdir()
    (pytester.path / "run" / "training_log.csv").write_text("epoch,val_loss\n1,0.5\n")
    pytester.makeconftest("""
import sys
def pytest_sessionfinish(session):
    heavy = [m for m in ("torch", "numpy", "sklearn", "matplotlib") if m in sys.modules]
    print("HEAVY-MODULES:", heavy)
""")
    result = pytester.runpytest_subprocess("--run-dir", "run", "-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*HEAVY-MODULES: []*"])
