"""Datasets: ImageNet maps, registry/open_split, folder class maps, fetch."""

from __future__ import annotations

import functools
import http.server
import io
import json
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.models import ResNet18_Weights

from harness.data import fetch, fetch_dataset, imagenet_maps, list_datasets, open_split, registry, shapes
from harness.errors import HarnessError

CATEGORIES = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]


def _png(path: Path, colour: tuple[int, int, int] = (200, 10, 10), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 6), colour if mode == "RGB" else colour[0]).save(path)


def _fake_subset(root: Path, name: str, variant: str, per_class: int = 2) -> Path:
    for split in ("train", "val"):
        for wnid in imagenet_maps.wnids(name):
            for i in range(per_class):
                _png(root / variant / split / wnid / f"{wnid}_{i}.JPEG")
    return root / variant


# --- ImageNet maps -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["imagenette", "imagewoof"])
def test_maps_agree_with_torchvision_names(name: str) -> None:
    classes = imagenet_maps.subset_classes(name)
    assert len(classes) == 10
    assert list(imagenet_maps.wnids(name)) == sorted(imagenet_maps.wnids(name))
    assert len(set(imagenet_maps.imagenet_indices(name))) == 10
    for c in classes:
        assert CATEGORIES[c.imagenet_index] == c.name, c
    expected = tuple(CATEGORIES[i] for i in imagenet_maps.imagenet_indices(name))
    assert imagenet_maps.class_names(name) == expected


def test_imagenette_reference_indices() -> None:
    assert imagenet_maps.imagenet_indices("imagenette") == (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)


def test_imagewoof_terriers_not_swapped() -> None:
    """Regression: the thesis tool mapped Border terrier and Australian terrier the wrong way round."""
    m = imagenet_maps.wnid_to_index("imagewoof")
    assert m["n02093754"] == 182 and CATEGORIES[182] == "Border terrier"
    assert m["n02096294"] == 193 and CATEGORIES[193] == "Australian terrier"
    assert imagenet_maps.imagenet_indices("imagewoof") == (155, 159, 162, 167, 182, 193, 207, 229, 258, 273)
    labels = imagenet_maps.wnids("imagewoof")
    assert labels.index("n02093754") == 4 and labels.index("n02096294") == 5


def test_wnid_to_index_is_a_fresh_copy() -> None:
    m = imagenet_maps.wnid_to_index("imagenette")
    m["n01440764"] = 999
    assert imagenet_maps.wnid_to_index("imagenette")["n01440764"] == 0


def test_list_datasets() -> None:
    infos = {d.name: d for d in list_datasets()}
    assert list(infos) == ["imagenette", "imagewoof", "imagenet", "folder", "shapes"]
    assert infos["imagewoof"].imagenet_indices == imagenet_maps.imagenet_indices("imagewoof")
    assert infos["imagenette"].needs_download and not infos["shapes"].needs_download
    assert infos["folder"].num_classes is None and infos["shapes"].num_classes == 10


# --- open_split: order, hash, dataset -----------------------------------------------


def _folder_tree(root: Path) -> None:
    # Created out of order, with nested folders, mixed-case extensions and non-images.
    for cls in ("zebra", "Apple", "mango"):
        for name in ("b.png", "a.PNG", "10.jpg", "2.jpg", "sub/c.png", "notes.txt"):
            if name.endswith(".txt"):
                (root / cls).mkdir(parents=True, exist_ok=True)
                (root / cls / name).write_text("not an image")
            else:
                _png(root / cls / name)


def test_folder_order_matches_torchvision_imagefolder(tmp_path: Path) -> None:
    _folder_tree(tmp_path / "data" / "val")
    split = open_split("folder", "val", data_root=tmp_path / "data", cache_dir=tmp_path / "c")
    tv = ImageFolder(str(tmp_path / "data" / "val"))
    assert split.classes == tv.classes == ["Apple", "mango", "zebra"]
    assert [(str(p), y) for p, y in split.samples] == tv.samples
    assert len(split) == 15
    assert [p.relative_to(split.root).as_posix() for p, _ in split.samples[:5]] == [
        "Apple/10.jpg", "Apple/2.jpg", "Apple/a.PNG", "Apple/b.png", "Apple/sub/c.png"
    ]
    assert split.imagenet_indices is None


