"""Bundled datasets, faults, splits and loaders: each promise of docs/data.md, checked."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from model.config import ConfigError, load_config
from model.data import Dataset, build_dataset, normalization_stats
from pytest_mlgates.probes import central_crop_features, fill_core_with_median
from pytest_mlgates.probes import core_probe_auc as shortcut_probe_auc

STAMPS_SMALL = ["data.name=stamps", "data.n_samples=240"]


def build(*overrides: str) -> Dataset:
    return build_dataset(load_config(None, list(overrides)))


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return build("data.name=digits")


@pytest.fixture(scope="module")
def stamps_honest() -> Dataset:
    return build("data.name=stamps", "data.n_samples=600", "data.split=group_holdout")


@pytest.fixture(scope="module")
def stamps_shortcut() -> Dataset:
    return build("data.name=stamps", "data.n_samples=600", "data.split=group_holdout", "data.faults=[shortcut]")


def all_batches(loader: object) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)  # type: ignore[call-overload]
    return torch.cat(xs), torch.cat(ys)


# --------------------------------------------------------------------------- datasets


def test_digits_shape_range_and_names(digits: Dataset) -> None:
    assert digits.x.shape == (1797, 1, 8, 8) and digits.x.dtype == np.float32
    assert digits.x.min() == 0.0 and digits.x.max() == 1.0
    assert digits.y.dtype == np.int64 and set(digits.y) == set(range(10))
    assert digits.class_names == [str(i) for i in range(10)]
    assert digits.groups is None


def test_breast_cancer_is_sklearns_with_its_target_names() -> None:
    from sklearn.datasets import load_breast_cancer

    ds = build("data.name=breast_cancer")
    ref = load_breast_cancer()
    assert ds.x.shape == (569, 30) and ds.x.dtype == np.float32
    assert ds.class_names == ["malignant", "benign"]
    np.testing.assert_array_equal(ds.y, ref.target)
    np.testing.assert_allclose(ds.x, ref.data.astype(np.float32))


@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_sklearns_data_files_read_without_sklearn_are_its_arrays_bit_for_bit(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine reads scikit-learn's two bundled files itself (importing scikit-learn
    costs seconds of every start); the arrays are sklearn.datasets' own, to the bit, and
    where the files are not where it looks, sklearn.datasets loads them."""
    import subprocess
    import sys

    from sklearn.datasets import load_breast_cancer, load_digits

    from model import bundled

    read = {"digits": bundled.load_digits, "breast_cancer": bundled.load_breast_cancer}[name]
    x, y, _, names = read()
    if name == "digits":
        ref = load_digits()
        expected_x, expected_names = (ref.images.astype(np.float32) / 16.0)[:, None], [str(i) for i in range(10)]
    else:
        ref = load_breast_cancer()
        expected_x, expected_names = ref.data.astype(np.float32), [str(n) for n in ref.target_names]
    assert x.tobytes() == np.ascontiguousarray(expected_x).tobytes() and x.shape == expected_x.shape
    assert y.dtype == np.int64 and np.array_equal(y, ref.target)
    assert names == expected_names
    # without scikit-learn imported at all, in a process of its own
    probe = (f"import sys; from model.bundled import {read.__name__}; {read.__name__}(); "
             "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
    # the fallback: no file where the reader looks -> sklearn.datasets, the same arrays
    monkeypatch.setattr(bundled, "_sklearn_data_file", lambda _name: None)
    x2, y2, _, names2 = read()
    assert x2.tobytes() == x.tobytes() and np.array_equal(y2, y) and names2 == names


def test_stamps_shape_balance_and_groups_of_four() -> None:
    ds = build(*STAMPS_SMALL)
    assert ds.x.shape == (240, 3, 64, 64) and ds.x.dtype == np.float32
    assert ds.class_names == ["nonlens", "lens"]
    assert ds.groups is not None and ds.groups.dtype == np.int64
    assert set(Counter(ds.groups.tolist()).values()) == {4}
    for g in np.unique(ds.groups):  # one system, one label
        assert len(set(ds.y[ds.groups == g])) == 1
    counts = np.bincount(ds.y)
    assert abs(counts[0] - counts[1]) <= 8
    assert np.isfinite(ds.x).all()


def test_same_seed_same_arrays_other_seed_other_arrays() -> None:
    a, b = build(*STAMPS_SMALL), build(*STAMPS_SMALL)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a.splits[split], b.splits[split])
    c = build(*STAMPS_SMALL, "seed=1")
    assert not np.array_equal(a.x, c.x)


# --------------------------------------------------------------------------- splits


