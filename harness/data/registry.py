"""Dataset registry: what datasets exist and how to open one split of them.

Every dataset is an ImageFolder tree (``<split>/<class>/<image>``); an ImageSplit holds
its file list in torchvision ImageFolder order (sorted class dirs, sorted files), so the
labels and the file-list hash are the same on every machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch.utils.data
from PIL import Image
from torchvision.transforms.functional import to_tensor

from harness.data import imagenet_maps, shapes
from harness.errors import HarnessError

SPLITS = ("train", "val")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# size -> directory name, in the order open_split prefers when no size is given.
VARIANTS: dict[str, dict[str, str]] = {
    "imagenette": {"160": "imagenette2-160", "320": "imagenette2-320", "full": "imagenette2"},
    "imagewoof": {"160": "imagewoof2-160", "320": "imagewoof2-320", "full": "imagewoof2"},
}
SIZES = ("160", "320", "full")
ARCHIVE_BASE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/"


def archive_url(name: str, size: str) -> str:
    """The fast.ai download URL of `name` at `size` ("160", "320" or "full")."""
    return f"{ARCHIVE_BASE_URL}{VARIANTS[name][size]}.tgz"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    num_classes: int | None
    imagenet_indices: tuple[int, ...] | None
    needs_download: bool


def list_datasets() -> list[DatasetInfo]:
    """All datasets open_split knows, in a fixed order."""
    return [
        DatasetInfo(
            "imagenette",
            "10 easy ImageNet classes (fast.ai ImageNette v2); accuracy over the 10 matching logits",
            10,
            imagenet_maps.imagenet_indices("imagenette"),
            True,
        ),
        DatasetInfo(
            "imagewoof",
            "10 dog breeds from ImageNet (fast.ai ImageWoof v2); accuracy over the 10 matching logits",
            10,
            imagenet_maps.imagenet_indices("imagewoof"),
            True,
        ),
        DatasetInfo(
            "imagenet",
            "ImageNet-1k (your own copy) <data-root>/imagenet/val/<wnid>/*.JPEG; 1000-way top-1/top-5 "
            "(no download: see `harness data fetch imagenet` for how to prepare it)",
            imagenet_maps.IMAGENET_NUM_CLASSES,
            tuple(range(imagenet_maps.IMAGENET_NUM_CLASSES)),
            False,
        ),
        DatasetInfo(
            "folder",
            "your own ImageFolder tree <data-root>/{train,val}/<class>/<image>; "
            "optional --class-map JSON {class: imagenet_index}",
            None,
            None,
            False,
        ),
        DatasetInfo(
            "shapes",
            "built-in procedurally generated 10-class 64x64 shapes (offline; "
            "not ImageNet classes: train or fine-tune a model on it)",
            len(shapes.CLASSES),
            None,
            False,
        ),
    ]


def _known_names() -> str:
    return ", ".join(d.name for d in list_datasets())


class FileDataset(torch.utils.data.Dataset):
    """A map-style torch Dataset over (path, label) pairs (picklable for DataLoader workers)."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable[[Any], Any] | None):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except OSError as e:  # includes PIL.UnidentifiedImageError
            raise HarnessError(
                f"cannot read image {path}: {e}; replace or delete the broken file"
            ) from e
        if self.transform is None:
            return to_tensor(img), label
        return self.transform(img), label


@dataclass
class ImageSplit:
    name: str
    split: str
    root: Path  # the split directory: <root>/<class>/<image>
    classes: list[str]
    samples: list[tuple[Path, int]]
    imagenet_indices: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def dataset(self, transform: Callable[[Any], Any] | None = None) -> FileDataset:
        """A torch Dataset of (transform(PIL RGB image), label); no transform: a [0,1] tensor."""
        return FileDataset(list(self.samples), transform)

    def file_list_hash(self) -> str:
        """sha256 over '<path relative to root>\\t<label>' lines, '/' separators."""
        h = hashlib.sha256()
        for path, label in self.samples:
            h.update(f"{path.relative_to(self.root).as_posix()}\t{label}\n".encode())
        return h.hexdigest()


