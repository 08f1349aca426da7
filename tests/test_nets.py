"""The mlp and cnn models: shapes on every bundled input, misuse, rebuild from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.config import ConfigError, ModelConfig, load_config
from model.data import build_dataset
from model.nets import build_model, model_from_checkpoint


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [
        ("mlp", (30,), 2),
        ("mlp", (1, 8, 8), 10),
        ("cnn", (1, 8, 8), 10),
        ("cnn", (3, 64, 64), 2),
        ("mlp", (3, 64, 64), 2),
    ],
)
def test_models_give_one_logit_per_class(name: str, shape: tuple[int, ...], classes: int) -> None:
    model = build_model(ModelConfig(name=name, width=8), shape, classes)
    out = model(torch.randn(5, *shape))
    assert out.shape == (5, classes)
    assert torch.isfinite(out).all()


def test_cnn_on_tabular_data_names_model_name() -> None:
    with pytest.raises(ConfigError) as err:
        build_model(ModelConfig(name="cnn"), (30,), 2)
    msg = str(err.value)
    assert msg.startswith("model.name:") and "\n" not in msg and "mlp" in msg


def test_plain_dict_config_is_accepted_and_validated() -> None:
    model = build_model({"name": "mlp", "width": 4, "dropout": 0.1}, (30,), 2)
    assert model(torch.zeros(2, 30)).shape == (2, 2)
    with pytest.raises(ConfigError, match=r"^model\.width"):
        build_model({"name": "mlp", "width": 0}, (30,), 2)


def test_dropout_only_acts_in_training_mode() -> None:
    model = build_model(ModelConfig(name="mlp", width=16, dropout=0.5), (30,), 2)
    x = torch.randn(8, 30)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))


def test_model_rebuilt_from_checkpoint_alone_gives_same_outputs(tmp_path: Path) -> None:
    config = load_config(None, ["model.name=cnn", "model.width=8"])
    torch.manual_seed(1)
    model = build_model(config.model, (1, 8, 8), 10)
    model(torch.randn(16, 1, 8, 8))  # move BatchNorm running stats off their defaults
    model.eval()
    path = tmp_path / "final.pt"
    torch.save(
        {"model": model.state_dict(), "config": config.to_dict(), "input_shape": [1, 8, 8],
         "class_names": [str(i) for i in range(10)]},
        path,
    )
    ckpt = torch.load(path, weights_only=True)
    rebuilt = model_from_checkpoint(ckpt)
    x = torch.randn(4, 1, 8, 8)
    assert not rebuilt.training
    assert torch.equal(rebuilt(x), model(x))


def test_checkpoint_missing_keys_is_one_line_error() -> None:
    with pytest.raises(ConfigError, match="missing key 'input_shape'"):
        model_from_checkpoint({"model": {}, "config": {}, "class_names": ["a", "b"]})


def test_digits_cnn_learns_through_the_real_loader() -> None:
    config = load_config(None, ["data.name=digits", "model.name=cnn"])
    ds = build_dataset(config)
    torch.manual_seed(0)
    model = build_model(config.model, ds.input_shape, ds.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for epoch in range(2):
        for xb, yb in ds.loader("train", 64, shuffle=True, seed=0, epoch=epoch):
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
