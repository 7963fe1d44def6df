"""ImageNet-1k indices of the 10-class ImageNet subsets (ImageNette, ImageWoof).

Labels are the sorted wnids, 0..9 (what an ImageFolder over the fast.ai layout gives).
Accuracy of a 1000-class model on a subset is taken over these 10 logits, in label order.

The thesis tool had ImageWoof's Border terrier (182) and Australian terrier (193) swapped;
the table below is checked against torchvision's category names in tests/test_data.py.

The full ImageNet-1k class order (``imagenet_wnids()``) is the sorted list of the 1000 synsets,
which is the class index order of every torchvision weight. It is package data
(imagenet_wnids.json), copied from timm's ``timm/data/_info/imagenet_synsets.txt`` (timm 1.0.31,
Apache-2.0, https://github.com/huggingface/pytorch-image-models).

Note: ImageNette names its parachute folder n03888605, which in ImageNet-1k is "parallel bars"
(index 702); the real parachute synset is n03888257 (index 701). The images are parachutes, so the
subset table maps ImageNette's n03888605 to 701, while the ImageNet-1k map keeps n03888605 -> 702.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class SubsetClass:
    """One class of a 10-class ImageNet subset."""

    wnid: str
    name: str  # as in torchvision's IMAGENET1K meta["categories"]
    imagenet_index: int


IMAGENETTE: tuple[SubsetClass, ...] = (
    SubsetClass("n01440764", "tench", 0),
    SubsetClass("n02102040", "English springer", 217),
    SubsetClass("n02979186", "cassette player", 482),
    SubsetClass("n03000684", "chain saw", 491),
    SubsetClass("n03028079", "church", 497),
    SubsetClass("n03394916", "French horn", 566),
    SubsetClass("n03417042", "garbage truck", 569),
    SubsetClass("n03425413", "gas pump", 571),
    SubsetClass("n03445777", "golf ball", 574),
    SubsetClass("n03888605", "parachute", 701),
)

IMAGEWOOF: tuple[SubsetClass, ...] = (
    SubsetClass("n02086240", "Shih-Tzu", 155),
    SubsetClass("n02087394", "Rhodesian ridgeback", 159),
    SubsetClass("n02088364", "beagle", 162),
    SubsetClass("n02089973", "English foxhound", 167),
    SubsetClass("n02093754", "Border terrier", 182),
    SubsetClass("n02096294", "Australian terrier", 193),
    SubsetClass("n02099601", "golden retriever", 207),
    SubsetClass("n02105641", "Old English sheepdog", 229),
    SubsetClass("n02111889", "Samoyed", 258),
    SubsetClass("n02115641", "dingo", 273),
)

SUBSETS: Mapping[str, tuple[SubsetClass, ...]] = MappingProxyType(
    {"imagenette": IMAGENETTE, "imagewoof": IMAGEWOOF}
)


def subset_classes(name: str) -> tuple[SubsetClass, ...]:
    """The classes of `name` ("imagenette" or "imagewoof") in label order."""
    try:
        return SUBSETS[name]
    except KeyError:
        raise KeyError(f"no ImageNet subset named {name!r}; known: {', '.join(SUBSETS)}") from None


def wnids(name: str) -> tuple[str, ...]:
    """Sorted wnids of the subset (index = label)."""
    return tuple(c.wnid for c in subset_classes(name))


def class_names(name: str) -> tuple[str, ...]:
    """Human-readable class names in label order."""
    return tuple(c.name for c in subset_classes(name))


def imagenet_indices(name: str) -> tuple[int, ...]:
    """ImageNet-1k logit index of each label, in label order."""
    return tuple(c.imagenet_index for c in subset_classes(name))


def wnid_to_index(name: str) -> dict[str, int]:
    """A fresh dict wnid -> ImageNet-1k index."""
    return {c.wnid: c.imagenet_index for c in subset_classes(name)}


IMAGENET_NUM_CLASSES = 1000


def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class index order (index = torchvision logit)."""
    text = resources.files("harness.data").joinpath("imagenet_wnids.json").read_text(encoding="utf-8")
    wnids = tuple(json.loads(text)["wnids"])
    if len(wnids) != IMAGENET_NUM_CLASSES or list(wnids) != sorted(set(wnids)):
        raise RuntimeError("harness/data/imagenet_wnids.json is damaged: reinstall the harness")
    return wnids


def imagenet_wnid_to_index() -> dict[str, int]:
    """A fresh dict wnid -> ImageNet-1k class index, for all 1000 classes."""
    return {w: i for i, w in enumerate(imagenet_wnids())}
