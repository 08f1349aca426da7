"""The engine's own preflight checks: what only its config can say.

Marked ``preflight``, so ``pytest -m preflight --config C`` runs them for config ``C``
beside the plugin's built-in suite (which checks the engine's subject: loaders, model,
loss, monitors, accumulation); without ``--config`` they check ``configs/default.yaml``.
The second half checks that each one can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from model.config import build_config, load_config
from model.mlgates import split_fractions_off, tracked_not_chosen
from pytest_mlgates.preflight import config_path

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine_config(pytestconfig: pytest.Config) -> tuple[Path, object]:
    path = config_path(pytestconfig) or REPO_ROOT / "configs" / "default.yaml"
    return path, load_config(path)


@pytest.mark.preflight
def test_split_proportions_as_configured(engine_config: tuple[Path, object]) -> None:
    _, config = engine_config
    problem = split_fractions_off(config)
    assert problem is None, problem


@pytest.mark.preflight
def test_tracked_metrics_come_from_the_config(engine_config: tuple[Path, object]) -> None:
    path, config = engine_config
    problem = tracked_not_chosen(config, path)
    assert problem is None, problem


def test_split_fractions_off_names_the_split() -> None:
    config = build_config({"data": {"name": "digits", "val_fraction": 0.2, "test_fraction": 0.1}})
    assert split_fractions_off(config) is None
    # a tolerance below what integer split sizes can reach is off: the line names each split
    problem = split_fractions_off(config, tolerance=1e-9)
    assert problem is not None and problem.startswith("split fractions off by more than 1e-09: ")
    assert "val 0.2" in problem and "(configured 0.200)" in problem


def test_tracked_val_loss_on_purpose_is_a_choice() -> None:
    """The bug report: tracked_from_config was RED though the user listed [val_loss] on purpose."""
    chosen = build_config({"checkpoint": {"tracked": [{"metric": "val_loss", "mode": "min"}]}})
    assert tracked_not_chosen(chosen, "c.yaml") is None
    unset = build_config({"checkpoint": {}})
    line = tracked_not_chosen(unset, "c.yaml")
    assert line == ("c.yaml: checkpoint.tracked is not set, so the default [val_loss] applies; name the "
                    "metrics you need a best checkpoint for")
