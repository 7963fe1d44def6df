"""ImageNet-1k val as a dataset: true wnid -> index mapping on a miniature, the preparation message,
top-1/top-5 over 1000 logits, and the published-accuracy comparison (flag above 0.3 points)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights

from harness.accuracy import AccuracyCounter, LabelMapping
from harness.data import imagenet_maps
from harness.data.fetch import fetch_dataset
from harness.data.registry import list_datasets, open_split
from harness.data.stream import StreamingEvalData
from harness.errors import HarnessError
from harness.models import published_accuracy_check

CATEGORIES = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
# wnid -> (true ImageNet-1k index, torchvision category name)
MINI = {
    "n01440764": (0, "tench"),
    "n02102040": (217, "English springer"),
    "n03888257": (701, "parachute"),
    "n03888605": (702, "parallel bars"),  # ImageNette's "parachute" folder name; in ImageNet-1k: parallel bars
    "n15075141": (999, "toilet tissue"),
}


def _mini(data_root: Path, wnids=tuple(MINI), per_class: int = 3, split: str = "val") -> Path:
    for k, wnid in enumerate(wnids):
        d = data_root / "imagenet" / split / wnid
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (20, 16), (40 * k, 10 * i, 90)).save(d / f"ILSVRC2012_val_{k:04d}{i:04d}.JPEG")
    return data_root


def test_embedded_wnid_list_is_the_torchvision_class_order() -> None:
    wnids = imagenet_maps.imagenet_wnids()
    assert len(wnids) == 1000 == len(CATEGORIES)
    assert list(wnids) == sorted(wnids)
    index = imagenet_maps.imagenet_wnid_to_index()
    for wnid, (i, name) in MINI.items():
        assert index[wnid] == i and CATEGORIES[i] == name
    # the ImageNette/ImageWoof tables agree with the full list, except ImageNette's parachute folder
    for subset in ("imagenette", "imagewoof"):
        for c in imagenet_maps.subset_classes(subset):
            if c.wnid == "n03888605":
                assert c.imagenet_index == 701 and index[c.wnid] == 702
            else:
                assert index[c.wnid] == c.imagenet_index, c


def test_miniature_maps_each_wnid_to_its_true_imagenet_index(tmp_path: Path) -> None:
    split = open_split("imagenet", "val", data_root=_mini(tmp_path), cache_dir=tmp_path / "cache")
    assert split.classes == sorted(MINI)
    assert split.imagenet_indices == tuple(MINI[w][0] for w in split.classes)  # not 0..4
    for path, label in split.samples:
        assert split.imagenet_indices[label] == MINI[path.parent.name][0]
    # also when data_root points at the imagenet folder itself
    again = open_split("imagenet", "val", data_root=tmp_path / "imagenet", cache_dir=tmp_path / "cache")
    assert again.imagenet_indices == split.imagenet_indices and len(again) == len(split) == 15


def test_miniature_is_scored_on_the_true_logits_top1_and_top5(tmp_path: Path) -> None:
    split = open_split("imagenet", "val", data_root=_mini(tmp_path), cache_dir=tmp_path / "cache")
    data = StreamingEvalData(split, lambda img: torch.zeros(1))
    mapping = LabelMapping.for_model("imagenet", 1000, data.num_classes, data.imagenet_indices)
    assert mapping.kind == "imagenet-subset"
    truth = torch.tensor(MINI_INDEX := [MINI[p.parent.name][0] for p, _ in split.samples])
    labels = torch.cat([y for _, y in data.eval_batches(4)])

    right = AccuracyCounter(mapping)
    right.update(torch.nn.functional.one_hot(truth, 1000).float(), labels)
    r = right.result()
    assert (r.top1, r.top1_1000, r.top5_1000) == (1.0, 1.0, 1.0)

    # a model answering the folder's position 0..k-1 (a label-map error) is wrong 1000-way
    wrong = AccuracyCounter(mapping)
    wrong.update(torch.nn.functional.one_hot(labels, 1000).float(), labels)
    assert wrong.result().top1_1000 == pytest.approx(3 / 15)  # only tench (index 0 = position 0)

    # top-5: the true class ranked 3rd counts for top-5, not top-1
    logits = torch.zeros(len(truth), 1000)
    for row, t in enumerate(MINI_INDEX):
        logits[row, (t + 1) % 1000] = 3.0
        logits[row, (t + 2) % 1000] = 2.0
        logits[row, t] = 1.0
    third = AccuracyCounter(mapping)
    third.update(logits, labels)
    res = third.result()
    assert res.top1_1000 == 0.0 and res.top5_1000 == 1.0


def test_missing_imagenet_says_how_to_prepare_it(tmp_path: Path) -> None:
    with pytest.raises(HarnessError) as err:
        open_split("imagenet", "val", data_root=tmp_path, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "imagenet" / "val") in msg and "valprep" in msg and "licence" in msg
    with pytest.raises(HarnessError, match="train"):
        open_split("imagenet", "train", data_root=_mini(tmp_path), cache_dir=tmp_path / "cache")
    with pytest.raises(HarnessError, match="cannot be downloaded.*valprep"):
        fetch_dataset("imagenet", None, tmp_path)


def test_folders_that_are_not_wnids_are_refused(tmp_path: Path) -> None:
    root = _mini(tmp_path, wnids=("n01440764", "cats"))
    with pytest.raises(HarnessError, match="not ImageNet-1k wnids: cats"):
        open_split("imagenet", "val", data_root=root, cache_dir=tmp_path / "cache")


def test_train_split_for_calibration(tmp_path: Path) -> None:
    root = _mini(tmp_path, wnids=("n02102040", "n03888257"), split="train")
    split = open_split("imagenet", "train", data_root=root, cache_dir=tmp_path / "cache")
    assert split.imagenet_indices == (217, 701)


def test_imagenet_is_listed() -> None:
    info = {d.name: d for d in list_datasets()}["imagenet"]
    assert info.num_classes == 1000 and info.imagenet_indices == tuple(range(1000))
    assert not info.needs_download


# --------------------------------------------------------------------------- published accuracy


PUB1, PUB5 = 69.758, 89.078  # ResNet18_Weights.IMAGENET1K_V1, as torchvision publishes them


@pytest.mark.parametrize("weights", ["pretrained", "ResNet18_Weights.IMAGENET1K_V1", ResNet18_Weights.IMAGENET1K_V1])
def test_published_accuracy_is_recorded_beside_the_measured(weights) -> None:
    out = published_accuracy_check("resnet18", weights, 0.6970, 0.8910, samples=50_000)
    assert out["applicable"] and not out["flag"]
    assert (out["published_top1"], out["published_top5"]) == (PUB1, PUB5)
    assert out["measured_top1"] == pytest.approx(69.70) and out["diff_top1"] == pytest.approx(-0.058)
    assert out["weights"] == "ResNet18_Weights.IMAGENET1K_V1"


@pytest.mark.parametrize("which", ["top1", "top5"])
@pytest.mark.parametrize("sign", [1, -1])
def test_flag_above_0_3_points_not_at_0_29(which: str, sign: int) -> None:
    def check(delta: float) -> dict:
        t1 = (PUB1 + (sign * delta if which == "top1" else 0)) / 100
        t5 = (PUB5 + (sign * delta if which == "top5" else 0)) / 100
        return published_accuracy_check("resnet18", "pretrained", t1, t5)

    flagged = check(0.31)
    assert flagged["flag"] and flagged[f"diff_{which}"] == pytest.approx(sign * 0.31)
    assert which in flagged["message"]
    assert not check(0.29)["flag"]
    assert not check(0.30)["flag"]  # "above 0.3": exactly 0.3 is not flagged


def test_published_check_applies_only_where_it_means_something() -> None:
    assert not published_accuracy_check("resnet18", "random", 0.1, 0.2)["applicable"]
    assert not published_accuracy_check("tinycnn", "pretrained", 0.9, 1.0)["applicable"]
    partial = published_accuracy_check("resnet18", "pretrained", 0.5, 0.6, samples=1000)
    assert not partial["applicable"] and "50,000" in partial["reason"]
    no_top5 = published_accuracy_check("resnet18", "pretrained", PUB1 / 100, None)
    assert no_top5["applicable"] and not no_top5["flag"] and no_top5["diff_top5"] is None
    with pytest.raises(HarnessError, match="fraction"):
        published_accuracy_check("resnet18", "pretrained", 69.7, 89.0)
    with pytest.raises(HarnessError, match="unknown torchvision weights"):
        published_accuracy_check("resnet18", "ResNet18_Weights.NOPE", 0.7, 0.9)
