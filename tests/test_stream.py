"""harness.data.stream / preprocess: streaming evaluation equals the in-memory path, bit for bit;
the uint8 cache is reused, verified and rebuilt; timing batches are a fixed seeded sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import transforms

from harness.accuracy import LabelMapping, evaluate
from harness.data.preprocess import split_transform
from harness.data.registry import open_split
from harness.data.stream import CACHE_SUBDIR, StreamingEvalData
from harness.errors import HarnessError
from harness.models import load_model


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _in_memory(split, transform, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    samples = split.samples[:n] if n is not None else split.samples
    images = torch.stack([transform(_rgb(p)) for p, _ in samples])
    return images, torch.tensor([label for _, label in samples])


@pytest.fixture(scope="module")
def tiny(shared_cache: Path):
    loaded = load_model("tinycnn", weights="pretrained", cache_dir=shared_cache, data_root=shared_cache / "data")
    split = open_split("shapes", "val", data_root=shared_cache / "data", cache_dir=shared_cache)
    return loaded, split, _in_memory(split, loaded.transform)


def _folder(root: Path, count: int = 12, size: tuple[int, int] = (40, 30)) -> Path:
    for i in range(count):
        d = root / "val" / f"c{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (20 * i % 256, 255 - 7 * i, 3 * i)).save(d / f"{i:03d}.png")
    return root


def _transform(crop: int = 16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)) -> transforms.Compose:
    return transforms.Compose([transforms.Resize(crop, antialias=True), transforms.CenterCrop(crop),
                               transforms.ToTensor(), transforms.Normalize(mean, std)])


# --------------------------------------------------------------------------- the transform split


def test_split_transform_is_bit_identical_to_the_whole_transform(tmp_path: Path) -> None:
    whole = load_model("resnet18", weights="random", cache_dir=tmp_path, data_root=tmp_path)
    parts = split_transform(whole.transform)
    assert parts is not None
    assert parts.mean == pytest.approx((0.485, 0.456, 0.406)) and parts.std == pytest.approx((0.229, 0.224, 0.225))
    gen = torch.Generator().manual_seed(0)
    for size in [(300, 257), (224, 224), (97, 413)]:
        img = transforms.functional.to_pil_image(torch.randint(0, 256, (3, size[1], size[0]), generator=gen,
                                                               dtype=torch.uint8))
        u8 = parts.to_uint8(img)
        assert u8.dtype == torch.uint8 and u8.shape == (3, 224, 224)
        assert torch.equal(parts.normalize(u8.unsqueeze(0))[0], whole.transform(img))


def test_split_transform_refuses_other_shapes() -> None:
    assert split_transform(lambda img: img) is None
    assert split_transform(transforms.Compose([transforms.CenterCrop(8), transforms.ToTensor()])) is None
    assert split_transform(transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,)),
                                               transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])) is None
    # the fingerprint names the uint8 output only: mean/std do not change it, the crop does
    a, b, c = (split_transform(_transform(16)), split_transform(_transform(16, mean=(0, 0, 0))),
               split_transform(_transform(20)))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


# --------------------------------------------------------------------------- identical to the in-memory path


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("cached", [False, True])
def test_streaming_equals_in_memory_on_shapes_with_tinycnn(tiny, tmp_path: Path, workers: int,
                                                           cached: bool) -> None:
    loaded, split, (images, labels) = tiny
    data = StreamingEvalData.for_model(loaded, split, num_workers=workers,
                                       cache_dir=tmp_path if cached else None)
    assert len(data) == data.num_images == len(split) == len(images)
    assert data.num_classes == 10 and data.imagenet_indices is None
    for _ in range(2 if cached else 1):  # cached: the build pass, then the read pass
        got = list(data.eval_batches(37))
        assert [len(x) for x, _ in got] == [37] * (len(images) // 37) + [len(images) % 37]
        assert torch.equal(torch.cat([x for x, _ in got]), images)
        assert torch.equal(torch.cat([y for _, y in got]), labels)
    if cached:
        assert data.notes["eval_cache"].startswith("hit:")

    mapping = LabelMapping.for_model(loaded.label_space, loaded.num_outputs, data.num_classes, data.imagenet_indices)
    with torch.inference_mode():
        streamed = evaluate(loaded.module, data.eval_batches(64), mapping, batch_size=64)
        reference = evaluate(loaded.module, [(images[i:i + 64], labels[i:i + 64]) for i in range(0, len(images), 64)],
                             mapping, batch_size=64)
    assert streamed == reference
    assert streamed.samples == len(split) and streamed.top1 > 0.5  # a trained model, real labels


def test_max_samples_limits_the_split(tiny) -> None:
    loaded, split, (images, _) = tiny
    data = StreamingEvalData.for_model(loaded, split, max_samples=50)
    assert len(data) == 50
    assert torch.equal(torch.cat([x for x, _ in data.eval_batches(16)]), images[:50])


def test_a_transform_that_does_not_split_still_streams(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    split = open_split("folder", "val", data_root=root, cache_dir=tmp_path / "c")
    whole = transforms.Compose([transforms.CenterCrop(16), transforms.ToTensor()])
    data = StreamingEvalData(split, whole, cache_dir=tmp_path / "c")
    assert "off" in data.notes["eval_cache"]
    assert torch.equal(torch.cat([x for x, _ in data.eval_batches(5)]), _in_memory(split, whole)[0])
    assert not (tmp_path / "c" / CACHE_SUBDIR).exists()


# --------------------------------------------------------------------------- the uint8 cache


def test_second_model_with_the_same_crop_reads_the_cache_without_decoding(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    split = open_split("folder", "val", data_root=root, cache_dir=tmp_path / "c")
    first = StreamingEvalData(split, _transform(), cache_dir=tmp_path / "c")
    expected_first = torch.cat([x for x, _ in first.eval_batches(5)])
    assert first.notes["eval_cache"].startswith("built:")
    files = list((tmp_path / "c" / CACHE_SUBDIR).iterdir())
    assert sorted(p.suffix for p in files) == [".json", ".npy"]  # no temporary file left

    other_transform = _transform(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    expected_other = _in_memory(split, other_transform)[0]
    # Damage every image but keep its size and mtime: decoding one now fails.
    for path, _ in split.samples:
        st = path.stat()
        path.write_bytes(b"\0" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(HarnessError, match="cannot read image"):
        list(StreamingEvalData(split, other_transform).eval_batches(4))
    # another model (other mean/std), same resize/crop: served from the cache, no decoding
    other = StreamingEvalData(split, other_transform, cache_dir=tmp_path / "c")
    got = torch.cat([x for x, _ in other.eval_batches(4)])
    assert other.notes["eval_cache"].startswith("hit:")
    assert torch.equal(got, expected_other)
    assert not torch.equal(got, expected_first)  # the normalisation is applied on load


def test_cache_is_keyed_by_file_contents_and_by_crop(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    split = open_split("folder", "val", data_root=root, cache_dir=tmp_path / "c")
    key = StreamingEvalData(split, _transform(), cache_dir=tmp_path / "c").cache_key()
    assert StreamingEvalData(split, _transform(mean=(0, 0, 0)), cache_dir=tmp_path).cache_key() == key
    assert StreamingEvalData(split, _transform(20), cache_dir=tmp_path).cache_key() != key
    assert StreamingEvalData(split, _transform(), max_samples=5, cache_dir=tmp_path).cache_key() != key
    path = split.samples[3][0]
    Image.new("RGB", (41, 30), (1, 2, 3)).save(path)  # other content: other size
    assert StreamingEvalData(split, _transform(), cache_dir=tmp_path).cache_key() != key


@pytest.mark.parametrize("damage", ["truncate", "meta", "no-meta", "header"])
def test_a_damaged_cache_is_rebuilt(tmp_path: Path, damage: str) -> None:
    root = _folder(tmp_path)
    split = open_split("folder", "val", data_root=root, cache_dir=tmp_path / "c")
    expected = _in_memory(split, _transform())[0]
    data = StreamingEvalData(split, _transform(), cache_dir=tmp_path / "c")
    list(data.eval_batches(5))
    npy = next((tmp_path / "c" / CACHE_SUBDIR).glob("*.npy"))
    meta = npy.with_suffix(".json")
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:-100])
    elif damage == "meta":
        meta.write_text("{not json")
    elif damage == "no-meta":
        meta.unlink()
    else:
        raw = bytearray(npy.read_bytes())
        raw[raw.index(b"(12,"):raw.index(b"(12,") + 4] = b"(11,"
        npy.write_bytes(bytes(raw))
    again = StreamingEvalData(split, _transform(), cache_dir=tmp_path / "c")
    assert torch.equal(torch.cat([x for x, _ in again.eval_batches(5)]), expected)
    assert again.notes["eval_cache"].startswith("built:")
    assert torch.equal(torch.cat([x for x, _ in again.eval_batches(5)]), expected)
    assert again.notes["eval_cache"].startswith("hit:")


def test_an_abandoned_first_pass_leaves_no_cache(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    split = open_split("folder", "val", data_root=root, cache_dir=tmp_path / "c")
    data = StreamingEvalData(split, _transform(), cache_dir=tmp_path / "c")
    batches = data.eval_batches(5)
    next(batches)
    batches.close()
    assert list((tmp_path / "c" / CACHE_SUBDIR).iterdir()) == []
    list(data.eval_batches(5))
    assert data.notes["eval_cache"].startswith("built:")


# --------------------------------------------------------------------------- timing batches


def test_timing_inputs_are_a_fixed_seeded_sample_of_real_images(tmp_path: Path) -> None:
    root = _folder(tmp_path, count=30)
    split = open_split("folder", "val", data_root=root, cache_dir=tmp_path / "c")
    images = _in_memory(split, _transform())[0]
    data = StreamingEvalData(split, _transform(), timing_seed=3)
    batches = data.timing_inputs(4, 3)
    assert [tuple(b.shape) for b in batches] == [(4, 3, 16, 16)] * 3
    rows = torch.cat(batches)
    # every row is one real image of the split, and the 12 rows are 12 distinct images
    matches = [[i for i in range(len(images)) if torch.equal(r, images[i])] for r in rows]
    assert all(len(m) >= 1 for m in matches)
    assert len({m[0] for m in matches}) == 12
    # not simply the first images: a seeded sample, the same for the same seed, another for another
    assert [m[0] for m in matches] != list(range(12))
    assert all(torch.equal(a, b) for a, b in zip(batches, StreamingEvalData(split, _transform(), timing_seed=3)
                                                 .timing_inputs(4, 3)))
    assert not torch.equal(rows, torch.cat(StreamingEvalData(split, _transform(), timing_seed=4).timing_inputs(4, 3)))
    # a larger batch size later reuses the same sample prefix
    assert torch.equal(data.timing_inputs(8, 1)[0], rows[:8])


def test_timing_inputs_cycle_a_small_split_like_the_in_memory_data(tmp_path: Path) -> None:
    root = _folder(tmp_path, count=6)
    split = open_split("folder", "val", data_root=root, cache_dir=tmp_path / "c")
    data = StreamingEvalData(split, _transform())
    batches = data.timing_inputs(4, 5)
    assert len(batches) == 2 and all(b.shape[0] == 4 for b in batches)  # 8 rows cycle over 6 images
    rows = torch.cat(batches)
    assert torch.equal(rows[6:8], rows[0:2])
    with pytest.raises(HarnessError):
        data.timing_inputs(0, 1)


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    split = open_split("folder", "val", data_root=_folder(tmp_path), cache_dir=tmp_path / "c")
    with pytest.raises(HarnessError, match="workers"):
        StreamingEvalData(split, _transform(), num_workers=-1)
    with pytest.raises(HarnessError, match="samples"):
        StreamingEvalData(split, _transform(), max_samples=0)
