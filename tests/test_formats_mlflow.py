"""MLflow runs read without MLflow: real stores written by the installed mlflow, then broken.

The real runs are written once per module (importing mlflow takes seconds); every test that
changes a store copies it first.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_mlgates.errors import RunDirError
from pytest_mlgates.formats import mlflow as mf
from pytest_mlgates.formats._mlflow_files import parse_metric_lines
from pytest_mlgates.formats._mlflow_run import MlflowRun
from pytest_mlgates.runfiles import MAX_TEXT_BYTES

INF = float("inf")
NAN = float("nan")


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text
    return text


# --------------------------------------------------------------------------- real stores

T0 = 1_700_000_000_000


def _log_run(client: Any, exp_id: str, name: str, status: str, artifact: Path) -> str:
    run = client.create_run(exp_id, run_name=name)
    rid = run.info.run_id
    for step in range(3):
        client.log_metric(rid, "val_loss", 1.0 / (step + 1), timestamp=T0 + 10 * step, step=step)
        client.log_metric(rid, "train/loss", 2.0 / (step + 1), timestamp=T0 + 10 * step + 1, step=step)
    client.log_metric(rid, "val_loss", 0.25, timestamp=T0 + 100, step=2)  # re-logged: later wins
    client.log_metric(rid, "weird", NAN, timestamp=T0, step=0)
    client.log_metric(rid, "weird", INF, timestamp=T0, step=1)
    client.log_metric(rid, "weird", -INF, timestamp=T0, step=2)
    client.log_param(rid, "lr", 0.1)
    client.log_param(rid, "optimizer", "adam")
    client.set_tag(rid, "team", "vision")
    client.log_artifact(rid, str(artifact))
    client.set_terminated(rid, status)
    return str(rid)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A SQLite store (one live run, one deleted) and a file store (two runs)."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    base = tmp_path_factory.mktemp("mlflow")
    artifact = base / "notes.txt"
    artifact.write_text("hello")
    out: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)  # whatever MLflow writes by default lands here, not in the repo
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

        sql = base / "sql"
        sql.mkdir()
        client = MlflowClient(f"sqlite:///{sql}/mlflow.db")
        exp = client.create_experiment("gates", artifact_location=str(sql / "artifacts"))
        out["sql_run"] = _log_run(client, exp, "good", "FINISHED", artifact)
        gone = client.create_run(exp, run_name="gone").info.run_id
        client.delete_run(gone)
        out["sql_deleted"] = gone
        out["sql_exp"] = str(exp)
        out["sql"] = sql

        default = base / "default"  # MLflow's defaults: ./mlflow.db, artifacts in ./mlruns
        default.mkdir()
        mp.chdir(default)
        client = MlflowClient("sqlite:///mlflow.db")
        out["default_run"] = _log_run(client, "0", "plain", "KILLED", artifact)
        out["default"] = default
        mp.chdir(base)

        files = base / "files"
        client = MlflowClient(f"file:{files}/mlruns")
        exp = client.create_experiment("gates")
        out["file_runs"] = [
            _log_run(client, exp, "first", "FINISHED", artifact),
            _log_run(client, exp, "second", "FAILED", artifact),
        ]
        out["file_exp"] = str(exp)
        out["files"] = files
    return out


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def check_common(run: MlflowRun) -> None:
    vl = run.metrics["val_loss"]
    assert [(s, v) for s, _, v in vl] == [(0, 1.0), (1, 0.5), (2, 1 / 3), (2, 0.25)]
    assert [s for s, _, _ in run.metrics["train/loss"]] == [0, 1, 2]
    weird = [v for _, _, v in run.metrics["weird"]]
    assert math.isnan(weird[0]) and weird[1] == INF and weird[2] == -INF
    assert run.params == {"lr": "0.1", "optimizer": "adam"}
    assert run.tags["team"] == "vision"
    assert run.artifact_dir is not None and (run.artifact_dir / "notes.txt").read_text() == "hello"


@pytest.mark.slow
def test_sqlite_store_round_trip(stores: dict[str, Any]) -> None:
    sql: Path = stores["sql"]
    before = hashlib.sha256((sql / "mlflow.db").read_bytes()).hexdigest()
    run = mf.read_run(sql)  # the deleted run does not count
    assert run.run_id == stores["sql_run"]
    assert run.name == "good" and run.status == "FINISHED"
    assert run.experiment_id == stores["sql_exp"]
    assert run.source == sql / "mlflow.db"
    check_common(run)
    assert run.artifact_dir == (sql / "artifacts" / run.run_id / "artifacts").resolve()
    # read-only: the db is byte-identical and no journal appeared
    assert hashlib.sha256((sql / "mlflow.db").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in sql.iterdir()) == ["artifacts", "mlflow.db"]


def test_sqlite_to_log(stores: dict[str, Any]) -> None:
    log = mf.to_log(mf.read_run(stores["sql"]))
    assert log.kind == "mlflow"
    assert log.source == stores["sql"] / "mlflow.db"
    assert log.columns["epoch"] == [0.0, 1.0, 2.0]
    assert log.columns["val_loss"] == [1.0, 0.5, 0.25]
    assert log.columns["train/loss"] == [2.0, 1.0, 2 / 3]
    w = log.columns["weird"]
    assert math.isnan(w[0]) and w[1:] == [INF, -INF]


def test_sqlite_find_runs_and_explicit_id(stores: dict[str, Any]) -> None:
    sql = stores["sql"]
    assert mf.find_runs(sql) == [(stores["sql_exp"], stores["sql_run"])]
    gone = mf.read_run(sql, stores["sql_deleted"])  # asked for by id, a deleted run reads
    assert gone.run_id == stores["sql_deleted"] and gone.metrics == {}
    with pytest.raises(RunDirError, match="no run 'nope'"):
        mf.read_run(sql, "nope")


def test_file_store_round_trip(stores: dict[str, Any]) -> None:
    files = stores["files"]
    first, second = stores["file_runs"]
    assert sorted(mf.find_runs(files)) == sorted([(stores["file_exp"], first), (stores["file_exp"], second)])
    assert mf.find_runs(files / "mlruns") == mf.find_runs(files)
    run = mf.read_run(files, second)
    assert run.status == "FAILED" and run.name == "second"
    check_common(run)
    assert run.source == files / "mlruns" / stores["file_exp"] / second / "meta.yaml"
    # one run folder on its own
    alone = mf.read_run(files / "mlruns" / stores["file_exp"] / first)
    assert alone.run_id == first and alone.status == "FINISHED"
    check_common(alone)
    log = mf.to_log(alone)
    assert log.columns["val_loss"] == [1.0, 0.5, 0.25]


def test_several_runs_need_an_id(stores: dict[str, Any]) -> None:
    with pytest.raises(RunDirError) as info:
        mf.read_run(stores["files"])
    text = one_line(info.value)
    assert "2 runs" in text and all(r in text for r in stores["file_runs"])


def test_detect(stores: dict[str, Any], tmp_path: Path) -> None:
    files = stores["files"]
    assert mf.detect(stores["sql"])
    assert mf.detect(files) and mf.detect(files / "mlruns")
    assert mf.detect(files / "mlruns" / stores["file_exp"] / stores["file_runs"][0])
    assert not mf.detect(tmp_path)
    (tmp_path / "meta.yaml").write_text("x: 1\n")
    assert not mf.detect(tmp_path)  # a meta.yaml alone is not a run
    assert not mf.detect(tmp_path / "missing")


def test_copied_store_resolves_artifacts_by_run_folder(stores: dict[str, Any], tmp_path: Path) -> None:
    """A store copied from another machine: the absolute artifact_uri no longer exists."""
    sql = copy_store(stores["sql"], tmp_path / "elsewhere")
    run = mf.read_run(sql)
    assert run.artifact_dir == (sql / "artifacts" / run.run_id / "artifacts").resolve()
    files = copy_store(stores["files"], tmp_path / "files2")
    run = mf.read_run(files, stores["file_runs"][0])
    assert run.artifact_dir is not None and run.artifact_dir.is_relative_to(files.resolve())


def test_default_sqlite_layout(stores: dict[str, Any], tmp_path: Path) -> None:
    """``sqlite:///mlflow.db`` with the Default experiment: artifacts go to ./mlruns/0/<run>/."""
    default: Path = stores["default"]
    rid = stores["default_run"]
    assert mf.detect(default)
    assert mf.find_runs(default) == [("0", rid)]
    run = mf.read_run(default)
    assert run.status == "KILLED" and run.name == "plain"
    check_common(run)
    assert run.artifact_dir == (default / "mlruns" / "0" / rid / "artifacts").resolve()
    moved = copy_store(default, tmp_path / "we?ird #dir%")  # URI-special characters in the path
    run = mf.read_run(moved)
    assert run.artifact_dir == (moved / "mlruns" / "0" / rid / "artifacts").resolve()


