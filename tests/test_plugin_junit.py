"""Values, thresholds and statuses reach the JUnit XML as <property> elements."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from test_plugin_synthetic import make_gate_project


@pytest.fixture
def gate_project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_gate_project(pytester)


def properties(xml_path: str) -> dict[str, dict[str, str]]:
    root = ET.parse(xml_path).getroot()
    out = {}
    for case in root.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        out[case.get("name")] = props
    return out


def test_junit_xml_has_mlgates_properties(gate_project: pytest.Pytester) -> None:
    result = gate_project.runpytest("--run-dir", "runs/collapsed", "--junitxml=out.xml")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    cases = properties(str(gate_project.path / "out.xml"))
    red = cases["minority_not_collapsed[runs/collapsed]"]
    assert red["mlgates.criterion"] == "minority_not_collapsed"
    assert red["mlgates.gate"] == "check"
    assert red["mlgates.run"] == "runs/collapsed"
    assert red["mlgates.status"] == "RED"
    assert red["mlgates.value"] == "0.000"
    assert red["mlgates.threshold"] == "> 0"
    assert red["mlgates.message"] == "val_recall_1 = 0.000 at epoch 3 (final); needs > 0"
    green = cases["no_nan[runs/collapsed]"]
    assert (green["mlgates.gate"], green["mlgates.status"]) == ("finite_log", "GREEN")
    truth = cases["nobody_looked_at_the_confusion_matrix[runs/collapsed]"]
    assert (truth["mlgates.gate"], truth["mlgates.status"]) == ("truth", "UNVERIFIED")
