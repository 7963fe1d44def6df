"""Zero-fill pruning with ``torch.nn.utils.prune``: weights are zeroed, shapes stay dense.

Every pruning reparametrization is made permanent with ``prune.remove``, so the pruned model's
state_dict has exactly the keys and tensor sizes of the base model (and the same saved size).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from harness.compression.measures import TargetWeight, target_weights, zeroed_slices_fraction
from harness.compression.spec import PruneSpec
from harness.errors import HarnessError


def _cuda_devices(model: nn.Module) -> list[int]:
    return sorted(
        {p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"}
    )


def apply_zero_fill(model: nn.Module, spec: PruneSpec, *, seed: int = 0) -> list[str]:
    """Prune ``model`` in place according to ``spec``; returns notes for the report.

    "random" and "l1" prune each targeted tensor by ``spec.amount``; "l1-global" ranks all targeted
    weights together; "ln-structured" zeroes whole slices along ``spec.dim`` by their L``n`` norm and
    is only ever applied to tensors with at least 2 dimensions (never to BatchNorm/LayerNorm weights).
    Random pruning draws from the global RNG, seeded with ``seed`` inside ``torch.random.fork_rng``
    so the caller's RNG state is unchanged and results are deterministic.
    """
    weights = target_weights(model, spec.targets)
    if not weights:
        raise HarnessError(
            f"the model has no prunable weights of kinds {', '.join(spec.targets)}; "
            "widen the pruning targets (conv, linear, mha)"
        )
    notes: list[str] = []
    if spec.amount == 0.0:
        return notes
    param_order = {id(tw.module): (tw.module, list(tw.module._parameters)) for tw in weights}
    with torch.random.fork_rng(devices=_cuda_devices(model)):
        torch.manual_seed(seed)
        if spec.method == "l1-global":
            prune.global_unstructured(
                [(tw.module, tw.param) for tw in weights],
                pruning_method=prune.L1Unstructured,
                amount=spec.amount,
            )
        else:
            for tw in weights:
                _prune_one(tw, spec, notes)
    for tw in weights:
        if prune.is_pruned(tw.module) and hasattr(tw.module, tw.param + "_orig"):
            prune.remove(tw.module, tw.param)
    for module, order in param_order.values():
        _restore_parameter_order(module, order)
    return notes


def _restore_parameter_order(module: nn.Module, order: list[str]) -> None:
    """``prune.remove`` re-registers the weight last; put it back so state_dict key order matches."""
    params = module._parameters
    if list(params) != order and set(params) == set(order):
        items = [(name, params.pop(name)) for name in order]
        params.update(items)


def _prune_one(tw: TargetWeight, spec: PruneSpec, notes: list[str]) -> None:
    if spec.method == "random":
        prune.random_unstructured(tw.module, tw.param, amount=spec.amount)
    elif spec.method == "l1":
        prune.l1_unstructured(tw.module, tw.param, amount=spec.amount)
    elif spec.method == "ln-structured":
        shape = tw.tensor.shape
        if len(shape) < 2:
            notes.append(f"{tw.name}: skipped by ln-structured (1-D tensor)")
            return
        if shape[spec.dim] == 1:
            notes.append(
                f"{tw.name}: dim {spec.dim} has a single slice, which is pruned entirely or not at all"
            )
        prune.ln_structured(tw.module, tw.param, amount=spec.amount, n=spec.n, dim=spec.dim)
    else:  # pragma: no cover - dispatch guarantees a zero-fill method
        raise HarnessError(f"'{spec.method}' is not a zero-fill pruning method; use random, l1, "
                           "ln-structured or l1-global")


def ln_structured_slice_fractions(model: nn.Module, spec: PruneSpec) -> dict[str, float]:
    """Per targeted tensor, the fraction of slices along ``spec.dim`` that are entirely zero."""
    return {
        tw.name: zeroed_slices_fraction(tw.tensor, spec.dim)
        for tw in target_weights(model, spec.targets)
        if tw.tensor.dim() >= 2
    }
