"""This repository's own code, handed to its own plugin.

The bundled engine (src/model) is one client of pytest-mlgates like any user's trainer:
its ``mlgates_subject`` fixture gives ``pytest -m preflight --config C`` the subject of
config ``C`` and the acceptance gates the subject of the engine run they judge.
"""

from model.mlgates import mlgates_subject  # noqa: F401
