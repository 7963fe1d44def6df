"""2:4 semi-structured magnitude pruning (NVIDIA sparse tensor cores, Ampere and newer).

In every group of 4 consecutive input channels, for each output channel and kernel position, the 2
smallest-magnitude weights are zeroed. Only layers whose input-channel count divides by 4 and that are
not grouped/depthwise convolutions qualify; the others are left dense and listed as skipped.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from harness.compression.measures import TargetWeight, target_weights
from harness.compression.spec import TARGET_KINDS

GROUP = 4
KEEP = 2


def _eligibility(tw: TargetWeight) -> str | None:
    """None when the tensor can take the 2:4 pattern, else why not."""
    module, weight = tw.module, tw.tensor
    if isinstance(module, nn.modules.conv._ConvNd):
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            return "transposed convolution"
        if module.groups != 1:
            return f"grouped/depthwise convolution (groups={module.groups})"
    if weight.dim() < 2:
        return "fewer than 2 dimensions"
    if weight.shape[1] % GROUP != 0:
        return f"{weight.shape[1]} input channels, not divisible by {GROUP}"
    return None


def _groups_of_four(weight: torch.Tensor) -> torch.Tensor:
    """View (out, in, *k) as rows of 4 consecutive input channels per (out, kernel position)."""
    return weight.detach().movedim(1, -1).reshape(-1, GROUP)


def eligible_weights(
    model: nn.Module, targets: Iterable[str] = TARGET_KINDS
) -> tuple[list[TargetWeight], dict[str, str]]:
    """(weights that can take 2:4, {skipped weight name: reason})."""
    ok: list[TargetWeight] = []
    skipped: dict[str, str] = {}
    for tw in target_weights(model, targets):
        reason = _eligibility(tw)
        if reason is None:
            ok.append(tw)
        else:
            skipped[tw.name] = reason
    return ok, skipped


@torch.no_grad()
def apply_2_4(model: nn.Module, targets: Iterable[str] = TARGET_KINDS) -> dict[str, str]:
    """Apply the 2:4 pattern in place to every eligible weight; returns the skipped layers."""
    ok, skipped = eligible_weights(model, targets)
    for tw in ok:
        weight = tw.tensor
        moved = weight.movedim(1, -1)
        groups = moved.reshape(-1, GROUP)
        drop = groups.abs().topk(GROUP - KEEP, dim=1, largest=False).indices
        mask = torch.ones_like(groups, dtype=torch.bool).scatter_(1, drop, False)
        pruned = (groups * mask).reshape(moved.shape).movedim(-1, 1)
        weight.copy_(pruned)
    return skipped


@torch.no_grad()
def verify_2_4(model: nn.Module, targets: Iterable[str] = TARGET_KINDS) -> dict[str, bool]:
    """Per eligible weight: does every group of 4 input channels hold at least 2 zeros?

    Ineligible layers (input channels not divisible by 4, grouped/depthwise convs) are not listed.
    """
    ok, _skipped = eligible_weights(model, targets)
    result: dict[str, bool] = {}
    for tw in ok:
        zeros_per_group = (_groups_of_four(tw.tensor) == 0).sum(dim=1)
        result[tw.name] = bool((zeros_per_group >= GROUP - KEEP).all())
    return result