def test_file_list_hash_is_location_independent(tmp_path: Path) -> None:
    _folder_tree(tmp_path / "one" / "val")
    _folder_tree(tmp_path / "two" / "val")
    a = open_split("folder", "val", data_root=tmp_path / "one", cache_dir=tmp_path)
    b = open_split("folder", "val", data_root=tmp_path / "two", cache_dir=tmp_path)
    assert a.file_list_hash() == b.file_list_hash()
    assert len(a.file_list_hash()) == 64
    _png(tmp_path / "two" / "val" / "mango" / "extra.png")
    c = open_split("folder", "val", data_root=tmp_path / "two", cache_dir=tmp_path)
    assert c.file_list_hash() != a.file_list_hash()


def test_dataset_loads_rgb_and_applies_transform(tmp_path: Path) -> None:
    _png(tmp_path / "val" / "a" / "x.png", (7, 7, 7), mode="L")  # greyscale file
    _png(tmp_path / "val" / "b" / "y.png", (0, 255, 0))
    split = open_split("folder", "val", data_root=tmp_path, cache_dir=tmp_path)
    ds = split.dataset(lambda im: torch.tensor(list(im.getpixel((0, 0))) + [im.size[0]]))
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 2
    assert ds[0][0].tolist() == [7, 7, 7, 8] and ds[0][1] == 0
    assert ds[1][0].tolist() == [0, 255, 0, 8] and ds[1][1] == 1
    x, y = split.dataset(None)[1]
    assert x.shape == (3, 6, 8) and y == 1 and float(x[1, 0, 0]) == 1.0
    batch = next(iter(torch.utils.data.DataLoader(split.dataset(None), batch_size=2)))
    assert batch[0].shape == (2, 3, 6, 8) and batch[1].tolist() == [0, 1]


def test_broken_image_gives_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "val" / "a" / "broken.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a png")
    ds = open_split("folder", "val", data_root=tmp_path, cache_dir=tmp_path).dataset(None)
    with pytest.raises(HarnessError, match="cannot read image .*broken.png"):
        ds[0]


# --- ImageNette / ImageWoof -------------------------------------------------------------


def test_imagenette_prefers_160_then_honours_size(tmp_path: Path) -> None:
    _fake_subset(tmp_path, "imagenette", "imagenette2-320")
    _fake_subset(tmp_path, "imagenette", "imagenette2-160")
    split = open_split("imagenette", "val", data_root=tmp_path, cache_dir=tmp_path)
    assert split.root == tmp_path / "imagenette2-160" / "val"
    assert split.classes == list(imagenet_maps.wnids("imagenette"))
    assert split.imagenet_indices == imagenet_maps.imagenet_indices("imagenette")
    assert len(split) == 20 and split.samples[2] == (split.root / "n02102040" / "n02102040_0.JPEG", 1)
    split320 = open_split("imagenette", "train", data_root=tmp_path, cache_dir=tmp_path, size="320")
    assert split320.root == tmp_path / "imagenette2-320" / "train"
    # data_root may also point straight at the extracted archive
    direct = open_split("imagenette", "val", data_root=tmp_path / "imagenette2-320", cache_dir=tmp_path)
    assert direct.root == tmp_path / "imagenette2-320" / "val"


def test_imagewoof_labels_follow_sorted_wnids(tmp_path: Path) -> None:
    _fake_subset(tmp_path, "imagewoof", "imagewoof2", per_class=1)
    split = open_split("imagewoof", "val", data_root=tmp_path, cache_dir=tmp_path)
    label_of = {p.parent.name: y for p, y in split.samples}
    idx = dict(zip(split.classes, split.imagenet_indices or ()))
    assert idx["n02093754"] == 182 and idx["n02096294"] == 193
    assert label_of["n02093754"] == 4 and label_of["n02096294"] == 5