def _set_uri(db: Path, uri: str) -> None:
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET artifact_uri = ?", (uri,))
    con.commit()
    con.close()


def test_artifact_uri_kinds(stores: dict[str, Any], tmp_path: Path) -> None:
    sql = copy_store(stores["sql"], tmp_path / "s")
    rid = stores["sql_run"]
    served = sql / "mlartifacts" / "7" / rid / "artifacts"
    served.mkdir(parents=True)
    _set_uri(sql / "mlflow.db", f"mlflow-artifacts:/7/{rid}/artifacts")
    assert mf.read_run(sql).artifact_dir == served.resolve()
    _set_uri(sql / "mlflow.db", f"file://{served}")
    assert mf.read_run(sql).artifact_dir == served.resolve()
    _set_uri(sql / "mlflow.db", "s3://bucket/x/y/artifacts")
    assert mf.read_run(sql).artifact_dir is None
    outside = tmp_path / "outside" / rid / "artifacts"
    outside.mkdir(parents=True)
    shutil.rmtree(sql / "artifacts")
    _set_uri(sql / "mlflow.db", str(outside))
    assert mf.read_run(sql).artifact_dir is None  # exists, but outside the store root
    (sql / "artifacts").symlink_to(tmp_path / "outside")
    _set_uri(sql / "mlflow.db", f"{sql}/artifacts/{rid}/artifacts")
    assert mf.read_run(sql).artifact_dir is None  # a symlink out of the store is refused