@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_stratified_split_is_disjoint_complete_and_proportional(name: str) -> None:
    ds = build(f"data.name={name}", "data.val_fraction=0.2", "data.test_fraction=0.1")
    tr, va, te = (set(ds.splits[s].tolist()) for s in ("train", "val", "test"))
    assert not (tr & va or tr & te or va & te)
    assert tr | va | te == set(range(len(ds.y)))
    for cls in range(ds.num_classes):
        n = np.sum(ds.y == cls)
        assert abs(np.sum(ds.y[ds.splits["val"]] == cls) - 0.2 * n) <= 1
        assert abs(np.sum(ds.y[ds.splits["test"]] == cls) - 0.1 * n) <= 1


def test_group_holdout_keeps_every_group_in_one_split(stamps_honest: Dataset) -> None:
    ds = stamps_honest
    assert ds.groups is not None
    seen = {s: set(ds.groups[ds.splits[s]].tolist()) for s in ("train", "val", "test")}
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])
    n = len(ds.y)
    assert abs(len(ds.splits["val"]) - 0.2 * n) <= 8 and abs(len(ds.splits["test"]) - 0.1 * n) <= 8
    for s in ("train", "val", "test"):
        assert set(ds.y[ds.splits[s]]) == {0, 1}


def test_group_holdout_needs_groups() -> None:
    with pytest.raises(ConfigError) as err:
        build("data.name=digits", "data.split=group_holdout")
    assert str(err.value).startswith("data.split:") and "\n" not in str(err.value)


def test_splits_json_round_trips_with_group_ids(stamps_honest: Dataset) -> None:
    doc = json.loads(json.dumps(stamps_honest.splits_json()))
    assert doc["dataset"] == "stamps" and doc["strategy"] == "group_holdout" and doc["seed"] == 0
    assert doc["train"] == stamps_honest.splits["train"].tolist()
    assert stamps_honest.groups is not None
    assert doc["groups"]["val"] == stamps_honest.groups[stamps_honest.splits["val"]].tolist()
    assert build("data.name=breast_cancer").splits_json()["groups"] is None


def test_imbalance_thins_one_class_in_train_only() -> None:
    base = build("data.name=breast_cancer")
    thin = build("data.name=breast_cancer", "data.imbalance={class: malignant, keep: 0.1}")
    n_before = np.sum(base.y[base.splits["train"]] == 0)
    n_after = np.sum(thin.y[thin.splits["train"]] == 0)
    assert n_after == round(0.1 * n_before)
    assert np.sum(thin.y[thin.splits["train"]] == 1) == np.sum(base.y[base.splits["train"]] == 1)
    for split in ("val", "test"):
        np.testing.assert_array_equal(thin.splits[split], base.splits[split])
    by_index = build("data.name=breast_cancer", "data.imbalance={class: 0, keep: 0.1}")
    np.testing.assert_array_equal(by_index.splits["train"], thin.splits["train"])


def test_imbalance_of_unknown_class_names_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        build("data.name=digits", "data.imbalance={class: 12, keep: 0.5}")
    assert str(err.value).startswith("data.imbalance.class:") and "\n" not in str(err.value)


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("dataset", "fault"),
    [("breast_cancer", "missing_band"), ("breast_cancer", "nan_pixels"), ("digits", "shortcut"),
     ("digits", "leaked_groups")],
)
def test_fault_that_does_not_apply_names_data_faults(dataset: str, fault: str) -> None:
    with pytest.raises(ConfigError) as err:
        build(f"data.name={dataset}", f"data.faults=[{fault}]")
    msg = str(err.value)
    assert msg.startswith("data.faults:") and fault in msg and dataset in msg and "\n" not in msg


def test_nan_pixels_fault_puts_nan_in_about_two_percent() -> None:
    ds = build(*STAMPS_SMALL, "data.n_samples=500", "data.faults=[nan_pixels]")
    bad = np.isnan(ds.x).any(axis=(1, 2, 3))
    assert bad.sum() == 10
    assert all(np.isfinite(v) for v in ds.normalization["mean"] + ds.normalization["std"])
    digits = build("data.name=digits", "data.faults=[nan_pixels]")
    assert np.isnan(digits.x).any(axis=(1, 2, 3)).sum() == round(0.02 * 1797)


def test_nan_survives_the_loader() -> None:
    ds = build("data.name=digits", "data.faults=[nan_pixels]")
    x, _ = all_batches(ds.loader("train", 256, shuffle=False, seed=0, epoch=0))
    assert torch.isnan(x).any(dim=(1, 2, 3)).sum().item() == np.isnan(ds.x[ds.splits["train"]]).any(axis=(1, 2, 3)).sum()


