"""The built-in shapes dataset: determinism, layout, split disjointness, caching."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.data import shapes
from tests.helpers import shapes_mismatches


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


@pytest.fixture(scope="module")
def default_shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    cache = tmp_path_factory.mktemp("cache")
    t0 = time.perf_counter()
    root = shapes.ensure_shapes(cache)
    return root, time.perf_counter() - t0


def test_default_layout_and_manifest(default_shapes: tuple[Path, float]) -> None:
    root, seconds = default_shapes
    assert root.name == "shapes-v1" and root.parent.name == "datasets"
    assert seconds < 20, f"generating 2500 images took {seconds:.1f} s"
    for split, n in (("train", 200), ("val", 50)):
        assert sorted(p.name for p in (root / split).iterdir()) == list(shapes.CLASSES)
        for cls in shapes.CLASSES:
            files = sorted((root / split / cls).iterdir())
            assert [f.name for f in files] == [f"{i:04d}.png" for i in range(n)]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["version"] == 1
    assert manifest["seed"] == shapes.SEED
    assert manifest["per_class"] == {"train": 200, "val": 50}
    assert manifest["num_files"] == 2500
    assert shapes.read_checksums(root) == _file_hashes(root)
    sums = (root / "SHA256SUMS").read_bytes()
    assert manifest["sha256"] == hashlib.sha256(sums).hexdigest()
    with Image.open(root / "val" / "star" / "0000.png") as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    assert shapes_mismatches(root) == []


def test_train_and_val_share_no_image(default_shapes: tuple[Path, float]) -> None:
    root, _ = default_shapes

    def pixel_hashes(split: str) -> list[str]:
        return [
            hashlib.sha256(np.asarray(Image.open(p)).tobytes()).hexdigest()
            for p in sorted((root / split).rglob("*.png"))
        ]

    train, val = pixel_hashes("train"), pixel_hashes("val")
    assert len(set(train)) == len(train) == 2000
    assert len(set(val)) == len(val) == 500
    assert not set(train) & set(val)


def test_not_solvable_by_raw_pixel_means(default_shapes: tuple[Path, float]) -> None:
    """Nearest class mean on raw pixels stays near chance (position/colour give nothing away)."""
    root, _ = default_shapes

    def load(split: str) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for label, cls in enumerate(shapes.CLASSES):
            for p in sorted((root / split / cls).iterdir())[:50]:
                xs.append(np.asarray(Image.open(p), dtype=np.float32).ravel() / 255)
                ys.append(label)
        return np.stack(xs), np.array(ys)

    xtr, ytr = load("train")
    xva, yva = load("val")
    means = np.stack([xtr[ytr == c].mean(0) for c in range(10)])
    pred = ((xva[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yva).mean() < 0.3


def test_generation_is_byte_identical(tmp_path: Path) -> None:
    a = shapes.ensure_shapes(tmp_path / "a", train_per_class=4, val_per_class=2)
    b = shapes.ensure_shapes(tmp_path / "b", train_per_class=4, val_per_class=2)
    assert a.name == b.name == "shapes-v1-4x2"
    ha, hb = _file_hashes(a), _file_hashes(b)
    assert len(ha) == 60 and ha == hb
    ma = json.loads((a / "manifest.json").read_text())
    mb = json.loads((b / "manifest.json").read_text())
    assert ma == mb and shapes.read_checksums(a) == ha


def test_per_image_seed_independent_of_counts(tmp_path: Path) -> None:
    small = shapes.ensure_shapes(tmp_path / "s", train_per_class=2, val_per_class=1)
    big = shapes.ensure_shapes(tmp_path / "b", train_per_class=3, val_per_class=2)
    hs, hb = _file_hashes(small), _file_hashes(big)
    assert all(hb[k] == v for k, v in hs.items())


def test_second_call_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = shapes.ensure_shapes(tmp_path, train_per_class=2, val_per_class=1)
    stamp = (root / "manifest.json").stat().st_mtime_ns

    def boom(*args: object, **kwargs: object) -> dict:
        raise AssertionError("regenerated although the manifest was valid")

    monkeypatch.setattr(shapes, "generate", boom)
    assert shapes.ensure_shapes(tmp_path, train_per_class=2, val_per_class=1) == root
    assert (root / "manifest.json").stat().st_mtime_ns == stamp


def test_broken_copy_is_regenerated(tmp_path: Path) -> None:
    root = shapes.dataset_dir(tmp_path, train_per_class=2, val_per_class=1)
    (root / "train").mkdir(parents=True)  # e.g. a half-copied folder without a manifest
    assert shapes.ensure_shapes(tmp_path, train_per_class=2, val_per_class=1) == root
    assert shapes_mismatches(root) == []
    assert len(_file_hashes(root)) == 30
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no temp dirs left


def test_other_process_wins_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_generate = shapes.generate
    theirs: dict[str, int] = {}

    def racing_generate(root: Path, **kwargs: object) -> dict:
        # While we generate, "another process" finishes and renames its copy into place.
        other = shapes.dataset_dir(tmp_path, train_per_class=2, val_per_class=1)
        other.parent.mkdir(parents=True, exist_ok=True)
        staging = other.parent / "other-staging"
        staging.mkdir()
        manifest = real_generate(staging, **kwargs)  # type: ignore[arg-type]
        (staging / "manifest.json").write_text(json.dumps(manifest))
        os.rename(staging, other)
        theirs["inode"] = (other / "manifest.json").stat().st_ino
        return real_generate(root, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shapes, "generate", racing_generate)
    root = shapes.ensure_shapes(tmp_path, train_per_class=2, val_per_class=1)
    assert (root / "manifest.json").stat().st_ino == theirs["inode"]
    assert shapes_mismatches(root) == []
    assert [p.name for p in root.parent.iterdir()] == [root.name]


def test_tampered_file_is_detected(tmp_path: Path) -> None:
    root = shapes.ensure_shapes(tmp_path, train_per_class=2, val_per_class=1)
    target = root / "val" / "ring" / "0000.png"
    Image.new("RGB", (64, 64)).save(target)
    _png_extra = root / "train" / "star" / "9999.png"
    Image.new("RGB", (64, 64)).save(_png_extra)
    assert shapes_mismatches(root) == ["train/star/9999.png", "val/ring/0000.png"]
    _png_extra.unlink()
    (root / "SHA256SUMS").write_text("")
    assert shapes_mismatches(root) == ["manifest.json"]


def test_missing_files_trigger_regeneration(tmp_path: Path) -> None:
    root = shapes.ensure_shapes(tmp_path, train_per_class=2, val_per_class=1)
    (root / "val" / "ring" / "0000.png").unlink()
    assert shapes.ensure_shapes(tmp_path, train_per_class=2, val_per_class=1) == root
    assert shapes_mismatches(root) == []


def test_render_uses_only_its_generator() -> None:
    a = shapes.render("star", np.random.default_rng([1, 2, 3]))
    b = shapes.render("star", np.random.default_rng([1, 2, 3]))
    c = shapes.render("star", np.random.default_rng([1, 2, 4]))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
