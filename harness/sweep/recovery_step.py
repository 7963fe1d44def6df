"""The recovery step of a unit: between pruning and export, every later stage sees its result.

:func:`harness.compression.recovery.recover` fine-tunes on the train split only. Around it this step
scores the pruned model *before* recovery and the recovered one *after* it with torch on the
evaluation split: that is reporting (the cell records both), it never feeds the training. The
time spent goes to the unit's prep phase ``recover`` (small when the recovered weights are cached).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from harness.accuracy import LabelMapping, evaluate
from harness.compression.recovery import RecoverOptions, recover
from harness.errors import HarnessError

#: Batch of the torch evaluation before and after recovery.
EVAL_BATCH = 64


def torch_top1(module: torch.nn.Module, data: Any, mapping: LabelMapping, batch_size: int = EVAL_BATCH) -> float | None:
    """Top-1 of ``module`` (eval mode, CPU) over the evaluation data, or None when accuracy is not defined."""
    if mapping.kind == "none":
        return None
    module = module.eval()
    with torch.inference_mode():
        result = evaluate(lambda x: module(x), data.eval_batches(batch_size), mapping, batch_size=batch_size)
    return result.top1


def label_map_for(loaded: Any, train: Any) -> list[int] | None:
    """Dataset label -> model output index for the train split (None: the model's outputs are its classes)."""
    if loaded.label_space != "imagenet":
        return None
    if train.imagenet_indices is None:
        raise HarnessError(f"recovery needs labels in {loaded.name}'s ImageNet label space; {train.name} has no "
                           "ImageNet index map (pass --class-map)")
    return list(train.imagenet_indices)


def recovery_step(module: torch.nn.Module, loaded: Any, method: str, options: RecoverOptions, *, train: Any,
                  eval_data: Any, mapping: LabelMapping, cache_dir: Any, phases: Any,
                  stage: Callable[[str], None] = lambda _: None,
                  on_rebuild: Callable[[str], None] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(recovered module, the ``recovery`` record of the cell's pruning report); time to ``phases`` as
    ``recover``. ``stage`` gets the progress with an ETA."""
    stage(f"{loaded.name}: torch accuracy before recovery")
    before = torch_top1(module, eval_data, mapping)

    def progress(step: int, total: int, eta: float | None) -> None:
        stage(f"{loaded.name}: recovering, step {step}/{total}" + (f", ETA {eta:.0f} s" if eta is not None else ""))

    stage(f"{loaded.name}: recovering ({options.epochs} epoch(s) on {train.name} train)")
    with phases.timed("recover"):
        recovered, report = recover(module, train, transform=loaded.transform, method=method, options=options,
                                    cache_dir=cache_dir, teacher=loaded.module if options.distill else None,
                                    label_map=label_map_for(loaded, train), on_progress=progress,
                                    on_rebuild=on_rebuild)
    stage(f"{loaded.name}: torch accuracy after recovery")
    after = torch_top1(recovered, eval_data, mapping)
    return recovered, {**report.to_dict(), "accuracy_before": before, "accuracy_after": after}


__all__ = ["EVAL_BATCH", "label_map_for", "recovery_step", "torch_top1"]
