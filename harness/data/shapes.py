"""Shapes: a small, deterministic, procedurally generated 10-class image dataset.

Made by our own code (numpy + PIL) so that every pipeline runs offline. Each image is a
64x64 RGB PNG with one shape of random position, size, rotation and colours on a noisy
gradient background with a few distractor strokes. Every image is drawn from its own
seeded numpy Generator keyed on (seed, split, class, index), so train and val never
share a seed and the bytes are identical from run to run.

Layout (torchvision ImageFolder): ``<root>/{train,val}/<class>/NNNN.png`` plus
``<root>/SHA256SUMS`` (one line per image, ``sha256sum -c`` format) and
``<root>/manifest.json`` (version, seed, counts, sha256 of SHA256SUMS).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from harness.errors import HarnessError

VERSION = 1
SEED = 20240601
IMAGE_SIZE = 64
SUPERSAMPLE = 4  # masks are drawn at 4x and box-filtered down (anti-aliasing)
DEFAULT_TRAIN_PER_CLASS = 200
DEFAULT_VAL_PER_CLASS = 50
MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"

# Sorted, so the ImageFolder label of a class is its index here.
CLASSES: tuple[str, ...] = (
    "checkerboard",
    "circle",
    "cross",
    "diamond",
    "horizontal_stripes",
    "ring",
    "square",
    "star",
    "triangle",
    "vertical_stripes",
)
SPLITS: tuple[str, ...] = ("train", "val")

_S = IMAGE_SIZE * SUPERSAMPLE
_Mask = np.ndarray  # float32 (S, S) in [0, 1]


@dataclass(frozen=True)
class _Pose:
    cx: float  # centre, supersampled pixels
    cy: float
    r: float  # "radius", supersampled pixels
    angle: float  # radians


def _local_coords(p: _Pose) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in the shape's rotated frame, in units of p.r."""
    y, x = np.mgrid[0:_S, 0:_S].astype(np.float32) + 0.5
    dx, dy = x - p.cx, y - p.cy
    c, s = np.cos(p.angle), np.sin(p.angle)
    return (c * dx + s * dy) / p.r, (-s * dx + c * dy) / p.r


def _polygon(p: _Pose, pts: np.ndarray) -> _Mask:
    """Fill polygon `pts` (unit coordinates, shape (n, 2)) rotated/scaled/moved by p."""
    c, s = np.cos(p.angle), np.sin(p.angle)
    xs = p.cx + p.r * (c * pts[:, 0] - s * pts[:, 1])
    ys = p.cy + p.r * (s * pts[:, 0] + c * pts[:, 1])
    img = Image.new("L", (_S, _S), 0)
    ImageDraw.Draw(img).polygon([(float(a), float(b)) for a, b in zip(xs, ys)], fill=255)
    return np.asarray(img, dtype=np.float32) / 255.0


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _circle(p: _Pose, rng: np.random.Generator) -> _Mask:
    u, v = _local_coords(p)
    return (u * u + v * v <= 1.0).astype(np.float32)


def _ring(p: _Pose, rng: np.random.Generator) -> _Mask:
    u, v = _local_coords(p)
    d = np.sqrt(u * u + v * v)
    inner = 1.0 - rng.uniform(0.28, 0.45)
    return ((d <= 1.0) & (d >= inner)).astype(np.float32)


def _square(p: _Pose, rng: np.random.Generator) -> _Mask:
    return _polygon(p, 0.8 * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float))


def _diamond(p: _Pose, rng: np.random.Generator) -> _Mask:
    w = rng.uniform(0.5, 0.65)  # a tall rhombus, so it never looks like a square
    return _polygon(p, np.array([[0, -1], [w, 0], [0, 1], [-w, 0]], dtype=float))


def _triangle(p: _Pose, rng: np.random.Generator) -> _Mask:
    return _polygon(p, _regular(3))


def _star(p: _Pose, rng: np.random.Generator) -> _Mask:
    outer, inner = _regular(5), _regular(5, rng.uniform(0.38, 0.5), -np.pi / 2 + np.pi / 5)
    return _polygon(p, np.stack([outer, inner], axis=1).reshape(-1, 2))


