"""The calibration image set: a seeded, fixed sample of the TRAIN split.

The thesis tool calibrated INT8 on Gaussian noise.  Here calibration uses real
images, preprocessed exactly as for evaluation (the caller passes the
evaluation transform), drawn only from the training split and checked never to
contain an evaluation file.  The chosen files are sorted by their path relative
to the dataset root, so the list (and its hash, which keys every calibration
cache) does not depend on the order the split was listed in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError

_LOG = logging.getLogger(__name__)

#: Directory names that mark an evaluation split; a calibration file may not lie under one.
EVAL_DIR_NAMES: frozenset[str] = frozenset({"val", "valid", "validation", "test", "eval"})

DEFAULT_CALIB_COUNT = 512

Sample = tuple[Path, int]
Transform = Callable[[Any], torch.Tensor]


def dataset_root_of(samples: Sequence[Sample]) -> Path:
    """The dataset root of an ImageFolder-style split: ``<root>/<split>/<class>/<file>`` -> ``<root>``."""
    if not samples:
        raise HarnessError("the training split has no images to calibrate with")
    split_dirs = {str(Path(path).parent.parent) for path, _ in samples}
    return Path(os.path.commonpath(sorted(split_dirs))).parent


def _relative(path: Path, root: Path) -> Path:
    try:
        return Path(path).relative_to(root)
    except ValueError:
        try:
            return Path(path).resolve().relative_to(Path(root).resolve())
        except ValueError:
            raise HarnessError(f"calibration file {path} is not under the dataset root {root}") from None


def file_list_hash(files: Iterable[Path | Sample], root: Path) -> str:
    """sha256 over the files' paths relative to ``root`` (posix form, in the given order)."""
    digest = hashlib.sha256()
    for item in files:
        path = item[0] if isinstance(item, tuple) else item
        digest.update(_relative(Path(path), root).as_posix().encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _eval_dir_in(rel: Path) -> str | None:
    for part in rel.parts[:-1]:
        if part.lower() in EVAL_DIR_NAMES:
            return part
    return None


def select_calibration_files(
    train_samples: Sequence[Sample],
    *,
    count: int = DEFAULT_CALIB_COUNT,
    seed: int = 0,
    exclude: Iterable[Path] = (),
    root: Path | None = None,
) -> list[Sample]:
    """A seeded sample of ``count`` training images, sorted by path relative to ``root``.

    ``exclude`` holds the evaluation split's files.  A training list that contains
    an excluded file, or a file under an evaluation directory (``val``, ``test``, ...)
    of the dataset root, raises :class:`HarnessError`: calibrating on evaluation
    images would leak them into the quantised model.  ``root`` defaults to the
    dataset root inferred from the ``<root>/<split>/<class>/<file>`` layout.
    ``count`` larger than the split takes every image (logged).
    """
    if count < 1:
        raise HarnessError(f"calibration count must be >= 1, got {count}")
    samples = [(Path(p), int(label)) for p, label in train_samples]
    if not samples:
        raise HarnessError("the training split has no images to calibrate with")
    root = Path(root) if root is not None else dataset_root_of(samples)
    excluded = {Path(p).resolve() for p in exclude}

    keyed: dict[str, Sample] = {}
    leaks: list[str] = []
    for path, label in samples:
        rel = _relative(path, root)
        eval_dir = _eval_dir_in(rel)
        if eval_dir is not None or path.resolve() in excluded:
            leaks.append(rel.as_posix())
        keyed[rel.as_posix()] = (path, label)
    if leaks:
        shown = ", ".join(leaks[:3]) + (f" and {len(leaks) - 3} more" if len(leaks) > 3 else "")
        raise HarnessError(
            f"the calibration candidates contain {len(leaks)} evaluation image(s) ({shown}); "
            "calibration must use the training split only"
        )

    names = sorted(keyed)
    if count >= len(names):
        if count > len(names):
            _LOG.info("calibration count %d exceeds the %d training images; using all of them", count, len(names))
        chosen = names
    else:
        chosen = sorted(random.Random(seed).sample(names, count))
    result = [keyed[name] for name in chosen]
    # Never-contains-eval, checked again on the final list.
    overlap = [p for p, _ in result if p.resolve() in excluded]
    if overlap:  # pragma: no cover - guarded above
        raise HarnessError(f"calibration set contains evaluation files: {overlap[:3]}")
    return result


def load_image(path: Path) -> Any:
    """Open an image file as PIL RGB (what evaluation transforms expect)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:
        raise HarnessError(f"cannot read calibration image {path}: {exc}") from exc


@dataclass(frozen=True)
class CalibrationSet:
    """A fixed list of training images used for INT8 calibration."""

    files: tuple[Sample, ...]
    root: Path
    seed: int
    count: int  # images actually used
    file_list_hash: str
    requested_count: int = 0
    notes: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def select(
        cls,
        train_samples: Sequence[Sample],
        *,
        count: int = DEFAULT_CALIB_COUNT,
        seed: int = 0,
        exclude: Iterable[Path] = (),
        root: Path | None = None,
    ) -> CalibrationSet:
        """Select the calibration files (see :func:`select_calibration_files`)."""
        samples = [(Path(p), int(label)) for p, label in train_samples]
        root = Path(root) if root is not None else dataset_root_of(samples)
        files = select_calibration_files(samples, count=count, seed=seed, exclude=exclude, root=root)
        notes: tuple[str, ...] = ()
        if count > len(files):
            notes = (f"asked for {count} calibration images; the training split has {len(files)}, all used",)
        return cls(tuple(files), root, seed, len(files), file_list_hash(files, root), count, notes)

    @classmethod
    def from_splits(cls, train: Any, evaluation: Any | None = None, *, count: int = DEFAULT_CALIB_COUNT,
                    seed: int = 0) -> CalibrationSet:
        """From split objects with ``.samples`` (e.g. ``harness.data`` ImageSplit), excluding ``evaluation``."""
        exclude = [p for p, _ in evaluation.samples] if evaluation is not None else []
        return cls.select(train.samples, count=count, seed=seed, exclude=exclude)

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.files]

    def relative_paths(self) -> list[str]:
        return [_relative(p, self.root).as_posix() for p, _ in self.files]

    def num_batches(self, batch_size: int, *, full_batches_only: bool = False) -> int:
        if batch_size < 1:
            raise HarnessError(f"calibration batch size must be >= 1, got {batch_size}")
        return self.count // batch_size if full_batches_only else -(-self.count // batch_size)

    def batches(
        self,
        transform: Transform,
        batch_size: int,
        *,
        full_batches_only: bool = False,
        workers: int = 4,
    ) -> Iterator[torch.Tensor]:
        """Preprocessed images, float32 NCHW on the host, in file-list order.

        ``transform`` must be the evaluation transform (PIL RGB image -> CHW float
        tensor).  The last partial batch is yielded unless ``full_batches_only``
        (TensorRT's calibrator needs one fixed batch size); when fewer than
        ``batch_size`` images exist at all, that raises.
        """
        n = self.num_batches(batch_size, full_batches_only=full_batches_only)
        if n == 0:
            raise HarnessError(
                f"{self.count} calibration images make no full batch of {batch_size}; "
                "use more calibration images or a smaller calibration batch size"
            )
        paths = self.paths
        workers = max(1, min(workers, os.cpu_count() or 1))

        def prepare(path: Path) -> torch.Tensor:
            tensor = transform(load_image(path))
            if isinstance(tensor, np.ndarray):
                tensor = torch.from_numpy(tensor)
            if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3:
                raise HarnessError(
                    f"the evaluation transform must turn an image into a CHW tensor; got {type(tensor).__name__}"
                    + (f" of shape {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) else "")
                )
            return tensor.to(torch.float32)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for index in range(n):
                chunk = paths[index * batch_size:(index + 1) * batch_size]
                tensors = list(pool.map(prepare, chunk)) if workers > 1 else [prepare(p) for p in chunk]
                shapes = {tuple(t.shape) for t in tensors}
                if len(shapes) != 1:
                    raise HarnessError(
                        f"the evaluation transform gives images of different shapes {sorted(shapes)}; "
                        "it must resize/crop to one size"
                    )
                yield torch.stack(tensors).contiguous()


__all__ = ["DEFAULT_CALIB_COUNT", "EVAL_DIR_NAMES", "CalibrationSet", "dataset_root_of", "file_list_hash",
           "load_image", "select_calibration_files"]