def scan_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes and samples of an ImageFolder tree, in torchvision ImageFolder order."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise HarnessError(
            f"no class folders in {root}; expected {root}/<class>/<image files>"
        )
    samples: list[tuple[Path, int]] = []
    empty = []
    for label, cls in enumerate(classes):
        n = len(samples)
        for dirpath, _, fnames in sorted(os.walk(root / cls, followlinks=True)):
            for fname in sorted(fnames):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    samples.append((Path(dirpath) / fname, label))
        if len(samples) == n:
            empty.append(cls)
    if empty:
        raise HarnessError(
            f"no image files in class folder(s) {', '.join(empty)} under {root}; "
            f"add images ({', '.join(IMG_EXTENSIONS)}) or remove the empty folders"
        )
    return classes, samples


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise HarnessError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")


def _open_subset(name: str, split: str, data_root: Path, size: str | None) -> ImageSplit:
    variants = VARIANTS[name]
    if size is not None and size not in variants:
        raise HarnessError(f"unknown size {size!r} for {name}; use one of: {', '.join(SIZES)}")
    wanted = [size] if size is not None else list(SIZES)
    if data_root.name in [variants[s] for s in wanted] and (data_root / split).is_dir():
        base = data_root  # data_root already points at the extracted archive
    else:
        candidates = [data_root / variants[s] for s in wanted]
        found = [c for c in candidates if (c / split).is_dir()]
        if not found:
            looked = ", ".join(str(c / split) for c in candidates)
            hint = size or "160"
            raise HarnessError(
                f"dataset {name!r} ({split}) not found: looked for {looked}; "
                f"download it with `harness data fetch {name} --size {hint} --data-root {data_root}`"
                f" (or download {archive_url(name, hint)} and extract it under {data_root} "
                f"so that {data_root / variants[hint] / split} exists)"
            )
        base = found[0]
    root = base / split
    classes, samples = scan_image_folder(root)
    expected = list(imagenet_maps.wnids(name))
    if classes != expected:
        missing = sorted(set(expected) - set(classes))
        extra = sorted(set(classes) - set(expected))
        raise HarnessError(
            f"{root} is not a complete {name} split: missing class folders {missing or 'none'}, "
            f"unexpected folders {extra or 'none'}; re-extract the {name} archive or run "
            f"`harness data fetch {name} --data-root {data_root}`"
        )
    return ImageSplit(name, split, root, classes, samples, imagenet_maps.imagenet_indices(name))


IMAGENET_DIR = "imagenet"


def imagenet_prepare_hint(split: str, split_dir: Path) -> str:
    """How to lay out the user's own ImageNet-1k copy (it cannot be downloaded: licence)."""
    if split == "val":
        how = ("download ILSVRC2012_img_val.tar from image-net.org (licence: your own account), extract "
               f"it into {split_dir} and sort the 50,000 images into <wnid>/ folders with the standard "
               "valprep.sh script (soumith/imagenetloader.torch)")
    else:
        how = ("download ILSVRC2012_img_train.tar from image-net.org (licence: your own account) and extract "
               f"each class tar into {split_dir}/<wnid>/")
    return f"{how}, so that {split_dir}/n01440764/*.JPEG exists"


def _open_imagenet(split: str, data_root: Path) -> ImageSplit:
    if data_root.name == IMAGENET_DIR and (data_root / split).is_dir():
        root = data_root / split  # data_root already points at the imagenet folder
    else:
        root = data_root / IMAGENET_DIR / split
    if not root.is_dir():
        raise HarnessError(
            f"ImageNet-1k {split} split not found at {root}; it is not downloaded automatically: "
            + imagenet_prepare_hint(split, root)
        )
    classes, samples = scan_image_folder(root)
    index = imagenet_maps.imagenet_wnid_to_index()
    unknown = [c for c in classes if c not in index]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise HarnessError(
            f"{root} has folders that are not ImageNet-1k wnids: {shown}; the layout must be "
            f"{root}/<wnid>/*.JPEG (" + imagenet_prepare_hint(split, root) + ")"
        )
    # Labels are 0..k-1 over the folders present; imagenet_indices maps each to its true
    # ImageNet-1k index, so a miniature with a few wnids is still scored on the right logits.
    return ImageSplit("imagenet", split, root, classes, samples, tuple(index[c] for c in classes))


