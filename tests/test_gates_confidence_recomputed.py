"""``class_recall`` with ``confidence:`` on a log without the counts (issue 20): where the
user names their model and data (the ``mlgates_subject`` fixture with a ``val`` loader),
the counts are recomputed from the run's checkpoint on that val split, cross-checked with
the logged recall; otherwise the item is UNVERIFIED in one line that says how to make it
verifiable.

Real parts only: a tiny torch model is trained here on generated data, its log (no
``val_support_<class>`` column) and a real checkpoint are written as a hand-written loop
would, and a real pytest session (``pytester``) judges the run with the conftest below.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

#: the user's code: the conftest of the session, and what the test trains with
SUBJECT_CODE = '''\
import pytest
import torch

from pytest_mlgates import PreflightSubject

CENTERS = [[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]]


def make_data(seed, per_class):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor(CENTERS)
    x = torch.cat([centers[c] + 1.3 * torch.randn(n, 2, generator=g) for c, n in enumerate(per_class)])
    y = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(per_class)])
    return x, y


def batches(x, y, size=16):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


def net():
    return torch.nn.Linear(2, 3)


TRAIN = make_data(0, (60, 60, 60))
VAL = make_data(1, (40, 25, 20))
CLASS_NAMES = None


@pytest.fixture(scope="session")
def mlgates_subject():
    return PreflightSubject(model=net, loaders={"train": batches(*TRAIN), "val": batches(*VAL)},
                            loss=torch.nn.CrossEntropyLoss(), num_classes=3, class_names=CLASS_NAMES)
'''

EPOCHS = 6
#: the learning rate of each epoch: the last two overshoot, so val_loss is best at epoch 4
RATES = [0.1, 0.1, 0.1, 0.1, 2.0, 2.0]
BEST = 4


def user_code() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "user_code"}
    exec(compile(SUBJECT_CODE, "conftest.py", "exec"), namespace)  # noqa: S102 - the test's own code
    return namespace


def recall_counts(model: Any, batches: list[tuple[Any, Any]]) -> list[tuple[int, int]]:
    """(correct, samples) of each class on ``batches``."""
    k, n = [0, 0, 0], [0, 0, 0]
    with torch.no_grad():
        for x, y in batches:
            pred = model(x).argmax(dim=1)
            for c in range(3):
                n[c] += int((y == c).sum())
                k[c] += int(((y == c) & (pred == c)).sum())
    return list(zip(k, n))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run dir as a hand-written loop writes it: ``metrics.csv`` with ``val_recall_<c>``
    (and no ``val_support_<c>``) per epoch, ``ckpt/last.pt`` after the last epoch,
    ``ckpt/best_val_loss.pt`` at the best; and the counts of the final and the best model
    on the val split, computed here."""
    code = user_code()
    torch.manual_seed(0)
    model = code["net"]()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    train, val = code["batches"](*code["TRAIN"]), code["batches"](*code["VAL"])
    run = tmp_path_factory.mktemp("trained") / "run"
    (run / "ckpt").mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    for epoch, lr in enumerate(RATES, start=1):
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_loss = sum(float(loss_fn(model(x), y)) * len(y) for x, y in val) / sum(len(y) for _, y in val)
        counts = recall_counts(model, val)
        rows.append({"epoch": epoch, "train_loss": float(loss.detach()), "val_loss": val_loss,
                     **{f"val_recall_{c}": k / n for c, (k, n) in enumerate(counts)}})
        if not best or val_loss < best["value"]:
            best = {"epoch": epoch, "value": val_loss, "counts": counts}
            torch.save({"epoch": epoch, "monitor": "val_loss", "value": val_loss,
                        "model_state_dict": model.state_dict()}, run / "ckpt" / "best_val_loss.pt")
    torch.save({"epoch": EPOCHS, "model_state_dict": model.state_dict()}, run / "ckpt" / "last.pt")
    write_csv(run / "metrics.csv", rows)
    assert best["epoch"] == BEST and best["counts"] != counts
    return {"run": run, "rows": rows, "counts": counts, "best": best["counts"]}


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def lower_bound(k: int, n: int) -> float:
    from pytest_mlgates.stats import rate_lower_bound

    return float(rate_lower_bound(k, n, 0.95))


GATES = """\
run:
  format: plain
  log: metrics.csv
  checkpoints: "ckpt/last.pt"
  best: "ckpt/best_{{metric}}.pt"
  tracked: [{{metric: val_loss, mode: min}}]
exit_criteria:
  - name: honest_recall
    gate: class_recall
    floor: {floor}
    confidence: 0.95
    at: {at}
"""