# --------------------------------------------------------------------------- broken SQLite


def test_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"hello, not sqlite " * 200)
    with pytest.raises(RunDirError) as info:
        mf.read_run(tmp_path)
    text = one_line(info.value)
    assert str(tmp_path / "mlflow.db") in text and "not an SQLite database" in text


def test_truncated_database(stores: dict[str, Any], tmp_path: Path) -> None:
    sql = copy_store(stores["sql"], tmp_path / "s")
    db = sql / "mlflow.db"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])
    with pytest.raises(RunDirError) as info:
        mf.read_run(sql)
    assert str(db) in one_line(info.value)


def test_database_that_is_not_mlflow(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "mlflow.db")
    con.execute("CREATE TABLE foo (x INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(RunDirError, match=r"mlflow\.db: not an MLflow tracking database \(no table 'runs'\)"):
        mf.read_run(tmp_path)


def test_database_with_non_numeric_value(stores: dict[str, Any], tmp_path: Path) -> None:
    sql = copy_store(stores["sql"], tmp_path / "s")
    con = sqlite3.connect(sql / "mlflow.db")
    con.execute("UPDATE metrics SET value = 'abc' WHERE key = 'train/loss' AND step = 1")
    con.commit()
    con.close()
    with pytest.raises(RunDirError) as info:
        mf.read_run(sql)
    text = one_line(info.value)
    assert "mlflow.db" in text and "train/loss" in text and "'abc' is not a number" in text


def test_empty_database_names_the_store(tmp_path: Path, stores: dict[str, Any]) -> None:
    sql = copy_store(stores["sql"], tmp_path / "s")
    con = sqlite3.connect(sql / "mlflow.db")
    con.execute("UPDATE runs SET lifecycle_stage = 'deleted'")
    con.commit()
    con.close()
    with pytest.raises(RunDirError, match=r"mlflow\.db: no MLflow run"):
        mf.read_run(sql)


def test_no_journal_left_behind(stores: dict[str, Any], tmp_path: Path) -> None:
    sql = copy_store(stores["sql"], tmp_path / "s")
    os.chmod(sql / "mlflow.db", 0o444)
    mf.read_run(sql)
    mf.find_runs(sql)
    assert sorted(p.name for p in sql.iterdir()) == ["artifacts", "mlflow.db"]


def test_reader_does_not_import_mlflow() -> None:
    import subprocess

    code = (
        "import sys, pathlib, pytest_mlgates.formats.mlflow as m; "
        "m.detect(pathlib.Path('.')); print('mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- broken file store


def make_file_run(root: Path, metrics: dict[str, str] | None = None, meta: str | None = None) -> Path:
    run = root / "mlruns" / "0" / "abc123"
    (run / "metrics").mkdir(parents=True)
    (run / "params").mkdir()
    (run / "tags").mkdir()
    (run / "meta.yaml").write_text(
        meta if meta is not None else
        "run_id: abc123\nrun_name: r\nexperiment_id: '0'\nstatus: 3\nlifecycle_stage: active\n"
        "artifact_uri: file:///nowhere/0/abc123/artifacts\n"
    )
    for name, text in (metrics or {}).items():
        (run / "metrics" / name).parent.mkdir(parents=True, exist_ok=True)
        (run / "metrics" / name).write_text(text)
    return run


def test_synthetic_file_run_and_old_status(tmp_path: Path) -> None:
    run_dir = make_file_run(tmp_path, {"a/b": "5 0.5 1\n4 0.25 1\n3 nan 0\n"})
    (run_dir / "params" / "lr").write_text("0.01")
    (run_dir / "artifacts").mkdir()
    run = mf.read_run(tmp_path)
    assert run.status == "FINISHED" and run.run_id == "abc123"
    assert run.metrics["a/b"][1:] == [(1, 4, 0.25), (1, 5, 0.5)]
    assert math.isnan(run.metrics["a/b"][0][2])
    assert run.params == {"lr": "0.01"}
    assert run.artifact_dir == (run_dir / "artifacts").resolve()  # by the run folder, not the URI
    assert mf.to_log(run).columns["a/b"][1] == 0.5  # the later timestamp wins, not the later line


def test_two_field_lines_are_old_format_step_zero(tmp_path: Path) -> None:
    make_file_run(tmp_path, {"m": "1 0.5\n2 0.75\n"})
    assert mf.read_run(tmp_path).metrics["m"] == [(0, 1, 0.5), (0, 2, 0.75)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 0.5 0\n2 0.7\n", r"metrics/m line 2: 2 fields, the lines above have 3"),
        ("1 0.5 0 x\n", r"metrics/m line 1: 4 fields, expected 'timestamp value step'"),
        ("1\n", r"metrics/m line 1: 1 field, expected 'timestamp value step'"),
        ("1 0.5 0\n2 abc 1\n", r"metrics/m line 2: value 'abc' is not a number"),
        ("x 0.5 0\n", r"metrics/m line 1: timestamp 'x' is not an integer"),
        ("1 0.5 1.5\n", r"metrics/m line 1: step '1.5' is not an integer"),
    ],
)
def test_broken_metric_lines(tmp_path: Path, text: str, message: str) -> None:
    make_file_run(tmp_path, {"m": text})
    with pytest.raises(RunDirError, match=message) as info:
        mf.read_run(tmp_path)
    assert str(tmp_path) in one_line(info.value)


def test_huge_metric_file(tmp_path: Path) -> None:
    run_dir = make_file_run(tmp_path, {"m": ""})
    with open(run_dir / "metrics" / "m", "wb") as fh:
        fh.truncate(MAX_TEXT_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(RunDirError, match=r"metrics/m: \d+ bytes, larger than"):
        mf.read_run(tmp_path)


def test_metric_symlink_out_of_the_run_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("1 0.5 0\n")
    run_dir = make_file_run(tmp_path / "store")
    (run_dir / "metrics" / "evil").symlink_to(Path("..") / ".." / ".." / ".." / ".." / "secret")
    with pytest.raises(RunDirError, match=r"metrics/evil: symlink leads outside the run's metrics/ folder"):
        mf.read_run(tmp_path / "store")


def test_param_dotdot_name_is_refused(tmp_path: Path) -> None:
    run_dir = make_file_run(tmp_path)
    (run_dir / "params" / "sub").symlink_to("..")  # back up into the run folder: meta.yaml as a param
    with pytest.raises(RunDirError, match=r"params/sub: symlink leads outside the run's params/ folder"):
        mf.read_run(tmp_path)
    (run_dir / "params" / "sub").unlink()
    (run_dir / "params" / "loop").symlink_to(".")  # a loop inside params/ is walked once
    (run_dir / "params" / "lr").write_text("0.1")
    assert mf.read_run(tmp_path).params == {"lr": "0.1"}


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ("run_id: [unclosed\n", "invalid YAML"),
        ("- a list\n", "expected a mapping"),
        ("run_name: r\n", "no 'run_id'"),
    ],
)
def test_broken_meta_yaml(tmp_path: Path, meta: str, message: str) -> None:
    make_file_run(tmp_path, meta=meta)
    with pytest.raises(RunDirError, match=message) as info:
        mf.read_run(tmp_path / "mlruns" / "0" / "abc123")
    assert "meta.yaml" in one_line(info.value)