def test_missing_imagenette_names_paths_and_fetch_hint(tmp_path: Path) -> None:
    with pytest.raises(HarnessError) as e:
        open_split("imagenette", "val", data_root=tmp_path, cache_dir=tmp_path)
    msg = str(e.value)
    assert f"harness data fetch imagenette --size 160 --data-root {tmp_path}" in msg
    assert str(tmp_path / "imagenette2-160" / "val") in msg
    assert str(tmp_path / "imagenette2" / "val") in msg
    assert "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz" in msg
    with pytest.raises(HarnessError, match="fetch imagewoof --size 320"):
        open_split("imagewoof", "val", data_root=tmp_path, cache_dir=tmp_path, size="320")


def test_wrong_wnid_folders_are_rejected(tmp_path: Path) -> None:
    base = _fake_subset(tmp_path, "imagenette", "imagenette2-160", per_class=1)
    (base / "val" / "n03888605" / "n03888605_0.JPEG").unlink()
    (base / "val" / "n03888605").rmdir()
    _png(base / "val" / "n99999999" / "x.JPEG")
    with pytest.raises(HarnessError, match=r"missing class folders \['n03888605'\].*n99999999"):
        open_split("imagenette", "val", data_root=tmp_path, cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"name": "cifar"}, "unknown dataset 'cifar'; known datasets: imagenette, imagewoof, imagenet, folder, shapes"),
        ({"split": "test"}, "unknown split 'test'"),
        ({"size": "999"}, "unknown size '999'"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, pattern: str) -> None:
    args = {"name": "imagenette", "split": "val", **kwargs}
    with pytest.raises(HarnessError, match=pattern):
        open_split(args.pop("name"), args.pop("split"), data_root=tmp_path, cache_dir=tmp_path, **args)


# --- folder + class map -----------------------------------------------------------------


def _two_class_folder(root: Path) -> Path:
    _png(root / "val" / "cat" / "1.png")
    _png(root / "val" / "dog" / "1.png")
    return root


def _open_with_map(root: Path, content: object) -> registry.ImageSplit:
    m = root / "map.json"
    m.write_text(content if isinstance(content, str) else json.dumps(content))
    return open_split("folder", "val", data_root=root, cache_dir=root, class_map=m)


def test_class_map_gives_indices_in_class_order(tmp_path: Path) -> None:
    split = _open_with_map(_two_class_folder(tmp_path), {"dog": 207, "cat": 281, "unused": 5})
    assert split.classes == ["cat", "dog"] and split.imagenet_indices == (281, 207)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ({"cat": 281}, "no entry for class folder\\(s\\) dog"),
        ({"cat": 281, "dog": 1000}, "invalid ImageNet indices dog=1000; use integers in 0..999"),
        ({"cat": -1, "dog": 3}, "invalid ImageNet indices cat=-1"),
        ({"cat": "281", "dog": 3}, "invalid ImageNet indices cat='281'"),
        ({"cat": True, "dog": 3}, "invalid ImageNet indices cat=True"),
        ({"cat": 2.5, "dog": 3}, "invalid ImageNet indices cat=2.5"),
        ({"cat": 3, "dog": 3}, "same ImageNet index \\[3\\]"),
        ([281, 207], "must be a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_class_map_validation(tmp_path: Path, content: object, pattern: str) -> None:
    with pytest.raises(HarnessError, match=pattern):
        _open_with_map(_two_class_folder(tmp_path), content)


def test_settings_for_other_datasets_are_ignored(tmp_path: Path) -> None:
    """A sweep passes one size and class map to every dataset; those that don't use them ignore them."""
    _two_class_folder(tmp_path)
    split = open_split("folder", "val", data_root=tmp_path, cache_dir=tmp_path, size="320")
    assert split.classes == ["cat", "dog"]
    _fake_subset(tmp_path, "imagenette", "imagenette2-160", per_class=1)
    split = open_split("imagenette", "val", data_root=tmp_path, cache_dir=tmp_path, class_map=tmp_path / "none.json")
    assert split.imagenet_indices == imagenet_maps.imagenet_indices("imagenette")


def test_class_map_file_missing(tmp_path: Path) -> None:
    _two_class_folder(tmp_path)
    with pytest.raises(HarnessError, match="cannot read class map"):
        open_split("folder", "val", data_root=tmp_path, cache_dir=tmp_path, class_map=tmp_path / "nope.json")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"no 'train' folder in .*expects .*/train/<class>/<image files>"):
        open_split("folder", "train", data_root=tmp_path, cache_dir=tmp_path)
    (tmp_path / "val" / "empty").mkdir(parents=True)
    _png(tmp_path / "val" / "full" / "1.png")
    with pytest.raises(HarnessError, match="no image files in class folder\\(s\\) empty"):
        open_split("folder", "val", data_root=tmp_path, cache_dir=tmp_path)


