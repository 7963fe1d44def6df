"""Structural removal of channels with Torch-Pruning's dependency graph (DepGraph).

Coupled channels (e.g. across residual additions and concatenations) are removed together, so the
pruned model is genuinely smaller and faster. The final classifier keeps its outputs, so the output
shape is unchanged. Models Torch-Pruning cannot handle raise a HarnessError naming the model and the
reason; the caller records that as a failed cell.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.compression.measures import import_torch_pruning, target_weights
from harness.compression.spec import PruneSpec
from harness.errors import HarnessError


@dataclass
class StructuralResult:
    """Shapes-level outcome of a structural removal (the counts are filled in by the caller)."""

    removed_fraction: float
    per_layer_removed: dict[str, float]
    notes: list[str] = field(default_factory=list)


def _importance(name: str, tp: Any) -> Any:
    if name == "random":
        return tp.importance.RandomImportance()
    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.TaylorImportance()
    if name == "bn-scale":
        return tp.importance.BNScaleImportance()
    raise HarnessError(f"unknown channel importance '{name}'; use random, l1, l2, taylor or bn-scale")


def _drop_aux_heads(model: nn.Module) -> list[str]:
    """GoogLeNet/Inception auxiliary classifiers only run in training; remove them so that no stale
    (unpruned) layers remain in the pruned model."""
    notes = []
    for attr in ("aux1", "aux2", "AuxLogits"):
        aux = getattr(model, attr, None)
        if isinstance(aux, nn.Module):
            n_params = sum(p.numel() for p in aux.parameters())
            setattr(model, attr, None)
            notes.append(
                f"removed auxiliary classifier '{attr}' ({n_params} params, training-only) "
                "before pruning; params_after excludes it"
            )
    if notes and hasattr(model, "aux_logits"):
        model.aux_logits = False
    return notes


def _classifier_layers(model: nn.Module, example_input: torch.Tensor) -> list[nn.Module]:
    """The last Conv/Linear module run in a forward pass: the classifier whose outputs must stay."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    return order[-1:]


def _mha_round_to(model: nn.Module, round_to: int | None) -> int | None:
    """Embedding dims of MultiheadAttention must stay divisible by num_heads."""
    heads = [m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    if not heads:
        return round_to
    multiple = round_to or 1
    for h in heads:
        multiple = math.lcm(multiple, h)
    return multiple


def _accumulate_taylor_gradients(
    model: nn.Module, calib_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None
) -> int:
    """Sum the cross-entropy gradients over the calibration batches (model stays in eval mode)."""
    if calib_batches is None:
        raise HarnessError(
            "taylor importance needs calibration batches (images, labels) for gradients; "
            "pass calib_batches from the train split or choose another importance"
        )
    device = next(model.parameters(), torch.empty(0)).device
    model.zero_grad(set_to_none=True)
    count = 0
    with torch.enable_grad():
        for images, labels in calib_batches:
            logits = model(images.to(device))
            labels = labels.to(device)
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
                raise HarnessError(
                    f"calibration labels must lie in [0, {logits.shape[1]}) (the model's outputs), "
                    f"got {int(labels.min())}..{int(labels.max())}; map them into the model's label space"
                )
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            count += 1
    if count == 0:
        raise HarnessError(
            "taylor importance got an empty set of calibration batches; "
            "pass at least one (images, labels) batch or choose another importance"
        )
    return count


def prune_structural(
    model: nn.Module,
    spec: PruneSpec,
    *,
    example_input: torch.Tensor,
    calib_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    seed: int = 0,
) -> StructuralResult:
    """Remove ``spec.amount`` of the channels of ``model`` in place (eval mode throughout).

    ``spec.importance`` ranks channels (random, l1, l2, taylor, bn-scale); "taylor" accumulates
    cross-entropy gradients over ``calib_batches`` first. ``spec.round_to`` rounds kept channel counts
    to a multiple (for MultiheadAttention models it is combined with num_heads).
    """
    tp = import_torch_pruning()
    model_name = type(model).__name__
    model.eval()
    notes = _drop_aux_heads(model)
    if spec.importance == "bn-scale" and not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        raise HarnessError(
            f"bn-scale importance needs BatchNorm layers and {model_name} has none; "
            "use l1, l2, random or taylor importance"
        )
    before = {tw.name: tw.tensor.numel() for tw in target_weights(model)}
    with torch.no_grad():
        out_shape = tuple(model(example_input).shape)
    grad_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        with torch.random.fork_rng(devices=_cuda_devices(example_input)), warnings.catch_warnings():
            torch.manual_seed(seed)
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
            for p in model.parameters():
                p.requires_grad_(True)
            round_to = _mha_round_to(model, spec.round_to)
            pruner = tp.pruner.BasePruner(
                model,
                example_input,
                importance=_importance(spec.importance, tp),
                pruning_ratio=spec.amount,
                ignored_layers=_classifier_layers(model, example_input),
                round_to=round_to,
            )
            if spec.importance == "taylor":
                n = _accumulate_taylor_gradients(model, calib_batches)
                notes.append(f"taylor importance from {n} calibration batch(es)")
            pruner.step()
            model.zero_grad(set_to_none=True)
            if hasattr(model, "hidden_dim") and hasattr(model, "conv_proj"):
                # torchvision's VisionTransformer reshapes with self.hidden_dim in forward
                model.hidden_dim = model.conv_proj.out_channels
            with torch.no_grad():
                new_shape = tuple(model(example_input).shape)
    except HarnessError:
        raise
    except Exception as exc:  # Torch-Pruning raises arbitrary errors on unsupported graphs
        raise HarnessError(
            f"structural removal is not supported for {model_name}: {type(exc).__name__}: {exc}; "
            "use a zero-fill pruner (l1, l1-global, random, ln-structured) for this model"
        ) from exc
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(grad_flags.get(name, True))
    if new_shape != out_shape:
        raise HarnessError(
            f"structural removal is not supported for {model_name}: output shape changed from "
            f"{out_shape} to {new_shape}; use a zero-fill pruner for this model"
        )
    if round_to != spec.round_to:
        notes.append(f"channel counts rounded to multiples of {round_to} (MultiheadAttention heads)")
    after = {tw.name: tw.tensor.numel() for tw in target_weights(model)}
    per_layer = {name: 1.0 - after.get(name, 0) / n for name, n in before.items() if n}
    total = sum(before.values())
    removed = 1.0 - sum(after.get(name, 0) for name in before) / total if total else 0.0
    return StructuralResult(removed_fraction=removed, per_layer_removed=per_layer, notes=notes)


def _cuda_devices(tensor: torch.Tensor) -> list[int]:
    return [tensor.device.index or 0] if tensor.device.type == "cuda" else []
