"""The pytest11 entry module is light: a pytest run with the plugin loaded imports no torch,
numpy, scikit-learn, matplotlib or PyYAML (as hypothesis's own plugin test checks) beyond
what the environment's other plugins import (hydra-core's, installed with DVC, imports
PyYAML)."""

from __future__ import annotations

import pytest

HEAVY = ("torch", "numpy", "sklearn", "matplotlib", "yaml")

PROBE = f"""
import sys

def test_heavy_modules(pytestconfig):
    loaded = [m for m in {HEAVY!r} if m in sys.modules]
    print("PLUGIN-LOADED:", pytestconfig.pluginmanager.hasplugin("mlgates"), "HEAVY:", ",".join(loaded) or "-")
"""


def heavy_modules(pytester: pytest.Pytester, *args: str) -> tuple[bool, set[str]]:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", *args)
    result.assert_outcomes(passed=1)
    line = next(line for line in result.stdout.lines if line.startswith("PLUGIN-LOADED:") or "PLUGIN-LOADED:" in line)
    words = line[line.index("PLUGIN-LOADED:"):].split()
    return words[1] == "True", set() if words[3] == "-" else set(words[3].split(","))


def test_plain_pytest_run_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_probe=PROBE)
    loaded, with_plugin = heavy_modules(pytester)
    assert loaded
    unloaded, without_plugin = heavy_modules(pytester, "-p", "no:mlgates")
    assert not unloaded
    assert with_plugin - without_plugin == set(), with_plugin


def test_help_shows_the_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines([
        "*pytest-mlgates*",
        "*--run-dir=DIR, --mlgates-run-dir=DIR*",
        "*--mlgates-strict*",
        "*--baseline-run=DIR, --mlgates-baseline-run=DIR*",
        "*mlgates_gate_patterns*",
    ])


def test_check_only_gate_file_imports_no_ml_library(pytester: pytest.Pytester) -> None:
    """A gate file of checks runs on the log alone: no ML library is needed to judge it
    (numpy, a required dependency, holds the log's columns)."""
    pytester.makefile(".gates.yaml", a="exit_criteria:\n  - name: few\n    check: 'len(epoch) < 3'\n")
    (pytester.path / "run").mkdir()
    (pytester.path / "run" / "training_log.csv").write_text("epoch,val_loss\n1,0.5\n")
    pytester.makeconftest("""
import sys
def pytest_sessionfinish(session):
    heavy = [m for m in ("torch", "sklearn", "matplotlib") if m in sys.modules]
    print("HEAVY-MODULES:", heavy)
""")
    result = pytester.runpytest_subprocess("--run-dir", "run", "-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*HEAVY-MODULES: []*"])