def test_shapes_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = functools.partial(shapes.ensure_shapes, train_per_class=3, val_per_class=2)
    monkeypatch.setattr(registry.shapes, "ensure_shapes", small)
    split = open_split("shapes", "val", data_root=tmp_path / "unused", cache_dir=tmp_path)
    assert split.root == tmp_path / "datasets" / "shapes-v1-3x2" / "val"
    assert tuple(split.classes) == shapes.CLASSES and len(split) == 20
    assert split.imagenet_indices is None
    x, y = split.dataset(None)[19]
    assert x.shape == (3, 64, 64) and y == 9


# --- fetch --------------------------------------------------------------------------------


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _tiny_archive(path: Path, variant: str = "imagenette2-160", drop: str | None = None) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, format="JPEG")
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "val"):
            for wnid in imagenet_maps.wnids("imagenette"):
                if wnid != drop:
                    _add_bytes(tar, f"{variant}/{split}/{wnid}/{wnid}_1.JPEG", buf.getvalue())
    return path


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _assert_fetched(result: Path, data_root: Path) -> None:
    assert result == data_root / "imagenette2-160"
    assert sorted(p.name for p in data_root.iterdir()) == ["imagenette2-160"]  # no archive/.part/temp
    split = open_split("imagenette", "val", data_root=data_root, cache_dir=data_root)
    assert len(split) == 10 and split.imagenet_indices == imagenet_maps.imagenet_indices("imagenette")