def test_missing_band_fault_zeroes_one_band_in_five_percent() -> None:
    honest = build(*STAMPS_SMALL, "data.n_samples=400")
    ds = build(*STAMPS_SMALL, "data.n_samples=400", "data.faults=[missing_band]")
    dead = (ds.x == 0).all(axis=(2, 3))  # (N, bands)
    assert dead.any(axis=1).sum() == 20 and dead.sum() == 20
    assert not (honest.x == 0).all(axis=(2, 3)).any()
    alive = ~dead.any(axis=1)
    np.testing.assert_array_equal(ds.x[alive], honest.x[alive])


def test_leaked_groups_share_groups_and_copies_between_train_and_val() -> None:
    ds = build(*STAMPS_SMALL, "data.n_samples=400", "data.split=group_holdout", "data.faults=[leaked_groups]")
    assert ds.groups is not None
    train_groups = set(ds.groups[ds.splits["train"]].tolist())
    val_groups = set(ds.groups[ds.splits["val"]].tolist())
    assert val_groups <= train_groups  # every val sample belongs to a train system
    assert not set(ds.groups[ds.splits["test"]].tolist()) & train_groups  # test stays honest
    train_x = {ds.x[i].tobytes(): ds.y[i] for i in ds.splits["train"]}
    for i in ds.splits["val"]:
        assert train_x.get(ds.x[i].tobytes()) == ds.y[i]  # exact copy, same label
    assert set(ds.y[ds.splits["val"]]) == {0, 1}


def test_shortcut_fault_changes_only_lens_cores(stamps_honest: Dataset, stamps_shortcut: Dataset) -> None:
    nonlens = stamps_honest.y == 0
    np.testing.assert_array_equal(stamps_shortcut.x[nonlens], stamps_honest.x[nonlens])
    core = central_crop_features(stamps_shortcut.x) - central_crop_features(stamps_honest.x)
    assert core[~nonlens].mean() > 1.0


def test_shortcut_probe_sees_the_shortcut_and_not_honest_data(
    stamps_honest: Dataset, stamps_shortcut: Dataset
) -> None:
    assert shortcut_probe_auc(stamps_shortcut.x, stamps_shortcut.y) > 0.8
    assert shortcut_probe_auc(stamps_honest.x, stamps_honest.y) < 0.62


def test_filling_the_core_removes_the_shortcut_signal(stamps_shortcut: Dataset) -> None:
    filled = fill_core_with_median(stamps_shortcut.x, radius=5)
    assert shortcut_probe_auc(filled, stamps_shortcut.y) < 0.65


def test_central_crop_takes_the_disc_in_every_band() -> None:
    x = np.zeros((2, 3, 64, 64), dtype=np.float32)
    feats = central_crop_features(x, radius=5)
    assert feats.shape == (2, 3 * 80)  # pixel centres within 5 px of (31.5, 31.5)
    with pytest.raises(ValueError, match="needs images"):
        central_crop_features(np.zeros((4, 30)))


# --------------------------------------------------------------------------- normalization