def test_missing_store(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no MLflow store"):
        mf.read_run(tmp_path)


# --------------------------------------------------------------------------- properties

finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
points = st.lists(
    st.tuples(st.integers(0, 2**62), finite_or_not, st.integers(-(2**62), 2**62)), max_size=30
)


@settings(max_examples=200, deadline=None)
@given(points)
def test_metric_lines_round_trip(pts: list[tuple[int, float, int]]) -> None:
    text = "".join(f"{ts} {value} {step}\n" for ts, value, step in pts)  # MLflow's "%s %s %s\n"
    back = parse_metric_lines(text, "m")
    assert len(back) == len(pts)
    for (step, ts, value), (ts0, value0, step0) in zip(back, pts):
        assert (step, ts) == (step0, ts0) and same(value, value0)


metric_sets = st.dictionaries(
    st.sampled_from(["loss", "acc", "val/loss", "lr"]),
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 5), finite_or_not), min_size=1, max_size=12),
    min_size=1,
)


@settings(max_examples=200, deadline=None)
@given(metric_sets)
def test_to_log_cells_are_last_logged(raw: dict[str, list[tuple[int, int, float]]]) -> None:
    metrics = {k: sorted(v, key=lambda p: (p[0], p[1])) for k, v in raw.items()}
    run = MlflowRun("r", None, None, "0", metrics, {}, {}, None, Path("x/mlflow.db"))
    log = mf.to_log(run)
    steps = sorted({s for pts in metrics.values() for s, _, _ in pts})
    assert log.columns["epoch"] == [float(s) for s in steps]
    for name, pts in metrics.items():
        for i, step in enumerate(steps):
            logged = [v for s, _, v in pts if s == step]
            cell = log.columns[name][i]
            if logged:
                assert same(cell, logged[-1])
            else:
                assert math.isnan(cell) and step in log.empty[name]


