"""Hypothesis against every reader of untrusted text: the run dir's CSV/JSON/YAML files and
the gate-file loader. Whatever the input -- random bytes, random text, or CSV/JSON/YAML that
is well-formed but wrong -- the only exceptions that may escape are the plugin's own
(:class:`MlgatesError`), each one line. Anything else would reach a user as a traceback.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pytest_mlgates.collect import parse_gate_text
from pytest_mlgates.errors import MlgatesError
from pytest_mlgates.formats import open_run
from pytest_mlgates.formats.engine import parse_engine_csv
from pytest_mlgates.gates import GATE_NAMES, GateContext, get_gate


# MLGATES_FUZZ_EXAMPLES=5000 for a longer hunt; 200 keeps the suite fast.
@pytest.fixture(scope="module")
def healthy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gate_helpers import make_run

    return make_run(tmp_path_factory.mktemp("fuzz") / "run")


FUZZ = settings(max_examples=int(os.environ.get("MLGATES_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# Names a reader looks for, so structured inputs reach past the first "key missing" check.
KEYS = ["epoch", "val_loss", "train_loss", "val_accuracy", "train_accuracy", "val_recall_a", "val_macro_f1",
        "columns", "rows", "monitor", "metric", "mode", "best", "final", "class_names", "train", "val",
        "test", "groups", "checkpoint", "tracked", "early_stopping", "status", "min", "max", "nan", ""]
LOG_GATES = ["finite_log", "log_complete", "converged", "class_recall", "generalization_gap", "memorization",
             "suspicious_perfection", "split_integrity", "provenance", "best_checkpoints", "resume_point"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["nan", "inf", "-inf", "1e999", "", "x"]),
    st.sampled_from(KEYS), st.text(max_size=8),
)
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=6),
    ),
    max_leaves=40,
)
cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-5, 50).map(str),
    st.sampled_from(["nan", "inf", "-inf", "", " ", "NaN", "1e999", "x", '"1"', "1,2", "\x00"]),
    st.text(max_size=5),
)


@st.composite
def csv_texts(draw: Any) -> str:
    """CSV that looks like a training log: a header of known names, ragged numeric-ish rows."""
    header = draw(st.lists(st.sampled_from(KEYS), min_size=0, max_size=6))
    rows = draw(st.lists(st.lists(cells, max_size=len(header) + 2), max_size=6))
    sep = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return sep.join([",".join(header), *(",".join(r) for r in rows)]) + draw(st.sampled_from(["", sep]))


def _dumps(data: Any) -> str:
    return json.dumps(data, allow_nan=True)


def _exercise(run_dir: Path) -> None:
    """Read everything a gate or the ``run`` fixture may read; only MlgatesError may escape."""
    readers: list[Callable[[], Any]] = []
    try:
        run = open_run(run_dir)
    except MlgatesError as err:
        assert "\n" not in str(err)
        return
    readers = [
        lambda: run.log, lambda: run.final, lambda: run.best, lambda: run.best_epoch, lambda: run.results,
        lambda: run.splits, lambda: run.provenance, lambda: run.config, lambda: run.metric_history(),
        lambda: run.monitor, lambda: run.class_names, lambda: run.tracked, lambda: run.eval_env(),
        lambda: run.checkpoint_path("best"), lambda: run.column("val_loss"),
    ]
    for read in readers:
        try:
            read()
        except MlgatesError as err:
            assert "\n" not in str(err), str(err)
    ctx = GateContext(rootdir=run_dir)
    for gate in LOG_GATES:
        try:
            message = get_gate(gate).fn(run, {}, ctx).message
        except MlgatesError as err:
            message = str(err)
        assert "internal error" not in message, (gate, message)
        assert "\n" not in message, (gate, message)


def _with_files(files: dict[str, bytes | str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        for name, content in files.items():
            data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
            (run_dir / name).write_bytes(data)
        _exercise(run_dir)


# --------------------------------------------------------------------------- the CSV log


@FUZZ
@given(st.text(max_size=300))
def test_csv_parser_on_random_text(text: str) -> None:
    try:
        log = parse_engine_csv(text, "training_log.csv")
    except MlgatesError as err:
        assert "\n" not in str(err) and "training_log.csv" in str(err)
    else:
        assert "epoch" in log.columns
        assert all(len(v) == len(log) for v in log.columns.values())


@FUZZ
@given(csv_texts())
def test_csv_log_that_looks_almost_right(text: str) -> None:
    _with_files({"training_log.csv": text})


@FUZZ
@given(st.binary(max_size=300))
def test_csv_log_of_random_bytes(data: bytes) -> None:
    _with_files({"training_log.csv": data})


# --------------------------------------------------------------------------- the JSON files


@pytest.mark.slow
@FUZZ
@given(json_like, json_like, json_like)
@example(None, None, {"epoch": [], "\n": []})  # found by CI: a split named by a line break
def test_json_files_that_parse_but_are_wrong(results: Any, history: Any, splits: Any) -> None:
    _with_files({"training_results.json": _dumps(results), "metric_history.json": _dumps(history),
                 "splits.json": _dumps(splits)})


@st.composite
def metric_histories(draw: Any) -> dict[str, Any]:
    """``{"columns": [...], "rows": [...]}`` with known names and wrong-ish values."""
    names = draw(st.lists(st.sampled_from(KEYS), max_size=6))
    rows = draw(st.lists(st.one_of(st.dictionaries(st.sampled_from(names or ["epoch"]), scalars, max_size=6),
                                   scalars), max_size=6))
    out: dict[str, Any] = {"rows": rows}
    if draw(st.booleans()):
        out["columns"] = names
    return out


@FUZZ
@given(metric_histories(), json_like)
def test_metric_history_as_the_only_log(history: dict[str, Any], results: Any) -> None:
    _with_files({"metric_history.json": _dumps(history), "training_results.json": _dumps(results)})


@FUZZ
@given(st.lists(st.one_of(st.dictionaries(st.sampled_from(["epoch", "step", "loss", "eval_loss", "train_runtime"]),
                                          scalars, max_size=5), scalars), max_size=6))
def test_hugging_face_trainer_state_that_is_wrong(history: list[Any]) -> None:
    _with_files({"trainer_state.json": _dumps({"log_history": history})})


@FUZZ
@given(csv_texts())
def test_lightning_metrics_csv_that_is_wrong(text: str) -> None:
    _with_files({"metrics.csv": text.replace("val_loss", "step", 1)})


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["training_results.json", "metric_history.json", "splits.json",
                                                  "provenance.json", "config.yaml", "trainer_state.json",
                                                  "metrics.csv"]))
def test_any_file_of_random_bytes(data: bytes, name: str) -> None:
    _with_files({name: data, "training_log.csv": "epoch,val_loss\n1,0.5\n"})


@FUZZ
@given(json_like)
def test_config_yaml_that_parses_but_is_wrong(config: Any) -> None:
    text = yaml.safe_dump(config) if not (isinstance(config, float) and math.isnan(config)) else "nan"
    _with_files({"config.yaml": text, "training_log.csv": "epoch,val_loss,val_acc\n1,0.5,0.1\n2,0.4,0.2\n"})


def test_non_finite_epochs_are_one_line_errors() -> None:
    """Found by the fuzzing above: ``"epoch": "inf"`` crashed with OverflowError."""
    for files in ({"trainer_state.json": '{"log_history": [{"epoch": "inf"}]}'},
                  {"trainer_state.json": '{"log_history": [{"epoch": "nan", "loss": 1}]}'},
                  {"training_log.csv": "epoch,val_loss\nnan,\n"},
                  {"metrics.csv": "epoch,step,val_loss\ninf,1,0.5\n"},
                  {"metric_history.json": '{"rows": [{"epoch": "-inf"}]}'}):
        with tempfile.TemporaryDirectory() as tmp:
            name, text = next(iter(files.items()))
            (Path(tmp) / name).write_text(text)
            try:
                assert open_run(tmp).log is None  # never reached
            except MlgatesError as err:
                assert "not a finite number" in str(err) and name in str(err), str(err)
            else:
                raise AssertionError(f"{name}: a non-finite epoch was accepted")


def test_deeply_nested_json_is_one_line() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    _with_files({"training_results.json": deep, "metric_history.json": deep, "splits.json": deep,
                 "training_log.csv": "epoch,val_loss\n1,0.5\n"})


# --------------------------------------------------------------------------- gate files


def _parse(text: str, plan: bool = False) -> None:
    try:
        parse_gate_text(text, Path("fuzz.gates.yaml"), plan=plan)
    except MlgatesError as err:
        assert "\n" not in str(err), str(err)
        assert str(err).startswith("fuzz.gates.yaml"), str(err)


GATE_KEYS = ["title", "metrics", "must_haves", "exit_criteria", "preflight", "truths", "artifacts", "key_links",
             "name", "gate", "check", "stage", "truth", "path", "from", "to", "pattern", "floor", "columns",
             "at", "acceptance", "class_recall", "finite_log", "artifact", "val_loss < 1", "min(val_loss)"]
gate_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.sampled_from(GATE_KEYS),
              st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.sampled_from(GATE_KEYS), children, max_size=5)),
    max_leaves=30,
)


@FUZZ
@given(st.text(max_size=400))
def test_gate_file_of_random_text(text: str) -> None:
    _parse(text)
    _parse(f"---\n{text}\n---\n# plan\n", plan=True)


@FUZZ
@given(gate_like)
def test_gate_file_that_is_yaml_but_wrong(doc: Any) -> None:
    text = yaml.safe_dump(doc, sort_keys=False)
    _parse(text)
    _parse(f"---\n{text}---\n", plan=True)


@pytest.mark.slow
@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(GATE_KEYS), gate_like, max_size=5), max_size=4))
def test_exit_criteria_that_are_wrong(criteria: list[dict[str, Any]]) -> None:
    _parse(yaml.safe_dump({"exit_criteria": criteria}, sort_keys=False))


# --------------------------------------------------------------------------- gate parameters

PARAM_WORDS = ["val_loss", "train_loss", "val_accuracy", "train_accuracy", "val_macro_f1", "val_recall_*",
               "val_recall_malignant", "malignant", "nope", "min", "max", "final", "best", "all", "val", "train",
               "test", "core", "softmax", "training_log.csv", "checkpoints/final.pt", "final", "last",
               "best_val_loss", "../outside", "/etc/passwd", "plots/loss_curve.png", "splits.json", "groups",
               "src/model/train.py", "model.nets:MLP", "x:y", "epoch", "(", ".*", "", "\x00"]
words = st.sampled_from([w for w in PARAM_WORDS if w])
pos_ints = st.integers(1, 64)
nonneg = st.one_of(st.integers(0, 5), st.floats(0, 10, allow_nan=False))
# One strategy per parameter type of the registry (the checkers in gates/params.py), so
# most drawn parameter sets pass collection and reach the gate's code.
BY_TYPE: dict[str, Any] = {
    "number": st.one_of(st.integers(-5, 5), st.floats(-10, 10, allow_nan=False)),
    "nonneg": nonneg,
    "pos_int": pos_ints,
    "probability": st.floats(0.001, 0.999),
    "confidence": st.floats(0.5, 0.999),
    "string": words,
    "target": st.sampled_from(["model.nets:MLP", "collections:OrderedDict", "nope.mod:X", "json:JSONDecoder"]),
    "boolean": st.booleans(),
    "mode": st.sampled_from(["min", "max"]),
    "strings": st.one_of(words, st.lists(st.one_of(words, st.integers(0, 3)), min_size=1, max_size=3)),
    "ints": st.lists(st.integers(1, 9), min_size=1, max_size=4),
    "tracked": st.lists(st.one_of(words, st.fixed_dictionaries(
        {"metric": words}, optional={"mode": st.sampled_from(["min", "max"])})), min_size=1, max_size=3),
    "at": st.sampled_from(["final", "best", "all"]),
    "mapping": st.dictionaries(words, st.one_of(words, st.integers(0, 9)), max_size=3),
    "baseline_metrics": st.one_of(
        st.lists(words, min_size=1, max_size=3),
        st.dictionaries(words, st.one_of(st.none(), st.fixed_dictionaries(
            {}, optional={"mode": st.sampled_from(["min", "max"]), "abs": nonneg, "rel": nonneg})),
            min_size=1, max_size=3)),
    "loads": st.one_of(st.just("softmax"), st.just(True), st.fixed_dictionaries({}, optional={
        "softmax": st.booleans(), "model": st.sampled_from(["model.nets:MLP", "x:y", "os:system"]),
        "kwargs": st.dictionaries(words, st.integers(0, 9), max_size=2),
        "input_shape": st.lists(st.integers(1, 9), min_size=1, max_size=4), "prefix": words})),
}


@FUZZ
@given(gate=st.sampled_from(GATE_NAMES), data=st.data())
def test_any_valid_gate_parameters_give_a_verdict_or_one_line(gate: str, data: Any, healthy_run: Path) -> None:
    """Parameters that pass collection's validation never crash the gate at run time."""
    from pytest_mlgates.gates import declaration, validate_params

    checkers = {name: param.check for name, param in declaration(gate).params.items()}
    names = data.draw(st.lists(st.sampled_from(sorted(checkers)), unique=True, max_size=len(checkers)))
    params = {n: data.draw(BY_TYPE[checkers[n].__name__], label=n) for n in names}
    for required in ("path", "from", "to"):
        if required in checkers and required not in params:
            params[required] = data.draw(words, label=required)
    try:
        validate_params(gate, params)
    except MlgatesError:
        event("rejected at collection")
        return  # a collection error, covered by the gate-file tests above
    event(f"ran {gate}")
    ctx = GateContext(rootdir=Path(__file__).resolve().parents[1], baseline=open_run(healthy_run))
    try:
        message = get_gate(gate).fn(open_run(healthy_run), params, ctx).message
    except MlgatesError as err:
        message = str(err)
    assert "internal error" not in message, (gate, params, message)
    assert "\n" not in message, (gate, params, message)


def test_model_target_that_is_not_a_module_path_is_one_line(healthy_run: Path) -> None:
    """Found by the fuzzing above: ``model: ../outside`` crashed with a TypeError inside importlib."""
    from pytest_mlgates.gates import validate_params

    for target in ("../outside", ".rel:Class", "a/b:C", "pkg.mod:", ":Class", "x:y:z"):
        try:
            validate_params("checkpoint_softmax", {"model": target})
        except MlgatesError as err:
            assert "package.module:ClassName" in str(err), str(err)
        else:
            raise AssertionError(f"{target!r} passed collection")
        ctx = GateContext(rootdir=healthy_run)
        try:
            message = get_gate("checkpoint_softmax").fn(open_run(healthy_run), {"model": target}, ctx).message
        except MlgatesError as err:
            message = str(err)
        assert "expected 'package.module:ClassName'" in message, message
