"""A pruner that is not shipped: the whole of what adding one takes (this file, plus one
``register(...)`` line where it is used, see tests/test_pruner_plugin.py)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from harness.compression import PruneInputs, PruneSpec, target_weights
from harness.compression.registry import Pruner, PrunerOptions, PruneStep


class FloorOptions(PrunerOptions):
    """``pruners: [{method: toy-floor, amounts: [...], floor: 0.01}]``."""

    floor: float = Field(default=0.0, ge=0.0)  # weights at or below this magnitude are always zeroed


def prune_floor(model: nn.Module, spec: PruneSpec, inputs: PruneInputs) -> PruneStep:
    """Per tensor, zero the ``amount`` smallest-magnitude weights and every weight at or below ``floor``."""
    floor = float(spec.option("floor", 0.0))
    batches = list(inputs.calib_batches or [])
    with torch.no_grad():
        for tw in target_weights(model, spec.targets):
            weight = tw.tensor
            k = int(round(spec.amount * weight.numel()))
            cut = weight.abs().flatten().kthvalue(k).values.item() if k > 0 else -1.0
            weight[weight.abs() <= max(cut, floor)] = 0.0
    images = sum(int(x.shape[0]) for x, _ in batches)
    return PruneStep(notes=[f"toy-floor: floor {floor}; {len(batches)} gradient batches ({images} images)"])


TOY = Pruner("toy-floor", prune_floor, options=FloorOptions, needs_gradient_batches=lambda spec: True,
             sparse_weights=True, zero_fill=True)