def test_one_run_of_a_sqlite_store_by_its_artifact_folder(stores: dict[str, Any], tmp_path: Path) -> None:
    """A store of many runs (the usual ./mlflow.db): --run-dir names one by the folder its
    artifacts live in, mlruns/<exp>/<run_id>/ -- the store root is found above it."""
    default = copy_store(stores["default"], tmp_path / "project")
    rid = stores["default_run"]
    folder = default / "mlruns" / "0" / rid
    assert mf.detect(folder)
    run = mf.read_run(folder)
    assert run.run_id == rid and run.status == "KILLED"
    assert run.artifact_dir == (folder / "artifacts").resolve()
    sql: Path = stores["sql"]  # an experiment with its own artifact_location
    run = mf.read_run(sql / "artifacts" / stores["sql_run"])
    assert run.run_id == stores["sql_run"]
    # a hex-named folder the store does not know is not a run
    stranger = default / "mlruns" / "0" / ("ab" * 16)
    stranger.mkdir()
    assert not mf.detect(stranger)
    from pytest_mlgates.formats import open_run

    opened = open_run(folder)
    assert opened.format == "mlflow" and len(opened.log) > 0


def test_fingerprint_of_an_artifact_folder_run_covers_its_rows_in_the_db(
        stores: dict[str, Any], tmp_path: Path) -> None:
    """The run's metrics live in mlflow.db above its folder: editing them changes the
    folder's fingerprint; another run logging to the same db does not."""
    import sqlite3

    from pytest_mlgates.fingerprint import diff_files, fingerprint

    default = copy_store(stores["default"], tmp_path / "project")
    rid = stores["default_run"]
    folder = default / "mlruns" / "0" / rid
    digest, files = fingerprint(folder)
    assert f"mlflow.db#{rid}" in files
    con = sqlite3.connect(default / "mlflow.db")
    with con:  # another run in the same store
        con.execute("INSERT INTO runs (run_uuid, name, status, lifecycle_stage, experiment_id, artifact_uri) "
                    "VALUES ('ff' || ?, 'other', 'RUNNING', 'active', 0, '')", (rid[2:],))
    assert fingerprint(folder)[0] == digest
    with con:  # this run's numbers edited after the fact
        con.execute("UPDATE metrics SET value = value + 1 WHERE run_uuid = ?", (rid,))
    con.close()
    digest2, files2 = fingerprint(folder)
    assert digest2 != digest
    assert diff_files(files, files2)["changed"] == [f"mlflow.db#{rid}"]