def _cross(p: _Pose, rng: np.random.Generator) -> _Mask:
    u, v = _local_coords(p)
    w = rng.uniform(0.22, 0.34)
    au, av = np.abs(u), np.abs(v)
    return (((au <= w) & (av <= 1.0)) | ((av <= w) & (au <= 1.0))).astype(np.float32)


def _stripes(p: _Pose, rng: np.random.Generator) -> _Mask:
    u, v = _local_coords(p)
    period = rng.uniform(5.0, 8.0) * SUPERSAMPLE / p.r  # 5..8 output pixels per period
    patch = (np.abs(u) <= 1.0) & (np.abs(v) <= rng.uniform(0.75, 1.0))
    return (patch & (np.floor(v / (period / 2)) % 2 == 0)).astype(np.float32)


def _horizontal_stripes(p: _Pose, rng: np.random.Generator) -> _Mask:
    return _stripes(p, rng)


def _vertical_stripes(p: _Pose, rng: np.random.Generator) -> _Mask:
    return _stripes(_Pose(p.cx, p.cy, p.r, p.angle + np.pi / 2), rng)


def _checkerboard(p: _Pose, rng: np.random.Generator) -> _Mask:
    u, v = _local_coords(p)
    cells = int(rng.integers(3, 6))  # cells per side
    patch = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    iu = np.floor((u + 1.0) * cells / 2.0)
    iv = np.floor((v + 1.0) * cells / 2.0)
    return (patch & ((iu + iv) % 2 == 0)).astype(np.float32)


_DRAW: dict[str, Callable[[_Pose, np.random.Generator], _Mask]] = {
    "checkerboard": _checkerboard,
    "circle": _circle,
    "cross": _cross,
    "diamond": _diamond,
    "horizontal_stripes": _horizontal_stripes,
    "ring": _ring,
    "square": _square,
    "star": _star,
    "triangle": _triangle,
    "vertical_stripes": _vertical_stripes,
}
# Classes whose orientation is part of their identity get a small rotation only.
_MAX_TILT = {
    "square": 0.35,
    "diamond": 0.35,
    "cross": 0.35,
    "horizontal_stripes": 0.3,
    "vertical_stripes": 0.3,
    "checkerboard": 0.35,
}


