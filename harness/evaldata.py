"""The evaluation split of one dataset, preprocessed for one model.

The sweep uses only this interface: ``eval_batches(batch_size)``, ``timing_inputs(batch_size, count)``,
``num_classes``, ``imagenet_indices`` and ``len()``; a streaming implementation that does not keep
every image in memory can replace :class:`EvalData` without touching the sweep.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class EvalData:
    """The evaluation split preprocessed for one model, held in memory."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    imagenet_indices: tuple[int, ...] | None

    def __len__(self) -> int:
        return len(self.images)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) over the whole split, in order; the last batch may be short."""
        for start in range(0, len(self.images), batch_size):
            yield self.images[start:start + batch_size], self.labels[start:start + batch_size]

    def timing_inputs(self, batch_size: int, count: int) -> list[torch.Tensor]:
        """Up to ``count`` distinct full batches of real images (cycled when the split is small)."""
        n = len(self.images)
        out = []
        for b in range(count):
            idx = torch.arange(b * batch_size, (b + 1) * batch_size) % n
            out.append(self.images[idx].contiguous())
            if (b + 1) * batch_size >= n:
                break
        return out


def load_eval_data(loaded: Any, split: Any, max_samples: int | None) -> EvalData:
    """Preprocess the first ``max_samples`` images of ``split`` (all when None) with ``loaded.transform``."""
    dataset = split.dataset(loaded.transform)
    n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=64,
                                         shuffle=False, num_workers=0)
    images, labels = [], []
    for x, y in loader:
        images.append(x)
        labels.append(y)
    return EvalData(torch.cat(images), torch.cat(labels), len(split.classes), split.imagenet_indices)
