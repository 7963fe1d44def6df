"""Counting helpers: parameters, MACs, and sparsity of the prunable weights."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from harness.compression.spec import TARGET_KINDS
from harness.errors import missing_library


@dataclass(frozen=True)
class TargetWeight:
    """One prunable weight tensor: ``getattr(module, param)`` named ``name`` in the state_dict."""

    name: str
    module: nn.Module
    param: str
    kind: str

    @property
    def tensor(self) -> torch.Tensor:
        return getattr(self.module, self.param)


def import_torch_pruning() -> ModuleType:
    """Import Torch-Pruning lazily, with an actionable error when it is missing."""
    try:
        import torch_pruning
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise missing_library(
            "torch_pruning", "structural pruning and MAC counting",
            "install it with `python3 -m pip install torch-pruning`",
        ) from exc
    return torch_pruning


def target_weights(model: nn.Module, targets: Iterable[str] = TARGET_KINDS) -> list[TargetWeight]:
    """The weights a pruner may touch, in module order.

    "conv": every ``nn.Conv*d`` / transposed conv ``.weight``; "linear": every ``nn.Linear`` ``.weight``
    (this includes MultiheadAttention's ``out_proj``); "mha": ``nn.MultiheadAttention.in_proj_weight``
    (or ``q/k/v_proj_weight`` when key/value dims differ from the embedding dim).
    """
    kinds = set(targets)
    found: list[TargetWeight] = []
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if "conv" in kinds and isinstance(module, nn.modules.conv._ConvNd):
            params = ["weight"]
            kind = "conv"
        elif "linear" in kinds and isinstance(module, nn.Linear):
            params = ["weight"]
            kind = "linear"
        elif "mha" in kinds and isinstance(module, nn.MultiheadAttention):
            if module._qkv_same_embed_dim:
                params = ["in_proj_weight"]
            else:
                params = ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
            kind = "mha"
        else:
            continue
        for param in params:
            if isinstance(getattr(module, param, None), torch.Tensor):
                found.append(TargetWeight(prefix + param, module, param, kind))
    return found


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on ``example_input`` (Torch-Pruning's counter).

    The counter runs on a deep copy in eval mode, so ``model`` is left untouched.
    """
    tp = import_torch_pruning()
    with torch.no_grad():
        macs, _params = tp.utils.count_ops_and_params(model, example_input)
    return int(macs)


def zeroed_slices_fraction(tensor: torch.Tensor, dim: int) -> float:
    """Fraction of slices along ``dim`` (e.g. output channels for dim 0) that are entirely zero."""
    moved = tensor.detach().movedim(dim, 0).reshape(tensor.shape[dim], -1)
    if moved.shape[0] == 0:
        return 0.0
    zero_rows = int((moved != 0).any(dim=1).logical_not().sum())
    return zero_rows / moved.shape[0]


def sparsity(
    model: nn.Module, targets: Iterable[str] = TARGET_KINDS
) -> tuple[float, dict[str, float]]:
    """(global sparsity, per-layer sparsity) over the targeted weights; global is element-weighted."""
    per_layer: dict[str, float] = {}
    zeros = total = 0
    for tw in target_weights(model, targets):
        t = tw.tensor.detach()
        nz = int(torch.count_nonzero(t))
        zeros += t.numel() - nz
        total += t.numel()
        per_layer[tw.name] = (t.numel() - nz) / t.numel() if t.numel() else 0.0
    return (zeros / total if total else 0.0), per_layer