def test_normalization_is_train_split_only_and_ignores_nan() -> None:
    ds = build("data.name=breast_cancer")
    train = ds.x[ds.splits["train"]].astype(np.float64)
    np.testing.assert_allclose(ds.normalization["mean"], train.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(ds.normalization["std"], train.std(axis=0), rtol=1e-6)
    x = np.array([[[[1.0, np.nan]]], [[[3.0, 5.0]]]], dtype=np.float32)  # (2, 1, 1, 2)
    stats = normalization_stats(x)
    assert stats["mean"] == [3.0] and stats["std"][0] == pytest.approx(np.std([1.0, 3.0, 5.0]))
    assert normalization_stats(np.ones((4, 2), dtype=np.float32))["std"] == [1e-6, 1e-6]


def test_train_loader_is_normalized_per_channel(stamps_honest: Dataset) -> None:
    x, y = all_batches(stamps_honest.loader("train", 128, shuffle=False, seed=0, epoch=0))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (len(stamps_honest.splits["train"]), 3, 64, 64)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


# --------------------------------------------------------------------------- loader order


def order_of(ds: Dataset, **kw: object) -> list[int]:
    """Positions (in the train split) of the samples the loader yields, in order."""
    x, _ = all_batches(ds.loader("train", 100, **kw))  # type: ignore[arg-type]
    rows = {r.tobytes(): i for i, r in enumerate(ds.normalized("train"))}
    assert len(rows) == len(ds.splits["train"])  # every row is distinct, so positions are exact
    return [rows[r.tobytes()] for r in x.numpy()]


def test_order_depends_only_on_seed_and_epoch(digits: Dataset) -> None:
    first = order_of(digits, shuffle=True, seed=3, epoch=2)
    assert sorted(first) == list(range(len(digits.splits["train"])))  # a permutation of the split
    again = order_of(build("data.name=digits"), shuffle=True, seed=3, epoch=2)
    assert first == again  # a resumed run replays the epoch
    assert first != order_of(digits, shuffle=True, seed=3, epoch=3)
    assert first != order_of(digits, shuffle=True, seed=4, epoch=2)
    assert order_of(digits, shuffle=False, seed=3, epoch=2) != first


def test_unshuffled_loader_keeps_split_order(digits: Dataset) -> None:
    x, y = all_batches(digits.loader("val", 64, shuffle=False, seed=0, epoch=5))
    assert torch.equal(x, torch.from_numpy(digits.normalized("val")))
    assert torch.equal(y, torch.from_numpy(digits.y[digits.splits["val"]]))


def test_ranks_get_disjoint_equal_shards_like_distributed_sampler(digits: Dataset) -> None:
    n = len(digits.splits["train"])
    shards = [
        torch.cat([yb for _, yb in digits.loader("train", 64, shuffle=True, seed=0, epoch=1, rank=r, world_size=3)])
        for r in range(3)
    ]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-n // 3)
    x_all = torch.cat(
        [xb for r in range(3) for xb, _ in digits.loader("train", 64, shuffle=True, seed=0, epoch=1, rank=r, world_size=3)]
    )
    unique_rows = torch.unique(x_all.reshape(len(x_all), -1), dim=0)
    assert len(unique_rows) == len(torch.unique(torch.from_numpy(digits.normalized("train")).reshape(n, -1), dim=0))


# --------------------------------------------------------------------------- core_dropout


def test_core_dropout_fills_the_core_with_the_median_of_the_rest(stamps_shortcut: Dataset) -> None:
    loader = stamps_shortcut.loader("train", 64, shuffle=False, seed=0, epoch=0, core_dropout={"prob": 1.0, "radius": 5})
    x = all_batches(loader)[0].numpy()
    original = stamps_shortcut.normalized("train")
    core = central_crop_features(x, radius=5).reshape(len(x), 3, -1)
    yy, xx = np.mgrid[0:64, 0:64]
    ring_mask = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 > 5**2  # everything outside the disc
    want = np.median(original[:, :, ring_mask], axis=2)  # (N, bands): median of the rest
    np.testing.assert_allclose(core, np.broadcast_to(want[:, :, None], core.shape), atol=1e-5)
    np.testing.assert_array_equal(x[:, :, ring_mask], original[:, :, ring_mask])  # the rest untouched


def test_core_dropout_removes_the_shortcut_from_what_the_model_sees(stamps_shortcut: Dataset) -> None:
    ds = stamps_shortcut
    y = ds.y[ds.splits["train"]]
    plain, _ = all_batches(ds.loader("train", 256, shuffle=False, seed=0, epoch=0))
    dropped, _ = all_batches(ds.loader("train", 256, shuffle=False, seed=0, epoch=0, core_dropout={"prob": 1.0, "radius": 5}))
    assert shortcut_probe_auc(plain.numpy(), y) > 0.8
    assert shortcut_probe_auc(dropped.numpy(), y) < 0.65


def test_core_dropout_randomness_is_replayable(stamps_shortcut: Dataset) -> None:
    cfg = load_config(None, ["train.core_dropout={prob: 0.5, radius: 5}"]).train.core_dropout

    def run(epoch: int) -> torch.Tensor:
        return all_batches(stamps_shortcut.loader("train", 64, shuffle=True, seed=7, epoch=epoch, core_dropout=cfg))[0]

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    core = central_crop_features(a.numpy(), radius=5).reshape(len(a), 3, -1)
    filled = np.all(np.isclose(core, core[:, :, :1]), axis=(1, 2))
    assert 0.35 < filled.mean() < 0.65


def test_core_dropout_never_touches_val(stamps_shortcut: Dataset) -> None:
    x, _ = all_batches(stamps_shortcut.loader("val", 64, shuffle=False, seed=0, epoch=0, core_dropout={"prob": 1.0, "radius": 5}))
    assert torch.equal(x, torch.from_numpy(stamps_shortcut.normalized("val")))


def test_core_dropout_on_tabular_data_is_a_config_error() -> None:
    ds = build("data.name=breast_cancer")
    with pytest.raises(ConfigError, match=r"^train\.core_dropout:"):
        ds.loader("train", 32, shuffle=True, seed=0, epoch=0, core_dropout={"prob": 0.5, "radius": 5})
