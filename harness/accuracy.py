"""Accuracy: top-1 over every evaluation sample, weighted by count.

The thesis tool averaged per-batch accuracies, so a partial last batch weighed
as much as a full one. Here correct predictions and samples are summed over the
whole split. For ImageNet models on a 10-class subset, top-1 is taken over the
subset's 10 logits (and 1000-way top-1 is reported beside it). Top-5 is reported the same
way, when there are more than 5 candidate classes (with 5 or fewer it would always be 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class LabelMapping:
    """How model outputs relate to dataset labels."""

    kind: str  # "direct" | "imagenet-subset" | "none"
    imagenet_indices: tuple[int, ...] | None = None
    reason: str = ""

    @classmethod
    def for_model(cls, label_space: str, num_outputs: int, num_classes: int,
                  imagenet_indices: tuple[int, ...] | None) -> LabelMapping:
        if label_space == "imagenet" and num_outputs == 1000 and imagenet_indices is not None:
            return cls("imagenet-subset", tuple(imagenet_indices))
        if label_space == "own" and num_outputs == num_classes:
            return cls("direct")
        return cls("none", reason=(
            f"model outputs {num_outputs} {label_space} classes and the dataset has {num_classes} classes "
            "with no ImageNet index map; accuracy is not defined (latency only)"))


@dataclass(frozen=True)
class AccuracyResult:
    samples: int
    correct: int
    top1: float
    top1_1000: float | None
    mapping: str
    top5: float | None = None  # over the same logits as top1; None with 5 or fewer classes
    top5_1000: float | None = None  # 1000-way, beside top1_1000 (ImageNet models)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class AccuracyCounter:
    """Accumulates correct predictions over batches of any size."""

    def __init__(self, mapping: LabelMapping) -> None:
        if mapping.kind == "none":
            raise ValueError(mapping.reason)
        self.mapping = mapping
        self.samples = 0
        self.correct = 0
        self.correct_1000 = 0
        self.correct5 = 0
        self.correct5_1000 = 0
        self._classes: int | None = None  # candidate classes of the top-1/top-5 prediction
        if mapping.imagenet_indices is not None:
            self._subset = torch.tensor(mapping.imagenet_indices)

    @staticmethod
    def _in_top5(logits: torch.Tensor, labels: torch.Tensor) -> int:
        if logits.shape[1] <= 5:
            return len(labels)
        top = logits.topk(5, dim=1).indices
        return int((top == labels.unsqueeze(1)).any(dim=1).sum())

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.float()
        if len(logits) != len(labels):
            raise ValueError(f"{len(logits)} predictions for {len(labels)} labels")
        if self.mapping.kind == "imagenet-subset":
            scored = logits[:, self._subset]
            truth_1000 = self._subset[labels]
            self.correct_1000 += int((logits.argmax(dim=1) == truth_1000).sum())
            self.correct5_1000 += self._in_top5(logits, truth_1000)
        else:
            scored = logits
        self._classes = scored.shape[1]
        pred = scored.argmax(dim=1)
        self.correct5 += self._in_top5(scored, labels)
        self.correct += int((pred == labels).sum())
        self.samples += len(labels)

    def result(self) -> AccuracyResult:
        if self.samples == 0:
            raise ValueError("no samples were evaluated")
        subset = self.mapping.kind == "imagenet-subset"
        top1_1000 = self.correct_1000 / self.samples if subset else None
        top5 = self.correct5 / self.samples if (self._classes or 0) > 5 else None
        top5_1000 = self.correct5_1000 / self.samples if subset else None
        return AccuracyResult(self.samples, self.correct, self.correct / self.samples, top1_1000, self.mapping.kind,
                              top5=top5, top5_1000=top5_1000)


def evaluate(
    infer: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    mapping: LabelMapping,
    *,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    on_logits: Callable[[torch.Tensor], None] | None = None,
) -> AccuracyResult:
    """Run ``infer`` over every batch; a short last batch is zero-padded to ``batch_size``
    (so engines with fixed profiles never rebuild) and only its real rows are scored.
    ``on_logits`` receives each batch's logits of the real rows, in order (e.g. to keep predictions)."""
    counter = AccuracyCounter(mapping)
    for images, labels in batches:
        n = len(images)
        if n < batch_size:
            pad = torch.zeros((batch_size - n, *images.shape[1:]), dtype=images.dtype, device=images.device)
            logits = infer(torch.cat([images, pad]))[:n]
        else:
            logits = infer(images)
        counter.update(logits, labels)
        if on_logits is not None:
            on_logits(logits)
        if on_batch is not None:
            on_batch(n)
    return counter.result()