# --------------------------------------------------------------------------- artifact paths


@pytest.mark.parametrize("rel", ["artifacts/checkpoints/best_val_loss.pt", "checkpoints/best_val_loss.pt"])
def test_artifact_gate_takes_run_folder_and_artifacts_relative_paths(tmp_path: Path, rel: str) -> None:
    """issue 17: a file-store run folder holding artifacts/checkpoints/best_val_loss.pt; the
    gate file names it relative to the run folder (as the spec says) or to the artifacts
    folder: both find it. (It was RED naming the very file that exists:
    ``.../artifacts/checkpoints/best_val_loss.pt: not found``.)"""
    from gate_helpers import run_gate

    run_dir = make_file_run(tmp_path, {"val_loss": "1 0.5 0\n2 0.4 1\n"})
    (run_dir / "artifacts" / "checkpoints").mkdir(parents=True)
    (run_dir / "artifacts" / "checkpoints" / "best_val_loss.pt").write_bytes(b"weights")
    r = run_gate(run_dir, "artifact", {"path": rel})
    assert r.passed, r.message
    assert r.message.endswith("artifacts/checkpoints/best_val_loss.pt: exists"), r.message


def test_artifact_gate_names_every_path_it_looked_at(tmp_path: Path) -> None:
    from gate_helpers import run_gate

    run_dir = make_file_run(tmp_path, {"val_loss": "1 0.5 0\n"})
    (run_dir / "artifacts").mkdir()
    r = run_gate(run_dir, "artifact", {"path": "checkpoints/best_val_loss.pt"})
    assert not r.passed
    assert (f"{run_dir}/checkpoints/best_val_loss.pt: not found (nor "
            f"{run_dir}/artifacts/checkpoints/best_val_loss.pt)") in r.message, r.message