def session(pytester: pytest.Pytester, trained: dict[str, Any], floor: float, *, subject: bool = True,
            rows: list[dict[str, Any]] | None = None, code: str = SUBJECT_CODE, at: str = "final") -> tuple[pytest.RunResult, str, Path]:
    """Judge a copy of the trained run (its log rewritten from ``rows`` when given): the
    result, the item's one line, the run dir as messages name it."""
    run = Path(shutil.copytree(trained["run"], pytester.path / "run"))
    if rows is not None:
        write_csv(run / "metrics.csv", rows)
    if subject:
        pytester.makeconftest(code)
    pytester.makefile(".gates.yaml", exp=GATES.format(floor=floor, at=at))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rA", "--mlgates-archive=off",
                                          "--run-dir", "run")
    [report] = [r for r in result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
                if r.when == "call"]
    return result, str(dict(report.user_properties).get("mlgates.message")), run


def unverified(result: pytest.RunResult) -> str:
    """The one line of the session's UNVERIFIED item."""
    [line] = [ln.split("UNVERIFIED: ", 1)[1] for ln in result.outlines if "UNVERIFIED: " in ln]
    return line


def weakest(trained: dict[str, Any], which: str = "counts") -> tuple[float, int, int, int]:
    """(lower bound, class, k, n) of the class with the lowest bound (of the final model, or
    ``which="best"``)."""
    return min((lower_bound(k, n), c, k, n) for c, (k, n) in enumerate(trained[which]))


def test_counts_recomputed_from_the_checkpoint_make_the_item_green(pytester: pytest.Pytester,
                                                                   trained: dict[str, Any]) -> None:
    bound, c, k, n = weakest(trained)
    floor = round(bound - 0.05, 2)
    assert floor > 0
    result, line, run = session(pytester, trained, floor)
    result.assert_outcomes(passed=1)
    assert line == (f"lowest 95% lower bound over 3 classes = {bound:.3f}: val_recall_{c} = {k / n:.3f} "
                    f"({k}/{n}, counts recomputed from {run}/ckpt/last.pt on mlgates_subject's val split) "
                    f"at epoch {EPOCHS} (final); needs > {floor:g}")


def test_a_floor_above_the_bound_is_red_naming_the_weakest_class_and_its_counts(
        pytester: pytest.Pytester, trained: dict[str, Any]) -> None:
    bound, c, k, n = weakest(trained)
    floor = round(min(k / n for k, n in trained["counts"]) - 0.01, 2)
    assert floor > bound  # every recall clears the floor; the weakest bound does not
    result, line, run = session(pytester, trained, floor)
    result.assert_outcomes(failed=1)
    assert line == (f"val_recall_{c} = {k / n:.3f} ({k}/{n}, counts recomputed from {run}/ckpt/last.pt on "
                    f"mlgates_subject's val split) at epoch {EPOCHS} (final), 95% lower bound {bound:.3f}; "
                    f"needs > {floor:g}")


def test_a_tampered_recall_is_unverified_naming_both_numbers(pytester: pytest.Pytester,
                                                             trained: dict[str, Any]) -> None:
    k, n = trained["counts"][1]
    rows = [dict(r) for r in trained["rows"]]
    rows[-1]["val_recall_1"] = (k - 2) / n  # two samples fewer than the checkpoint gets right
    result, _, run = session(pytester, trained, 0.0, rows=rows)
    result.assert_outcomes(skipped=1)
    assert unverified(result) == (f"val_recall_1 = {(k - 2) / n:.3f} at epoch {EPOCHS} (final) is not what "
                                  f"{run}/ckpt/last.pt gives on mlgates_subject's val split "
                                  f"({k}/{n} = {k / n:.3f}), so the counts behind it are unknown")


def test_without_a_subject_unverified_lists_every_column_and_says_how_to_verify(
        pytester: pytest.Pytester, trained: dict[str, Any]) -> None:
    result, _, run = session(pytester, trained, 0.0, subject=False)
    result.assert_outcomes(skipped=1)
    line = unverified(result)
    recalls = trained["rows"][-1]
    for c in range(3):
        assert (f"val_recall_{c} = {recalls[f'val_recall_{c}']:.3f} at epoch {EPOCHS} (final): no column "
                f"val_support_{c} in {run}/metrics.csv") in line
    assert "(+2 more)" not in line
    assert line.endswith("to weigh them, log val_support_<class> beside each recall, or provide the "
                         "mlgates_subject fixture with a 'val' loader to recompute the counts from the "
                         "run's checkpoint")


def test_a_subject_without_a_val_loader_says_so(pytester: pytest.Pytester, trained: dict[str, Any]) -> None:
    code = SUBJECT_CODE.replace(', "val": batches(*VAL)', "")
    result, _, run = session(pytester, trained, 0.0, code=code)
    result.assert_outcomes(skipped=1)
    line = unverified(result)
    assert line.startswith("val_recall_0 = ") and f"no column val_support_2 in {run}/metrics.csv" in line
    assert line.endswith("; mlgates_subject has no 'val' loader (its loaders: train) to recompute the counts "
                         "from; give it one, or log val_support_<class> beside each recall")


