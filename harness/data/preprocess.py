"""A model's preprocessing split in two: the PIL part (resize, crop -> uint8) and the float part.

Every transform the harness builds (torchvision weights, tinycnn, custom factories) is
``Compose([<PIL ops>..., ToTensor(), Normalize(mean, std)])``. Split there, the first part yields a
uint8 CHW tensor (4x smaller than float32: cheap to send from DataLoader workers and to cache on
disk) and the second part turns a uint8 batch into exactly the floats the whole transform gives:
``ToTensor`` is ``uint8.to(float32).div(255)`` and ``Normalize`` is ``sub(mean).div(std)``, the
same operations in the same order, so the results are bit-identical.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torchvision import transforms


@dataclass(frozen=True)
class SplitTransform:
    """``to_uint8(PIL image) -> uint8 CHW tensor``; ``normalize(uint8 NCHW) -> float32 NCHW``."""

    pil_part: Callable[[Any], Any]  # PIL image -> PIL image (resize, crop, ...)
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_uint8(self, img: Any) -> torch.Tensor:
        return transforms.functional.pil_to_tensor(self.pil_part(img))

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N)CHW -> float32, identical to ToTensor() then Normalize(mean, std)."""
        if batch.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 tensor, got {batch.dtype}")
        x = batch.to(torch.float32).div(255)
        mean = torch.as_tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return x.sub_(mean).div_(std)

    def fingerprint(self) -> str:
        """Identifies the uint8 output (the PIL part only: mean/std are applied after a cache)."""
        return hashlib.sha256(repr(self.pil_part).encode()).hexdigest()[:16]


def split_transform(transform: Callable[[Any], Any] | None) -> SplitTransform | None:
    """Split ``Compose([...PIL ops, ToTensor(), Normalize(mean, std)])``; None for any other shape
    (then callers use the whole transform and cannot cache uint8 images)."""
    if not isinstance(transform, transforms.Compose) or len(transform.transforms) < 2:
        return None
    *pil_ops, to_tensor, normalize = transform.transforms
    if not isinstance(to_tensor, transforms.ToTensor) or not isinstance(normalize, transforms.Normalize):
        return None
    if normalize.inplace or any(isinstance(t, (transforms.ToTensor, transforms.Normalize,
                                               transforms.PILToTensor, transforms.ConvertImageDtype))
                                for t in pil_ops):
        return None
    mean = tuple(float(m) for m in normalize.mean)
    std = tuple(float(s) for s in normalize.std)
    return SplitTransform(transforms.Compose(pil_ops), mean, std)
