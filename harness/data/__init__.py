"""Datasets: ImageNette/ImageWoof (fast.ai layout), your own ImageFolder tree, built-in shapes."""

from __future__ import annotations

from harness.data.fetch import fetch_dataset
from harness.data.registry import DatasetInfo, ImageSplit, list_datasets, open_split
from harness.data.shapes import ensure_shapes

__all__ = [
    "DatasetInfo",
    "ImageSplit",
    "ensure_shapes",
    "fetch_dataset",
    "list_datasets",
    "open_split",
]
