"""Evaluation data in bounded memory: the split is streamed, never held whole.

``StreamingEvalData`` has the interface of the in-memory ``EvalData`` (``eval_batches``,
``timing_inputs``, ``num_classes``, ``imagenet_indices``, ``len()``/``num_images``) but decodes the
split batch by batch through a torch ``DataLoader`` with ``num_workers`` decoding processes (0:
decode in this process). Peak memory is a few batches, whatever the split's size.

When the model's transform is ``Compose([PIL ops..., ToTensor(), Normalize()])`` (every transform the
harness builds), the workers return uint8 images and the floats are made here, bit-identical to the
whole transform (see harness.data.preprocess). With ``cache_dir`` the uint8 images are also written
to an on-disk ``.npy`` file the first time the split is streamed; a later model with the same
resize/crop (mean/std may differ) reads it instead of decoding. The cache is keyed by the files (path,
label, size, mtime) and the PIL part of the transform, written under a temporary name and renamed
into place, checked (size and header) when opened, and rebuilt when damaged. It is read with plain
file reads (the file is a standard ``.npy``, loadable with ``np.load(path, mmap_mode="r")``): a memory
map would count every page read towards this process's resident memory.

Timing batches are a fixed, seeded sample of real images (a permutation of the split with
``timing_seed``), decoded once and kept as uint8.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.utils.data

from harness.data.preprocess import SplitTransform, split_transform
from harness.data.registry import FileDataset, ImageSplit
from harness.errors import HarnessError
from harness.store.atomic import atomic_write_bytes

CACHE_FORMAT = 1
CACHE_SUBDIR = "evalcache"
DEFAULT_DECODE_BATCH = 64


class _Uint8Dataset(torch.utils.data.Dataset):
    """(uint8 CHW image, label) pairs of split samples; picklable for worker processes."""

    def __init__(self, files: FileDataset, indices: list[int]) -> None:
        self.files = files
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.files[self.indices[i]]


class StreamingEvalData:
    """The evaluation split of one model, streamed in batches (see the module docstring)."""

    def __init__(
        self,
        split: ImageSplit,
        transform: Callable[[Any], torch.Tensor],
        *,
        max_samples: int | None = None,
        num_workers: int = 0,
        cache_dir: Path | None = None,
        timing_seed: int = 0,
        decode_batch: int = DEFAULT_DECODE_BATCH,
        mp_context: str | None = None,
    ) -> None:
        if num_workers < 0:
            raise HarnessError(f"eval workers must be >= 0, got {num_workers}")
        if max_samples is not None and max_samples < 1:
            raise HarnessError(f"max eval samples must be >= 1, got {max_samples}")
        self.split = split
        self.num_images = len(split) if max_samples is None else min(len(split), max_samples)
        if self.num_images == 0:
            raise HarnessError(f"{split.root} has no images to evaluate")
        self.num_classes = len(split.classes)
        self.imagenet_indices = split.imagenet_indices
        self.num_workers = num_workers
        self.timing_seed = timing_seed
        self.decode_batch = decode_batch
        self.mp_context = mp_context
        self._transform = transform
        self._parts: SplitTransform | None = split_transform(transform)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        # What happened, for the results' notes: cache state, seconds spent decoding.
        self.notes: dict[str, Any] = {"eval_workers": num_workers, "uint8_pipeline": self._parts is not None}
        if self.cache_dir is not None and self._parts is None:
            self.notes["eval_cache"] = "off: the transform does not end in ToTensor(), Normalize()"
        self._cache_key: str | None = None
        self._pool: list[torch.Tensor] = []  # timing sample, in permutation order
        self._perm: torch.Tensor | None = None

    @classmethod
    def for_model(cls, loaded: Any, split: ImageSplit, **kwargs: Any) -> StreamingEvalData:
        """Streaming data for a LoadedModel (its transform) over `split`; kwargs as __init__."""
        return cls(split, loaded.transform, **kwargs)

    def __len__(self) -> int:
        return self.num_images

    # -- decoding -----------------------------------------------------------------------------
    def _dataset(self, indices: list[int]) -> torch.utils.data.Dataset:
        per_image = self._parts.to_uint8 if self._parts is not None else self._transform
        return _Uint8Dataset(self.split.dataset(per_image), indices)

    def _loader(self, indices: list[int], batch_size: int) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self._dataset(indices), batch_size=batch_size, shuffle=False, num_workers=self.num_workers,
            multiprocessing_context=self.mp_context if self.num_workers > 0 else None,
        )

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        return self._parts.normalize(images) if self._parts is not None else images

    def decoded_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split as decoded by the workers (uint8 when the transform splits), in split order."""
        yield from self._loader(list(range(self.num_images)), batch_size)

    # -- the EvalData interface --------------------------------------------------------------
    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(float images, labels) batches over the split, in split order; the last may be short."""
        if batch_size < 1:
            raise HarnessError(f"batch size must be >= 1, got {batch_size}")
        cache = self._cache()
        if cache is None:
            for images, labels in self.decoded_batches(batch_size):
                yield self._finish(images), labels
            return
        if not cache.valid():
            yield from self._build_cache_and_yield(cache, batch_size)
            return
        self.notes["eval_cache"] = f"hit: {cache.path}"
        for images, labels in cache.read_batches(batch_size):
            yield self._finish(images), labels

    def timing_inputs(self, batch_size: int, count: int) -> list[torch.Tensor]:
        """Up to ``count`` distinct full batches of real images from a fixed, seeded sample of the
        split (cycled when the split is small), as in the in-memory EvalData."""
        if batch_size < 1 or count < 1:
            raise HarnessError(f"timing needs batch size and count >= 1, got {batch_size} and {count}")
        n = self.num_images
        if self._perm is None:
            self._perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.timing_seed))
        positions: list[torch.Tensor] = []
        for b in range(count):
            positions.append(torch.arange(b * batch_size, (b + 1) * batch_size) % n)
            if (b + 1) * batch_size >= n:
                break
        needed = min(n, int(max(int(p.max()) for p in positions)) + 1)
        if needed > len(self._pool):
            missing = self._perm[len(self._pool):needed].tolist()
            for images, _ in self._loader(missing, self.decode_batch):
                self._pool.extend(images.unbind(0))
        return [self._finish(torch.stack([self._pool[int(i)] for i in p])).contiguous() for p in positions]

    # -- the cache ----------------------------------------------------------------------------
    def _cache(self) -> _Uint8Cache | None:
        if self.cache_dir is None or self._parts is None:
            return None
        if self._cache_key is None:  # stats every file once per instance, not once per pass
            self._cache_key = self.cache_key()
        return _Uint8Cache(self.cache_dir / CACHE_SUBDIR, self._cache_key)

    def cache_key(self) -> str:
        """Files (relative path, label, size, mtime) of the evaluated samples + the uint8 transform."""
        if self._parts is None:
            raise HarnessError("this transform cannot be cached as uint8 images")
        h = hashlib.sha256(f"pq-evalcache-v{CACHE_FORMAT}\n{self._parts.fingerprint()}\n".encode())
        for path, label in self.split.samples[:self.num_images]:
            st = path.stat()
            h.update(f"{path.relative_to(self.split.root).as_posix()}\t{label}\t{st.st_size}\t"
                     f"{st.st_mtime_ns}\n".encode())
        return f"{self.split.name}-{self.split.split}-{self.num_images}-{h.hexdigest()[:24]}"

    def _build_cache_and_yield(self, cache: _Uint8Cache, batch_size: int
                               ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start = time.perf_counter()
        writer = cache.writer(self.num_images)
        try:
            for images, labels in self.decoded_batches(batch_size):
                writer.append(images, labels)
                yield self._finish(images), labels
            writer.commit()
            self.notes["eval_cache"] = f"built: {cache.path}"
            self.notes["eval_cache_build_s"] = round(time.perf_counter() - start, 3)
        finally:
            writer.discard()  # no-op after commit; removes the partial file otherwise


class _Uint8Cache:
    """``<dir>/<key>.npy`` (uint8 N x C x H x W) + ``<key>.json`` (labels, sizes)."""

    def __init__(self, directory: Path, key: str) -> None:
        self.dir = directory
        self.path = directory / f"{key}.npy"
        self.meta_path = directory / f"{key}.json"

    def _meta(self) -> dict[str, Any] | None:
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != CACHE_FORMAT:
                return None
            if self.path.stat().st_size != meta["file_bytes"]:
                return None
            with open(self.path, "rb") as f:
                if np.lib.format.read_magic(f) != (1, 0):
                    return None
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                offset = f.tell()
            if (list(shape) != meta["shape"] or fortran or dtype != np.uint8 or offset != meta["offset"]
                    or len(meta["labels"]) != shape[0]):
                return None
            return meta
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def valid(self) -> bool:
        """True when both files exist and agree; a damaged pair is removed (it will be rebuilt)."""
        if self._meta() is not None:
            return True
        self.path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)
        return False

    def read_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        meta = self._meta()
        if meta is None:
            raise HarnessError(f"evaluation cache {self.path} changed while in use; delete it and run again")
        n, *item_shape = meta["shape"]
        item_bytes = int(np.prod(item_shape))
        labels = torch.tensor(meta["labels"], dtype=torch.int64)
        with open(self.path, "rb") as f:
            f.seek(meta["offset"])
            for start in range(0, n, batch_size):
                count = min(batch_size, n - start)
                buf = np.empty((count, *item_shape), dtype=np.uint8)
                if f.readinto(memoryview(buf).cast("B")) != count * item_bytes:
                    raise HarnessError(f"evaluation cache {self.path} is truncated; delete it and run again")
                yield torch.from_numpy(buf), labels[start:start + count]

    def writer(self, n: int) -> _CacheWriter:
        return _CacheWriter(self, n)


class _CacheWriter:
    def __init__(self, cache: _Uint8Cache, n: int) -> None:
        self.cache = cache
        self.n = n
        self.labels: list[int] = []
        self.shape: tuple[int, ...] | None = None
        self.file: Any = None
        self.tmp: Path | None = None
        self.offset = 0
        self.done = False

    def _open(self, item_shape: tuple[int, ...]) -> None:
        self.cache.dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.cache.path.name}.", suffix=".tmp", dir=self.cache.dir)
        self.tmp = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.shape = (self.n, *item_shape)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": self.shape}
        np.lib.format.write_array_header_1_0(self.file, header)
        self.offset = self.file.tell()

    def append(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8:
            raise TypeError("the evaluation cache holds uint8 images")
        if self.file is None:
            self._open(tuple(images.shape[1:]))
        if tuple(images.shape[1:]) != self.shape[1:]:
            raise HarnessError(f"images of different sizes {tuple(images.shape[1:])} and {self.shape[1:]} "
                               "after the model's transform; it must crop to a fixed size")
        self.file.write(images.contiguous().numpy().tobytes())
        self.labels.extend(int(v) for v in labels)

    def commit(self) -> None:
        if self.file is None or len(self.labels) != self.n:
            raise HarnessError(f"evaluation cache got {len(self.labels)} of {self.n} images")
        self.file.flush()
        os.fsync(self.file.fileno())
        size = self.file.tell()
        self.file.close()
        os.replace(self.tmp, self.cache.path)
        meta = {"format": CACHE_FORMAT, "shape": list(self.shape), "offset": self.offset, "file_bytes": size,
                "labels": self.labels}
        atomic_write_bytes(self.cache.meta_path, json.dumps(meta).encode())
        self.done = True

    def discard(self) -> None:
        if self.done:
            return
        if self.file is not None and not self.file.closed:
            self.file.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
