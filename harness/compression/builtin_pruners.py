"""The built-in pruners' functions (registered in :mod:`harness.compression.registry`)."""

from __future__ import annotations

from torch import nn

from harness.compression.registry import PruneInputs, PruneStep
from harness.compression.semi_structured import apply_2_4, verify_2_4
from harness.compression.spec import PruneSpec
from harness.compression.structural import prune_structural
from harness.compression.zero_fill import apply_zero_fill


def zero_fill(model: nn.Module, spec: PruneSpec, inputs: PruneInputs) -> PruneStep:
    return PruneStep(notes=apply_zero_fill(model, spec, seed=inputs.seed))


def semi_structured(model: nn.Module, spec: PruneSpec, inputs: PruneInputs) -> PruneStep:
    skipped = apply_2_4(model, spec.targets)
    verdict = verify_2_4(model, spec.targets)
    return PruneStep(notes=[f"{name}: skipped by 2:4 ({why})" for name, why in skipped.items()],
                     pattern_24_verified=bool(verdict) and all(verdict.values()))


def removal(model: nn.Module, spec: PruneSpec, inputs: PruneInputs) -> PruneStep:
    result = prune_structural(model, spec, example_input=inputs.example_input, calib_batches=inputs.calib_batches,
                              seed=inputs.seed)
    return PruneStep(notes=[*result.notes, "achieved sparsity = fraction of targeted weight elements removed"],
                     removed_fraction=result.removed_fraction, per_layer_removed=result.per_layer_removed)
