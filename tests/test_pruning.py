"""Zero-fill pruners, 2:4 semi-structured sparsity and PruneSpec validation (CPU, random weights)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.vision_transformer import VisionTransformer

from harness.compression import (
    PruneSpec,
    apply_2_4,
    apply_pruning,
    dense_bytes,
    ln_structured_slice_fractions,
    sparsity,
    target_weights,
    verify_2_4,
)
from harness.errors import HarnessError

AMOUNTS = (0.1, 0.5, 0.9)
HAVE_TORCH_PRUNING = importlib.util.find_spec("torch_pruning") is not None


class SmallCNN(nn.Module):
    """Plain CNN with BatchNorm, a depthwise conv and a 3-channel stem (not 2:4 eligible)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TinyEncoder(nn.Module):
    """nn.TransformerEncoder (MultiheadAttention with fused in_proj_weight) plus a linear head."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=10,
    )
    nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the head
    return model.eval()


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN().eval()


def tiny_encoder() -> nn.Module:
    torch.manual_seed(0)
    return TinyEncoder().eval()


CASES = {
    "cnn": (small_cnn, (1, 3, 16, 16)),
    "vit": (tiny_vit, (1, 3, 32, 32)),
    "encoder": (tiny_encoder, (1, 8, 32)),
}


def _prune(name: str, spec: PruneSpec, seed: int = 0):
    factory, shape = CASES[name]
    model = factory()
    pruned, report = apply_pruning(model, spec, example_input=torch.randn(shape), seed=seed)
    return model, pruned, report


def _layer_tolerance(numel: int) -> float:
    # torch.nn.utils.prune prunes round(amount * size) entries of each tensor
    return 0.5 / numel + 1e-9


# --- PruneSpec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"method": "magic", "amount": 0.5}, "unknown pruning method"),
        ({"method": "l1", "amount": 1.0}, "outside [0, 1)"),
        ({"method": "l1", "amount": -0.1}, "outside [0, 1)"),
        ({"method": "ln-structured", "amount": 0.5, "dim": 2}, "dim must be 0"),
        ({"method": "removal", "amount": 0.5, "importance": "fisher"}, "unknown channel importance"),
        ({"method": "l1", "amount": 0.5, "targets": ("conv", "norm")}, "invalid pruning targets"),
        ({"method": "removal", "amount": 0.5, "round_to": 0}, "round_to"),
        ({"method": "2:4", "amount": 0.3}, "set amount to 0.5"),
        ({"method": "ln-structured", "amount": 0.5, "n": 0}, "norm order"),
    ],
)
def test_spec_validation_messages(kwargs, fragment):
    with pytest.raises(HarnessError, match="; ") as info:
        PruneSpec(**kwargs)
    assert fragment in str(info.value)


def test_spec_normalises_targets_and_serialises():
    spec = PruneSpec("l1", 0.5, targets=["linear", "linear", "mha"])
    assert spec.targets == ("linear", "mha")
    assert spec.to_dict()["targets"] == ["linear", "mha"]
    assert PruneSpec("removal", 0.3, importance="taylor").label == "removal[taylor]@0.3"


# --- zero-fill ---------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", AMOUNTS)
@pytest.mark.parametrize("method", ["random", "l1"])
@pytest.mark.parametrize("case", ["cnn", "vit"])
def test_per_layer_pruners_hit_amount_in_every_layer(case, method, amount):
    _, pruned, report = _prune(case, PruneSpec(method, amount))
    weights = {tw.name: tw.tensor for tw in target_weights(pruned)}
    assert set(report.per_layer_sparsity) == set(weights)
    for name, value in report.per_layer_sparsity.items():
        assert abs(value - amount) <= _layer_tolerance(weights[name].numel()), name
    assert report.achieved_sparsity == pytest.approx(amount, abs=0.01)
    assert report.params_after == report.params_before
    if HAVE_TORCH_PRUNING:
        assert report.macs_after == report.macs_before > 0


@pytest.mark.parametrize("amount", AMOUNTS)
@pytest.mark.parametrize("case", ["cnn", "vit", "encoder"])
def test_l1_global_hits_amount_globally(case, amount):
    _, pruned, report = _prune(case, PruneSpec("l1-global", amount))
    total = sum(tw.tensor.numel() for tw in target_weights(pruned))
    assert abs(report.achieved_sparsity - amount) <= 0.5 / total + 1e-9
    assert report.achieved_sparsity == pytest.approx(sparsity(pruned)[0])


@pytest.mark.parametrize("amount", AMOUNTS)
@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("case", ["cnn", "vit"])
def test_ln_structured_zeroes_whole_slices_and_never_1d(case, dim, amount):
    model, pruned, report = _prune(case, PruneSpec("ln-structured", amount, n=2, dim=dim))
    fractions = ln_structured_slice_fractions(pruned, PruneSpec("ln-structured", amount, dim=dim))
    for tw in target_weights(pruned):
        size = tw.tensor.shape[dim]
        assert abs(fractions[tw.name] - amount) <= 0.5 / size + 1e-9, tw.name
        # whole slices are zeroed: element sparsity equals the zeroed-slice fraction
        assert report.per_layer_sparsity[tw.name] == pytest.approx(fractions[tw.name])
    before = dict(model.named_parameters())
    for name, param in pruned.named_parameters():
        if param.dim() < 2:  # biases, BatchNorm and LayerNorm weights stay untouched
            assert torch.equal(param, before[name]), name


def test_ln_structured_runs_on_resnet18():
    model = resnet18(weights=None).eval()
    pruned, report = apply_pruning(
        model, PruneSpec("ln-structured", 0.5, n=1, dim=0), example_input=torch.randn(1, 3, 32, 32)
    )
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    bn = dict(model.named_parameters())["bn1.weight"]
    assert torch.equal(dict(pruned.named_parameters())["bn1.weight"], bn)


@pytest.mark.parametrize("case, key", [
    ("encoder", "encoder.layers.0.self_attn.in_proj_weight"),
    ("vit", "encoder.layers.encoder_layer_0.self_attention.in_proj_weight"),
])
def test_mha_in_proj_weight_is_pruned_and_targets_narrow(case, key):
    _, pruned, report = _prune(case, PruneSpec("l1-global", 0.5))
    assert report.per_layer_sparsity[key] > 0.1
    assert pruned.state_dict()[key].eq(0).float().mean() > 0.1
    _, pruned, report = _prune(case, PruneSpec("l1-global", 0.5, targets=("conv", "linear")))
    assert key not in report.per_layer_sparsity
    assert int(pruned.state_dict()[key].eq(0).sum()) == 0


@pytest.mark.parametrize("method", ["random", "l1", "ln-structured", "l1-global", "2:4"])
def test_state_dict_keys_shapes_and_dense_size_unchanged(method):
    model, pruned, _ = _prune("vit", PruneSpec(method, 0.5))
    base, after = model.state_dict(), pruned.state_dict()
    assert list(after) == list(base)
    assert all(after[k].shape == base[k].shape for k in base)
    assert abs(dense_bytes(pruned) - dense_bytes(model)) <= 64  # only the pickle's ids may differ
    assert not any(k.endswith(("_orig", "_mask")) for k in after)


def test_input_model_untouched_and_output_in_eval_mode():
    model = small_cnn()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, _ = apply_pruning(model, PruneSpec("l1", 0.5), example_input=torch.randn(1, 3, 16, 16))
    assert all(torch.equal(reference[k], v) for k, v in model.state_dict().items())
    assert not pruned.training


def test_random_pruning_is_seeded_and_leaves_global_rng_alone():
    model, example = small_cnn(), torch.randn(1, 3, 16, 16)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    apply_pruning(model, PruneSpec("random", 0.5), example_input=example, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    _, a, _ = _prune("cnn", PruneSpec("random", 0.5), seed=1)
    _, b, _ = _prune("cnn", PruneSpec("random", 0.5), seed=1)
    _, c, _ = _prune("cnn", PruneSpec("random", 0.5), seed=2)
    key = "features.6.weight"
    assert torch.equal(a.state_dict()[key].eq(0), b.state_dict()[key].eq(0))
    assert not torch.equal(a.state_dict()[key].eq(0), c.state_dict()[key].eq(0))


def test_none_keeps_weights():
    model, pruned, report = _prune("cnn", PruneSpec("none", 0.0))
    assert report.achieved_sparsity == 0.0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in pruned.state_dict().items())
    assert report.to_dict()["method"] == "none"


# --- 2:4 ---------------------------------------------------------------------------------------


def test_2_4_pattern_and_skipped_layers():
    model, pruned, report = _prune("cnn", PruneSpec("2:4", 0.5))
    assert report.pattern_24_verified is True
    verdict = verify_2_4(pruned)
    assert set(verdict) == {"features.6.weight", "classifier.weight"}
    assert all(verdict.values())
    skipped = " ".join(report.notes)
    assert "features.0.weight" in skipped and "features.3.weight" in skipped  # 3 in-ch; depthwise
    # the kept entries are the 2 largest magnitudes of each group of 4 input channels
    base = model.features[6].weight.detach().movedim(1, -1).reshape(-1, 4)
    kept = pruned.features[6].weight.detach().movedim(1, -1).reshape(-1, 4)
    top2 = base.abs().topk(2, dim=1).indices
    assert torch.equal(kept.gather(1, top2), base.gather(1, top2))
    assert int((kept != 0).sum(dim=1).max()) <= 2
    assert report.per_layer_sparsity["features.6.weight"] == 0.5
    assert report.per_layer_sparsity["features.0.weight"] == 0.0


def test_2_4_covers_mha_and_verify_detects_violation():
    model = tiny_vit()
    skipped = apply_2_4(model)
    assert "conv_proj.weight" in skipped  # 3 input channels
    verdict = verify_2_4(model)
    assert "encoder.layers.encoder_layer_0.self_attention.in_proj_weight" in verdict
    assert all(verdict.values())
    with torch.no_grad():
        model.heads.head.weight[0, :4] = 1.0  # a group of 4 with no zeros
    verdict = verify_2_4(model)
    assert verdict["heads.head.weight"] is False
    assert sum(not ok for ok in verdict.values()) == 1


def test_2_4_rejects_other_amounts():
    with pytest.raises(HarnessError, match="amount to 0.5"):
        PruneSpec("2:4", 0.9)


def test_no_targets_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    with pytest.raises(HarnessError, match="no prunable weights"):
        apply_pruning(model, PruneSpec("l1", 0.5, targets=("mha",)), example_input=torch.randn(1, 3, 8, 8))


def test_zero_fill_runs_without_torch_pruning(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # import now raises ImportError
    _, pruned, report = _prune("cnn", PruneSpec("l1", 0.5))
    assert report.macs_before is None and report.macs_after is None
    assert any("MACs not counted" in note and "pip install torch-pruning" in note for note in report.notes)
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    with pytest.raises(HarnessError, match="torch_pruning"):
        _prune("cnn", PruneSpec("removal", 0.5))
