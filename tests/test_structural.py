"""Structural channel removal with Torch-Pruning (CPU, random weights, small inputs)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torchvision import models
from torchvision.models.vision_transformer import VisionTransformer

from harness.compression import PruneSpec, apply_pruning
from harness.errors import HarnessError

pytest.importorskip("torch_pruning")


class PlainCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "plain":
        return PlainCNN().eval()
    if name == "tiny_vit":
        return VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
            num_classes=10,
        ).eval()
    kwargs = {"init_weights": False} if name == "googlenet" else {}
    return getattr(models, name)(weights=None, **kwargs).eval()


def _input(name: str) -> torch.Tensor:
    side = {"vit_b_16": 224, "alexnet": 64}.get(name, 32)  # alexnet needs >= 63 px
    return torch.randn(1, 3, side, side)


def _prune(name: str, spec: PruneSpec, **kwargs):
    model, example = _model(name), _input(name)
    pruned, report = apply_pruning(model, spec, example_input=example, **kwargs)
    with torch.no_grad():
        assert pruned(example).shape == model(example).shape
    return model, pruned, report


@pytest.mark.parametrize(
    "name, importance",
    [
        ("plain", "l1"),
        ("resnet18", "l2"),
        ("mobilenet_v2", "bn-scale"),
        pytest.param("densenet121", "random", marks=pytest.mark.slow),  # large graphs: the full lane covers them
        pytest.param("googlenet", "l1", marks=pytest.mark.slow),
        ("alexnet", "l1"),
        ("tiny_vit", "l1"),
    ],
)
def test_removal_keeps_output_shape_and_shrinks(name, importance):
    _, pruned, report = _prune(name, PruneSpec("removal", 0.3, importance=importance))
    assert report.params_after < report.params_before
    assert report.macs_after < report.macs_before
    assert 0.1 < report.achieved_sparsity < 0.8
    assert any(v > 0 for v in report.per_layer_sparsity.values())
    assert not pruned.training
    if name == "googlenet":  # training-only auxiliary heads are dropped, with a note
        assert pruned.aux1 is None and pruned.aux2 is None
        assert any("aux1" in note for note in report.notes)


@pytest.mark.parametrize("importance", ["random", "l1", "l2", "taylor", "bn-scale"])
def test_every_importance_on_plain_cnn(importance):
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    _, _, report = _prune("plain", PruneSpec("removal", 0.5, importance=importance), calib_batches=batches)
    assert report.params_after < report.params_before


@pytest.mark.slow
def test_taylor_uses_the_given_batches_on_resnet18():
    batches = [(torch.randn(2, 3, 32, 32), torch.randint(0, 1000, (2,))) for _ in range(2)]
    model, pruned, report = _prune("resnet18", PruneSpec("removal", 0.3, importance="taylor"),
                                   calib_batches=batches)
    assert "taylor importance from 2 calibration batch(es)" in report.notes
    assert report.params_after < report.params_before
    assert all(p.grad is None for p in pruned.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_taylor_without_batches_is_a_clear_error():
    with pytest.raises(HarnessError, match="calibration batches"):
        _prune("plain", PruneSpec("removal", 0.3, importance="taylor"))
    with pytest.raises(HarnessError, match="empty"):
        _prune("plain", PruneSpec("removal", 0.3, importance="taylor"), calib_batches=[])


def test_taylor_labels_outside_model_classes_are_a_clear_error():
    batches = [(torch.randn(2, 3, 32, 32), torch.tensor([3, 10]))]
    with pytest.raises(HarnessError, match=r"labels must lie in \[0, 10\)"):
        _prune("plain", PruneSpec("removal", 0.3, importance="taylor"), calib_batches=batches)


def test_bn_scale_without_batchnorm_is_a_clear_error():
    with pytest.raises(HarnessError, match="bn-scale importance needs BatchNorm"):
        _prune("alexnet", PruneSpec("removal", 0.3, importance="bn-scale"))


def test_round_to_8_gives_multiples_of_8():
    _, pruned, report = _prune("resnet18", PruneSpec("removal", 0.3, importance="l1", round_to=8))
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.out_channels % 8 == 0 for m in convs)
    assert pruned.fc.in_features % 8 == 0 and pruned.fc.out_features == 1000
    assert pruned.layer1[0].conv1.out_channels < 64


def test_random_removal_is_seeded():
    _, a, _ = _prune("plain", PruneSpec("removal", 0.5, importance="random"), seed=3)
    _, b, _ = _prune("plain", PruneSpec("removal", 0.5, importance="random"), seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_vit_embedding_dim_stays_divisible_by_heads():
    _, pruned, report = _prune("tiny_vit", PruneSpec("removal", 0.3, importance="l1", round_to=8))
    attn = pruned.encoder.layers[0].self_attention
    assert attn.embed_dim % attn.num_heads == 0 and attn.embed_dim % 8 == 0
    assert pruned.hidden_dim == pruned.conv_proj.out_channels < 64


def test_unsupported_model_raises_harness_error_not_crash():
    class HardCodedView(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.fc = nn.Linear(16 * 8 * 8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.fc(y.view(y.shape[0], 16 * 8 * 8))

    model = HardCodedView()
    with pytest.raises(HarnessError, match="structural removal is not supported for HardCodedView"):
        apply_pruning(model, PruneSpec("removal", 0.5), example_input=torch.randn(1, 3, 8, 8))
    assert model.conv.out_channels == 16  # the caller's model is untouched


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PQ_SLOW_TESTS"), reason="vit_b_16 at 224 px: set PQ_SLOW_TESTS=1")
def test_vit_b_16_removal():
    _, pruned, report = _prune("vit_b_16", PruneSpec("removal", 0.3, importance="l1"))
    assert report.params_after < report.params_before
    assert pruned.encoder.layers[0].self_attention.embed_dim % 12 == 0