def _downsample(mask: _Mask) -> _Mask:
    return mask.reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE).mean(axis=(1, 3))


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground RGB, with a random but sufficient contrast."""
    bg = rng.uniform(0, 255, 3)
    for _ in range(20):
        fg = rng.uniform(0, 255, 3)
        if np.linalg.norm(fg - bg) >= 90:
            break
    else:
        fg = 255.0 - bg
    return bg, fg


def render(class_name: str, rng: np.random.Generator) -> np.ndarray:
    """One (64, 64, 3) uint8 image of `class_name`, all randomness drawn from `rng`."""
    bg, fg = _colours(rng)
    # Background: a linear gradient around bg.
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / IMAGE_SIZE - 0.5
    g = rng.uniform(-60, 60, 3)
    ga = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(ga) * x + np.sin(ga) * y)[..., None]
    img = bg[None, None, :] + ramp * g[None, None, :]

    # Distractors: a few thin strokes in random colours (before the shape, so it stays on top).
    strokes = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(strokes)
    for _ in range(int(rng.integers(0, 3))):
        x0, y0, x1, y1 = (float(t) for t in rng.uniform(0, IMAGE_SIZE, 4))
        draw.line([(x0, y0), (x1, y1)], fill=255, width=1)
    smask = np.asarray(strokes, dtype=np.float32)[..., None] / 255.0
    img = img * (1 - smask) + rng.uniform(0, 255, 3)[None, None, :] * smask

    # The shape.
    r = rng.uniform(13.0, 24.0)
    margin = 0.6 * r
    cx, cy = rng.uniform(margin, IMAGE_SIZE - margin, 2)
    tilt = _MAX_TILT.get(class_name, np.pi)
    angle = rng.uniform(-tilt, tilt)
    pose = _Pose(cx * SUPERSAMPLE, cy * SUPERSAMPLE, r * SUPERSAMPLE, angle)
    alpha = _downsample(_DRAW[class_name](pose, rng))[..., None]
    img = img * (1 - alpha) + fg[None, None, :] * alpha

    # Pixel noise of a random strength.
    sigma = rng.uniform(2.0, 16.0)
    img = img + rng.normal(0.0, sigma, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _image_rng(seed: int, split: str, label: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), label, index])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checksums_text(files: dict[str, str]) -> str:
    return "".join(f"{digest}  {rel}\n" for rel, digest in sorted(files.items()))


def generate(root: Path, *, train_per_class: int, val_per_class: int, seed: int = SEED) -> dict:
    """Write all images and SHA256SUMS under `root` (which must exist); return the manifest."""
    counts = {"train": train_per_class, "val": val_per_class}
    files: dict[str, str] = {}
    for split in SPLITS:
        for label, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(counts[split]):
                arr = render(cls, _image_rng(seed, split, label, i))
                path = d / f"{i:04d}.png"
                Image.fromarray(arr, "RGB").save(path, format="PNG", compress_level=6)
                files[path.relative_to(root).as_posix()] = _sha256(path)
    sums = _checksums_text(files)
    (root / CHECKSUMS).write_text(sums, encoding="utf-8")
    return {
        "name": "shapes",
        "version": VERSION,
        "seed": seed,
        "image_size": IMAGE_SIZE,
        "classes": list(CLASSES),
        "per_class": counts,
        "num_files": len(files),
        "sha256": hashlib.sha256(sums.encode()).hexdigest(),  # of SHA256SUMS
    }


def dataset_dir(cache_dir: Path, *, train_per_class: int, val_per_class: int) -> Path:
    """Where ensure_shapes puts a dataset with these counts."""
    name = f"shapes-v{VERSION}"
    if (train_per_class, val_per_class) != (DEFAULT_TRAIN_PER_CLASS, DEFAULT_VAL_PER_CLASS):
        name += f"-{train_per_class}x{val_per_class}"
    return Path(cache_dir) / "datasets" / name


def read_manifest(root: Path) -> dict | None:
    """The manifest of a generated dataset, or None when absent/unreadable."""
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _manifest_ok(root: Path, train_per_class: int, val_per_class: int) -> bool:
    m = read_manifest(root)
    return (
        m is not None
        and m.get("version") == VERSION
        and m.get("seed") == SEED
        and m.get("per_class") == {"train": train_per_class, "val": val_per_class}
        and m.get("num_files") == len(CLASSES) * (train_per_class + val_per_class)
        and sum(1 for _ in root.glob("*/*/*.png")) == m["num_files"]
    )


def read_checksums(root: Path) -> dict[str, str]:
    """Relative path -> sha256 from SHA256SUMS (empty when absent)."""
    try:
        lines = (root / CHECKSUMS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    pairs = [line.split("  ", 1) for line in lines if line]
    return {rel: digest for digest, rel in pairs} if all(len(x) == 2 for x in pairs) else {}


def ensure_shapes(
    cache_dir: Path,
    *,
    train_per_class: int = DEFAULT_TRAIN_PER_CLASS,
    val_per_class: int = DEFAULT_VAL_PER_CLASS,
) -> Path:
    """Generate the dataset once under ``<cache_dir>/datasets/shapes-v1`` and return its root.

    Later calls check the manifest and reuse the files. Generation happens in a temporary
    directory beside the target that is renamed into place, so readers never see a partial
    dataset; if another process finishes first, its copy is kept.
    """
    if train_per_class < 1 or val_per_class < 1:
        raise HarnessError(
            f"shapes needs at least one image per class (got train={train_per_class}, "
            f"val={val_per_class}); pass positive counts"
        )
    target = dataset_dir(cache_dir, train_per_class=train_per_class, val_per_class=val_per_class)
    if _manifest_ok(target, train_per_class, val_per_class):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as e:
        raise HarnessError(
            f"cannot create the shapes dataset under {target.parent}: {e}; "
            "pass a writable --cache-dir"
        ) from e
    try:
        manifest = generate(tmp, train_per_class=train_per_class, val_per_class=val_per_class)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        if target.exists() and not _manifest_ok(target, train_per_class, val_per_class):
            # A stale or broken copy (e.g. an older layout): move it aside, then drop it.
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _manifest_ok(target, train_per_class, val_per_class):
                raise
            # Another process won the race; keep theirs.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