def test_fetch_from_file_url(tmp_path: Path) -> None:
    archive = _tiny_archive(tmp_path / "imagenette2-160.tgz")
    calls: list[tuple[int, int | None]] = []
    out = fetch_dataset(
        "imagenette", "160", tmp_path / "data", url=archive.as_uri(),
        progress=lambda d, t: calls.append((d, t)),
    )
    _assert_fetched(out, tmp_path / "data")
    size = archive.stat().st_size
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_fetch_over_local_http(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    served, base = http_dir
    _tiny_archive(served / "imagenette2-160.tgz")
    calls: list[tuple[int, int | None]] = []
    out = fetch_dataset(
        "imagenette", "160", tmp_path / "data", url=f"{base}/imagenette2-160.tgz",
        progress=lambda d, t: calls.append((d, t)), md5=fetch.md5sum(served / "imagenette2-160.tgz"),
    )
    _assert_fetched(out, tmp_path / "data")
    assert calls[-1][0] == calls[-1][1] == (served / "imagenette2-160.tgz").stat().st_size
    # Already there: no network at all.
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("downloaded again")

    assert fetch_dataset("imagenette", "160", tmp_path / "data", opener=no_network) == out


def test_fetch_http_404(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    _, base = http_dir
    with pytest.raises(HarnessError, match="HTTP 404"):
        fetch_dataset("imagenette", "160", tmp_path / "data", url=f"{base}/missing.tgz")
    assert not any((tmp_path / "data").iterdir())


def test_fetch_offline_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a localhost port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/imagewoof2-320.tgz"
    data_root = tmp_path / "data"
    with pytest.raises(HarnessError) as e:
        fetch_dataset("imagewoof", "320", data_root, url=url, timeout=5)
    msg = str(e.value)
    assert "looks offline" in msg and f"Download {url} on another machine" in msg
    assert str(data_root / "imagewoof2-320" / "val") in msg
    assert not any(data_root.iterdir())  # no .part left behind


def test_fetch_uses_archive_already_in_data_root(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    data_root.mkdir()
    _tiny_archive(data_root / "imagenette2-160.tgz")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network used although the archive was there")

    _assert_fetched(fetch_dataset("imagenette", None, data_root, opener=no_network), data_root)


def test_fetch_rejects_path_traversal(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        _add_bytes(tar, "imagenette2-160/train/readme.txt", b"ok")
        _add_bytes(tar, "../../escaped.txt", b"pwned")
    data_root = tmp_path / "a" / "data"
    with pytest.raises(HarnessError, match="outside"):
        fetch_dataset("imagenette", "160", data_root, url=archive.as_uri())
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not any(data_root.iterdir())


def test_fetch_rejects_links_and_absolute_paths(tmp_path: Path) -> None:
    link_archive = tmp_path / "link.tgz"
    with tarfile.open(link_archive, "w:gz") as tar:
        info = tarfile.TarInfo("imagenette2-160/train/link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(HarnessError, match="link or special file"):
        fetch_dataset("imagenette", "160", tmp_path / "d1", url=link_archive.as_uri())
    abs_archive = tmp_path / "abs.tgz"
    with tarfile.open(abs_archive, "w:gz") as tar:
        _add_bytes(tar, str(tmp_path / "abs-escape.txt"), b"x")
    with pytest.raises(HarnessError, match="outside"):
        fetch_dataset("imagenette", "160", tmp_path / "d2", url=abs_archive.as_uri())
    assert not (tmp_path / "abs-escape.txt").exists()


def test_fetch_rejects_bad_archives(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"this is not gzip" * 10)
    with pytest.raises(HarnessError, match="not a valid .tgz"):
        fetch_dataset("imagenette", "160", tmp_path / "d1", url=junk.as_uri())
    truncated = tmp_path / "trunc.tgz"
    truncated.write_bytes(_tiny_archive(tmp_path / "full.tgz").read_bytes()[:300])
    with pytest.raises(HarnessError, match="not a valid .tgz"):
        fetch_dataset("imagenette", "160", tmp_path / "d2", url=truncated.as_uri())
    partial = _tiny_archive(tmp_path / "partial.tgz", drop="n03888605")
    pattern = r"not a valid imagenette archive.*missing class folders \['n03888605'\]"
    with pytest.raises(HarnessError, match=pattern):
        fetch_dataset("imagenette", "160", tmp_path / "d3", url=partial.as_uri())
    wrong_md5 = _tiny_archive(tmp_path / "ok.tgz")
    with pytest.raises(HarnessError, match="md5"):
        fetch_dataset("imagenette", "160", tmp_path / "d4", url=wrong_md5.as_uri(), md5="0" * 32)
    for d in ("d1", "d2", "d3", "d4"):
        assert not any((tmp_path / d).iterdir()), d


def test_fetch_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="cannot fetch 'shapes'"):
        fetch_dataset("shapes", None, tmp_path)
    with pytest.raises(HarnessError, match="unknown size '64'"):
        fetch_dataset("imagenette", "64", tmp_path)
    (tmp_path / "imagenette2-160" / "train").mkdir(parents=True)
    with pytest.raises(HarnessError, match="already exists but is incomplete"):
        fetch_dataset("imagenette", "160", tmp_path)


def test_archive_urls() -> None:
    base = "https://s3.amazonaws.com/fast-ai-imageclas/"
    assert registry.archive_url("imagenette", "full") == base + "imagenette2.tgz"
    assert registry.archive_url("imagenette", "160") == base + "imagenette2-160.tgz"
    assert registry.archive_url("imagewoof", "320") == base + "imagewoof2-320.tgz"
