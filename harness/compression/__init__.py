"""Pruning of torchvision classifiers: zero-fill, structural removal, 2:4; sizes and counts.

Entry point: :func:`apply_pruning`, which runs the pruner registered for ``PruneSpec.method``
(:mod:`harness.compression.registry`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable

import torch
from torch import nn

from harness.compression.measures import count_macs, count_params, sparsity, target_weights
from harness.compression.registry import (
    IMPORTANCES,
    NO_PRUNING,
    TARGET_KINDS,
    ArtifactFlags,
    PruneInputs,
    Pruner,
    methods,
    pruner_for,
    register,
)
from harness.compression.semi_structured import apply_2_4, verify_2_4
from harness.compression.sizes import SizeReport, dense_bytes, gzip_bytes, measure_sizes, sparse_bytes
from harness.compression.spec import PruneReport, PruneSpec
from harness.compression.zero_fill import ln_structured_slice_fractions

__all__ = [
    "IMPORTANCES",
    "NO_PRUNING",
    "TARGET_KINDS",
    "ArtifactFlags",
    "PruneInputs",
    "PruneReport",
    "Pruner",
    "PruneSpec",
    "SizeReport",
    "apply_2_4",
    "apply_pruning",
    "artifact_flags",
    "needs_gradient_batches",
    "count_macs",
    "count_params",
    "dense_bytes",
    "gzip_bytes",
    "ln_structured_slice_fractions",
    "measure_sizes",
    "methods",
    "pruner_for",
    "register",
    "sparse_bytes",
    "sparsity",
    "target_weights",
    "verify_2_4",
]


def apply_pruning(
    model: nn.Module,
    spec: PruneSpec,
    *,
    example_input: torch.Tensor,
    calib_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    seed: int = 0,
) -> tuple[nn.Module, PruneReport]:
    """Prune a deep copy of ``model`` as ``spec`` says; returns (pruned model in eval mode, report).

    ``model`` itself is not modified. ``example_input`` (one batch on any device; it is moved to the
    model's device) is used to count MACs and to trace the graph for structural removal.
    ``calib_batches`` are (images, labels) batches in the model's own label space, needed only by
    ``removal`` with ``importance="taylor"``. ``seed`` makes random pruning deterministic.
    ``report.prune_seconds`` times the pruning itself (not the copy nor the MAC/size counting).
    """
    pruned = copy.deepcopy(model).eval()
    device = next(pruned.parameters(), torch.empty(0)).device
    example_input = example_input.to(device)
    params_before = count_params(pruned)
    notes: list[str] = []
    macs_before = _macs_or_none(pruned, example_input, notes)
    pattern_ok: bool | None = None
    per_layer_override: dict[str, float] | None = None
    removed_fraction: float | None = None

    start = time.perf_counter()
    if spec.method == NO_PRUNING:
        if spec.amount:
            notes.append(f"method none ignores amount {spec.amount}")
    else:
        step = pruner_for(spec.method).function()(
            pruned, spec, PruneInputs(example_input=example_input,
                                      calib_batches=None if calib_batches is None else list(calib_batches), seed=seed))
        notes += step.notes
        pattern_ok, removed_fraction, per_layer_override = (step.pattern_24_verified, step.removed_fraction,
                                                            step.per_layer_removed)

    pruned.eval()
    prune_seconds = time.perf_counter() - start
    if removed_fraction is not None and per_layer_override is not None:
        achieved, per_layer = removed_fraction, per_layer_override
        macs_after = _macs_or_none(pruned, example_input, notes)
    else:
        achieved, per_layer = sparsity(pruned, spec.targets)
        macs_after = macs_before  # zero-fill and 2:4 keep dense shapes and dense compute
    report = PruneReport(
        method=spec.method,
        amount=spec.amount,
        achieved_sparsity=achieved,
        per_layer_sparsity=per_layer,
        params_before=params_before,
        params_after=count_params(pruned),
        macs_before=macs_before,
        macs_after=macs_after,
        pattern_24_verified=pattern_ok,
        prune_seconds=prune_seconds,
        notes=notes,
    )
    return pruned, report


def _macs_or_none(model: nn.Module, example_input: torch.Tensor, notes: list[str]) -> int | None:
    """MACs via Torch-Pruning's counter; None plus a note when it cannot count (zero-fill and 2:4 do
    not otherwise need torch-pruning, so they still run)."""
    try:
        return count_macs(model, example_input)
    except Exception as exc:  # missing library, or a graph the counter cannot run
        notes.append(f"MACs not counted: {exc}")
        return None


def artifact_flags(spec: PruneSpec) -> ArtifactFlags:
    """What the step's pruner tells the backends (sparse weights for TensorRT's sparse tactics)."""
    if spec.method == NO_PRUNING:
        return ArtifactFlags()
    return ArtifactFlags(sparse_weights=pruner_for(spec.method).sparse_weights)


def needs_gradient_batches(spec: PruneSpec) -> bool:
    """Whether the step's pruner needs (images, labels) batches from the calibration split."""
    return spec.method != NO_PRUNING and pruner_for(spec.method).needs_gradient_batches(spec)