def test_named_classes_map_to_labels_through_the_subjects_class_names(pytester: pytest.Pytester,
                                                                       trained: dict[str, Any]) -> None:
    names = ["cat", "dog", "emu"]
    rows = [{(f"val_recall_{names[int(key[-1])]}" if key.startswith("val_recall_") else key): v
             for key, v in r.items()} for r in trained["rows"]]
    bound, c, k, n = weakest(trained)
    floor = round(bound - 0.05, 2)
    code = SUBJECT_CODE.replace("CLASS_NAMES = None", f"CLASS_NAMES = {names!r}")
    result, line, run = session(pytester, trained, floor, rows=rows, code=code)
    result.assert_outcomes(passed=1)
    assert line.startswith(f"lowest 95% lower bound over 3 classes = {bound:.3f}: val_recall_{names[c]} = "
                           f"{k / n:.3f} ({k}/{n}, counts recomputed from {run}/ckpt/last.pt")


def test_named_classes_without_names_are_unverified_naming_the_column(pytester: pytest.Pytester,
                                                                       trained: dict[str, Any]) -> None:
    rows = [{("val_recall_cat" if key == "val_recall_0" else key): v for key, v in r.items()}
            for r in trained["rows"]]
    result, _, _ = session(pytester, trained, 0.0, rows=rows)
    result.assert_outcomes(skipped=1)
    assert unverified(result) == ("val_recall_cat: class 'cat' is not a label number, and neither the run nor "
                                  "mlgates_subject.class_names names the classes in label order, so its counts "
                                  "cannot be recomputed on mlgates_subject's val split; give mlgates_subject "
                                  "class_names=[...], or log val_support_cat")


def test_at_best_the_counts_come_from_the_best_checkpoint(pytester: pytest.Pytester,
                                                          trained: dict[str, Any]) -> None:
    bound, c, k, n = weakest(trained, "best")
    floor = round(bound - 0.05, 2)
    result, line, run = session(pytester, trained, floor, at="best")
    result.assert_outcomes(passed=1)
    assert line == (f"lowest 95% lower bound over 3 classes = {bound:.3f}: val_recall_{c} = {k / n:.3f} "
                    f"({k}/{n}, counts recomputed from {run}/ckpt/best_val_loss.pt on mlgates_subject's val "
                    f"split) at epoch {BEST} (best val_loss); needs > {floor:g}")


def test_a_checkpoint_of_another_epoch_gives_no_counts(pytester: pytest.Pytester,
                                                       trained: dict[str, Any]) -> None:
    """The log lost its last row: ``last.pt`` holds epoch 6, the judged row is epoch 5."""
    result, _, run = session(pytester, trained, 0.0, rows=trained["rows"][:-1])
    result.assert_outcomes(skipped=1)
    assert unverified(result).endswith(f"; {run}/ckpt/last.pt holds epoch {EPOCHS}, not the judged epoch "
                                       f"{EPOCHS - 1} (final), so it cannot give the counts behind the logged "
                                       "recall; log val_support_<class>")


@pytest.mark.parametrize(("names", "line"), [
    ("cat", "mlgates_subject.class_names: needs a list of names, one per label; got the string 'cat'"),
    (["cat", 1, "emu"], ("mlgates_subject.class_names: needs a list of non-empty strings, one per label in "
                         "label order; got list ['cat', 1, 'emu']")),
    (["cat", "dog"], "mlgates_subject.class_names: needs one name per label (3, num_classes); got 2"),
    (["cat", "dog", "cat"], "mlgates_subject.class_names: 'cat' appears twice; each label needs its own name"),
])
def test_bad_class_names_are_one_line_naming_the_field(names: Any, line: str) -> None:
    from pytest_mlgates import PreflightSubject, SubjectError

    with pytest.raises(SubjectError) as err:
        PreflightSubject(model=lambda: None, loaders={"train": []}, loss=lambda a, b: 0, num_classes=3,
                         class_names=names)
    assert str(err.value) == line
    assert PreflightSubject(model=lambda: None, loaders={"train": []}, loss=lambda a, b: 0, num_classes=3,
                            class_names=("cat", "dog", "emu")).class_names == ("cat", "dog", "emu")


def test_a_class_the_val_split_lacks_is_unverified(pytester: pytest.Pytester, trained: dict[str, Any]) -> None:
    """A logged recall of label 5, of which the subject's val split has no sample: no
    count explains it (it is never weighed as 0 of 0)."""
    rows = [{**r, "val_recall_5": 0.9} for r in trained["rows"]]
    result, _, run = session(pytester, trained, 0.0, rows=rows)
    result.assert_outcomes(skipped=1)
    assert unverified(result) == (f"val_recall_5 = 0.900 at epoch {EPOCHS} (final) is not what {run}/ckpt/last.pt "
                                  "gives on mlgates_subject's val split (no sample of label 5), so the counts "
                                  "behind it are unknown")
