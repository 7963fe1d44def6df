"""harness.accuracy: count-weighted top-1, ImageNet-subset logits, label mappings, padded evaluation.

Regressions of the thesis tool: the thesis tool averaged per-batch accuracies (a partial last batch
weighed as much as a full one), had ImageWoof's Border/Australian terrier indices swapped, and a partial
last batch triggered a TensorRT engine rebuild.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.accuracy import AccuracyCounter, LabelMapping, evaluate
from harness.data.imagenet_maps import imagenet_indices

NUM_CLASSES = 10


def _one_hot_infer(images: torch.Tensor) -> torch.Tensor:
    """A model whose prediction for a row is the class stored in that row's first value."""
    return torch.nn.functional.one_hot(images[:, 0].long(), NUM_CLASSES).float()


def _batch(preds: list[int], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(preds, dtype=torch.float32).unsqueeze(1), torch.tensor(labels)


# --------------------------------------------------------------------------- count weighting


def test_accuracy_is_count_weighted_not_mean_of_batch_means() -> None:
    # 8 of 8 right in the full batch, 0 of 2 right in the partial last one.
    batches = [
        _batch([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8]),
        _batch([0, 0], [3, 4]),
    ]
    mean_of_batch_means = float(np.mean([(p[:, 0].long() == y).float().mean() for p, y in batches]))
    count_weighted = 8 / 10
    assert mean_of_batch_means != pytest.approx(count_weighted)  # the construction discriminates

    result = evaluate(_one_hot_infer, batches, LabelMapping("direct"), batch_size=8)
    assert result.samples == 10
    assert result.correct == 8
    assert result.top1 == pytest.approx(count_weighted)
    assert result.top1 != pytest.approx(mean_of_batch_means)
    assert result.top1_1000 is None
    assert result.mapping == "direct"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counter_matches_whole_split_accuracy_on_random_uneven_batches(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    sizes = [int(s) for s in torch.randint(1, 17, (9,), generator=gen)]
    logits = torch.randn(sum(sizes), NUM_CLASSES, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (sum(sizes),), generator=gen)

    counter = AccuracyCounter(LabelMapping("direct"))
    start = 0
    for size in sizes:
        counter.update(logits[start:start + size], labels[start:start + size])
        start += size
    result = counter.result()

    expected_correct = int((logits.numpy().argmax(axis=1) == labels.numpy()).sum())
    assert result.samples == sum(sizes)
    assert result.correct == expected_correct
    assert result.top1 == pytest.approx(expected_correct / sum(sizes))


def test_counter_accepts_half_precision_logits() -> None:
    logits = torch.tensor([[0.0, 1.0, 0.5], [2.0, -1.0, 0.0]], dtype=torch.float16)
    counter = AccuracyCounter(LabelMapping("direct"))
    counter.update(logits, torch.tensor([1, 2]))
    assert (counter.result().correct, counter.result().samples) == (1, 2)


def test_counter_rejects_mismatched_lengths_and_empty_results() -> None:
    counter = AccuracyCounter(LabelMapping("direct"))
    with pytest.raises(ValueError):
        counter.update(torch.zeros(3, NUM_CLASSES), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        counter.result()


def test_counter_refuses_undefined_mapping() -> None:
    mapping = LabelMapping.for_model("own", 7, 10, None)
    with pytest.raises(ValueError, match="not defined"):
        AccuracyCounter(mapping)


# --------------------------------------------------------------------------- ImageNet subsets


@pytest.mark.parametrize("subset", ["imagenette", "imagewoof"])
def test_imagenet_subset_uses_only_subset_logits(subset: str) -> None:
    indices = imagenet_indices(subset)
    mapping = LabelMapping.for_model("imagenet", 1000, 10, indices)
    gen = torch.Generator().manual_seed(3)
    labels = torch.arange(10)
    logits = torch.randn(10, 1000, generator=gen) * 0.1
    for label in range(10):
        logits[label, indices[label]] = 5.0  # the right class wins among the 10 subset logits

    clean = AccuracyCounter(mapping)
    clean.update(logits, labels)
    assert clean.result().top1 == 1.0
    assert clean.result().top1_1000 == 1.0

    outside = next(i for i in range(1000) if i not in indices)
    distracted = logits.clone()
    distracted[:, outside] = 100.0  # a huge logit outside the subset
    counter = AccuracyCounter(mapping)
    counter.update(distracted, labels)
    result = counter.result()
    assert result.top1 == 1.0          # subset top-1 ignores it
    assert result.top1_1000 == 0.0     # 1000-way top-1 does not
    assert result.mapping == "imagenet-subset"


def test_imagewoof_terriers_map_to_their_own_labels() -> None:
    """Regression: the thesis tool had Border terrier (182) and Australian terrier (193) swapped."""
    indices = imagenet_indices("imagewoof")
    mapping = LabelMapping.for_model("imagenet", 1000, 10, indices)
    logits = torch.zeros(2, 1000)
    logits[0, 182] = 1.0  # Border terrier
    logits[1, 193] = 1.0  # Australian terrier
    counter = AccuracyCounter(mapping)
    counter.update(logits, torch.tensor([4, 5]))  # labels = sorted wnids: n02093754 (4), n02096294 (5)
    assert counter.result().correct == 2
    assert counter.result().top1_1000 == 1.0


# --------------------------------------------------------------------------- LabelMapping.for_model


def test_label_mapping_for_model() -> None:
    indices = imagenet_indices("imagenette")
    subset = LabelMapping.for_model("imagenet", 1000, 10, indices)
    assert subset.kind == "imagenet-subset"
    assert subset.imagenet_indices == tuple(indices)

    direct = LabelMapping.for_model("own", 10, 10, None)
    assert direct.kind == "direct"
    assert direct.imagenet_indices is None

    for args in (("own", 7, 10, None),           # own classes, wrong count
                 ("imagenet", 1000, 10, None),   # ImageNet model, dataset without an index map
                 ("imagenet", 10, 10, indices)):  # not a 1000-way ImageNet head
        mapping = LabelMapping.for_model(*args)
        assert mapping.kind == "none", args
        assert mapping.reason and "accuracy is not defined" in mapping.reason


# --------------------------------------------------------------------------- evaluate: padding


def test_evaluate_pads_short_last_batch_and_scores_only_real_rows() -> None:
    batch_size = 4
    gen = torch.Generator().manual_seed(7)
    batches = []
    for size in (4, 4, 3, 1):
        images = torch.rand(size, 3, 5, 5, generator=gen) + 1.0  # never zero, so padding is visible
        labels = torch.randint(0, NUM_CLASSES, (size,), generator=gen)
        batches.append((images, labels))

    received: list[torch.Tensor] = []

    def infer(x: torch.Tensor) -> torch.Tensor:
        received.append(x.clone())
        # Always predict class 0: correct exactly where the label is 0.
        out = torch.zeros(len(x), NUM_CLASSES)
        out[:, 0] = 1.0
        return out

    seen: list[int] = []
    result = evaluate(infer, batches, LabelMapping("direct"), batch_size=batch_size, on_batch=seen.append)

    assert [tuple(x.shape) for x in received] == [(batch_size, 3, 5, 5)] * 4
    for (images, _), got in zip(batches, received):
        n = len(images)
        assert torch.equal(got[:n], images)
        assert torch.count_nonzero(got[n:]) == 0
        assert got.dtype == images.dtype
    assert seen == [4, 4, 3, 1]
    assert result.samples == 12
    all_labels = torch.cat([labels for _, labels in batches])
    assert result.correct == int((all_labels == 0).sum())


def test_evaluate_padding_rows_never_count() -> None:
    """Padded rows would be 'correct' if they were scored; they must not change the result."""
    batches = [_batch([1, 2, 3], [1, 2, 3]), _batch([5], [6])]
    calls: list[int] = []

    def infer(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return _one_hot_infer(x)

    result = evaluate(infer, batches, LabelMapping("direct"), batch_size=3)
    assert calls == [3, 3]
    assert (result.samples, result.correct) == (4, 3)
    assert result.top1 == pytest.approx(0.75)


def test_evaluate_with_imagenet_subset_mapping() -> None:
    indices = imagenet_indices("imagenette")
    mapping = LabelMapping.for_model("imagenet", 1000, 10, indices)
    labels = torch.tensor([0, 3, 9, 9, 2])
    # Each "image" carries the ImageNet index the model will predict.
    targets = torch.tensor([indices[0], indices[3], indices[1], indices[9], 999], dtype=torch.float32)
    images = targets.unsqueeze(1)

    def infer(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(x[:, 0].long(), 1000).float()

    result = evaluate(infer, [(images[:4], labels[:4]), (images[4:], labels[4:])], mapping, batch_size=4)
    assert result.samples == 5
    # Row 4 predicts ImageNet class 999, outside the subset: among the subset logits all are 0,
    # argmax picks label 0, which is wrong (label 2).  Rows 0, 1, 3 are right.
    assert result.correct == 3
    assert result.top1_1000 == pytest.approx(3 / 5)
    assert result.to_dict()["mapping"] == "imagenet-subset"


# --------------------------------------------------------------------------- top-5


def test_top5_counts_the_true_class_among_the_five_highest() -> None:
    # 7 classes; true class ranked 1st, 3rd, 5th, 6th and 7th
    logits = torch.tensor([[7, 6, 5, 4, 3, 2, 1]], dtype=torch.float32).repeat(5, 1)
    labels = torch.tensor([0, 2, 4, 5, 6])
    counter = AccuracyCounter(LabelMapping("direct"))
    counter.update(logits[:2], labels[:2])  # split over two batches: counts are summed
    counter.update(logits[2:], labels[2:])
    result = counter.result()
    assert result.top1 == pytest.approx(1 / 5)
    assert result.top5 == pytest.approx(3 / 5)
    assert result.top5_1000 is None


def test_top5_is_none_with_five_or_fewer_classes() -> None:
    counter = AccuracyCounter(LabelMapping("direct"))
    counter.update(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))
    assert counter.result().top5 is None


def test_top5_1000_uses_the_imagenet_index_of_the_label() -> None:
    subset = imagenet_indices("imagenette")  # label 1 -> 217
    logits = torch.zeros(2, 1000)
    logits[0, [900, 901, 902, 903]] = torch.tensor([5.0, 4.0, 3.0, 2.0])
    logits[0, 217] = 1.0  # 5th of 1000: in top-5, not top-1
    logits[1, [900, 901, 902, 903, 904]] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.5])
    logits[1, 217] = 1.0  # 6th of 1000
    result = evaluate(lambda x: logits, [(torch.zeros(2, 1), torch.tensor([1, 1]))],
                      LabelMapping("imagenet-subset", subset), batch_size=2)
    assert result.top1_1000 == 0.0 and result.top5_1000 == pytest.approx(0.5)
    assert result.top1 == 1.0  # over the 10 subset logits 217 is the highest
    assert result.top5 == 1.0
    assert set(result.to_dict()) >= {"top5", "top5_1000"}