def load_class_map(path: Path, classes: list[str]) -> tuple[int, ...]:
    """ImageNet indices, in class order, from a JSON {class_dir: imagenet_index} file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise HarnessError(f"cannot read class map {path}: {e}; pass an existing JSON file") from e
    except ValueError as e:
        raise HarnessError(
            f"class map {path} is not valid JSON ({e}); write an object like "
            '{"cat": 281, "dog": 207}'
        ) from e
    if not isinstance(data, dict):
        raise HarnessError(
            f"class map {path} must be a JSON object mapping class folder name -> ImageNet index, "
            f"got {type(data).__name__}; write an object like " + '{"cat": 281, "dog": 207}'
        )
    missing = [c for c in classes if c not in data]
    if missing:
        raise HarnessError(
            f"class map {path} has no entry for class folder(s) {', '.join(missing)}; "
            "add an ImageNet index (0..999) for every class folder"
        )
    bad = [
        f"{c}={data[c]!r}"
        for c in classes
        if not isinstance(data[c], int) or isinstance(data[c], bool) or not 0 <= data[c] <= 999
    ]
    if bad:
        raise HarnessError(
            f"class map {path} has invalid ImageNet indices {', '.join(bad)}; "
            "use integers in 0..999"
        )
    indices = tuple(int(data[c]) for c in classes)
    if len(set(indices)) != len(indices):
        dup = sorted({i for i in indices if indices.count(i) > 1})
        raise HarnessError(
            f"class map {path} maps several classes to the same ImageNet index {dup}; "
            "give every class folder its own index"
        )
    return indices


def _open_folder(split: str, data_root: Path, class_map: Path | None) -> ImageSplit:
    root = data_root / split
    if not root.is_dir():
        raise HarnessError(
            f"no {split!r} folder in {data_root}; the folder dataset expects "
            f"{data_root}/{split}/<class>/<image files> (point --data-root at the folder above {split}/)"
        )
    classes, samples = scan_image_folder(root)
    indices = load_class_map(class_map, classes) if class_map is not None else None
    return ImageSplit("folder", split, root, classes, samples, indices)


def open_split(
    name: str,
    split: str,
    *,
    data_root: Path,
    cache_dir: Path,
    size: str | None = None,
    class_map: Path | None = None,
) -> ImageSplit:
    """Open one split ("train" or "val") of dataset `name`; see list_datasets().

    imagenet is the user's own copy under ``<data_root>/imagenet/{val,train}/<wnid>/`` (no download).
    `size` is used by imagenette/imagewoof only and `class_map` by folder only; the other
    datasets ignore them (a sweep passes the same settings to every dataset it runs).
    """
    _check_split(split)
    data_root, cache_dir = Path(data_root).expanduser(), Path(cache_dir).expanduser()
    if name not in {d.name for d in list_datasets()}:
        raise HarnessError(f"unknown dataset {name!r}; known datasets: {_known_names()}")
    if name in VARIANTS:
        return _open_subset(name, split, data_root, size)
    if name == "imagenet":
        return _open_imagenet(split, data_root)
    if name == "folder":
        return _open_folder(split, data_root, class_map)
    root = shapes.ensure_shapes(cache_dir) / split
    classes, samples = scan_image_folder(root)
    if tuple(classes) != shapes.CLASSES:
        raise HarnessError(
            f"{root} does not hold the expected shapes classes; delete {root.parent} "
            "and run again to regenerate it"
        )
    return ImageSplit("shapes", split, root, classes, samples, None)
