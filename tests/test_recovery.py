"""Recovery after pruning: train split only, masks and structure kept, deterministic, cached and healing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from harness.compression import PruneSpec, apply_pruning, verify_2_4
from harness.compression.measures import target_weights
from harness.compression.recovery import RecoverOptions, distillation_loss, recover
from harness.data import shapes
from harness.data.registry import ImageSplit, scan_image_folder
from harness.errors import HarnessError
from harness.store.cache_files import CacheRebuiltWarning
from harness.tinycnn import TinyCNN, eval_transform


def _split(root: Path, split: str) -> ImageSplit:
    classes, samples = scan_image_folder(root / split)
    return ImageSplit("shapes", split, root / split, classes, samples, None)


@pytest.fixture(scope="module")
def small_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated shapes copy of our own (its val split can be taken away)."""
    return shapes.ensure_shapes(tmp_path_factory.mktemp("shapes"), train_per_class=6, val_per_class=2)


def _model(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN(width=8).eval()


OPTIONS = RecoverOptions(epochs=1, max_steps=4, batch_size=16, lr=1e-2)


def _prune(model: torch.nn.Module, spec: PruneSpec) -> torch.nn.Module:
    return apply_pruning(model, spec, example_input=torch.zeros(1, 3, 64, 64))[0]


def test_zero_fill_and_2_4_keep_their_zeros_and_the_student_learns(small_shapes: Path, tmp_path: Path) -> None:
    teacher, train = _model(), _split(small_shapes, "train")
    progress: list[tuple[int, int, float | None]] = []
    for spec in (PruneSpec("l1-global", 0.6), PruneSpec("2:4", 0.5)):
        pruned = _prune(teacher, spec)
        zeros = {tw.name: (tw.tensor == 0).clone() for tw in target_weights(pruned)}
        recovered, report = recover(pruned, train, transform=eval_transform(), method=spec.method, options=OPTIONS,
                                    cache_dir=tmp_path, teacher=teacher,
                                    on_progress=lambda *a: progress.append(a))
        assert report.steps == 4 and not report.cached and report.masked_tensors == len(zeros)
        for tw in target_weights(recovered):
            assert bool((tw.tensor[zeros[tw.name]] == 0).all()), f"{spec.method}: {tw.name} lost its zeros"
        changed = [tw.name for tw, old in zip(target_weights(recovered), target_weights(pruned))
                   if not torch.equal(tw.tensor, old.tensor)]
        assert changed, "recovery trained nothing"
        if spec.method == "2:4":
            assert all(verify_2_4(recovered).values())
    assert progress[-1][:2] == (4, 4) and progress[-1][2] == 0.0 and progress[0][2] is not None


def test_removal_keeps_its_smaller_shapes(small_shapes: Path, tmp_path: Path) -> None:
    teacher = _model()
    pruned = _prune(teacher, PruneSpec("removal", 0.5, round_to=4))
    recovered, _ = recover(pruned, _split(small_shapes, "train"), transform=eval_transform(), method="removal",
                           options=OPTIONS, cache_dir=tmp_path, teacher=teacher)
    shapes_before = {k: v.shape for k, v in pruned.state_dict().items()}
    assert {k: v.shape for k, v in recovered.state_dict().items()} == shapes_before
    assert shapes_before["stem.0.weight"][0] < teacher.state_dict()["stem.0.weight"].shape[0]
    assert not torch.equal(recovered.stem[0].weight, pruned.stem[0].weight)


def test_deterministic_cached_and_a_damaged_cache_heals(small_shapes: Path, tmp_path: Path) -> None:
    teacher, train = _model(), _split(small_shapes, "train")
    pruned = _prune(teacher, PruneSpec("removal", 0.5, round_to=4))
    kwargs = {"transform": eval_transform(), "method": "removal", "options": OPTIONS, "teacher": teacher}
    first, r1 = recover(pruned, train, cache_dir=tmp_path / "a", **kwargs)
    torch.manual_seed(1234)  # whatever the caller's random state: the seed decides
    again, r2 = recover(pruned, train, cache_dir=tmp_path / "b", **kwargs)  # a cold cache: trained again
    assert not r2.cached
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs between two seeded runs"
    _, r3 = recover(pruned, train, cache_dir=tmp_path / "a", **kwargs)
    assert r3.cached and r3.seconds == 0.0 and r3.cache_path == r1.cache_path
    assert r3.provenance["teacher_hash"] and r3.provenance["data_hash"] == train.file_list_hash()
    assert r3.provenance["steps"] == 4 and r3.provenance["seed"] == 0 and "torch" in r3.provenance["versions"]
    # another option is another artifact
    _, r4 = recover(pruned, train, cache_dir=tmp_path / "a", **{**kwargs, "options": OPTIONS.model_copy(
        update={"temperature": 2.0})})
    assert not r4.cached and r4.cache_path != r1.cache_path
    # truncate the cached weights: retrained with a note, same weights as before
    path = Path(r1.cache_path)
    path.write_bytes(path.read_bytes()[:100])
    notes: list[str] = []
    healed, r5 = recover(pruned, train, cache_dir=tmp_path / "a", on_rebuild=notes.append, **kwargs)
    assert not r5.cached and len(notes) == 1 and "truncated" in notes[0] and notes == r5.notes
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), healed.state_dict().values()))
    path.write_bytes(b"garbage")  # without a callback: a CacheRebuiltWarning
    with pytest.warns(CacheRebuiltWarning):
        recover(pruned, train, cache_dir=tmp_path / "a", **kwargs)


def test_recovery_never_needs_the_evaluation_split(small_shapes: Path, tmp_path: Path) -> None:
    copy = tmp_path / "shapes"
    shutil.copytree(small_shapes, copy)
    val = _split(copy, "val")
    shutil.rmtree(copy / "val")  # every evaluation file is gone while recovery runs
    teacher = _model()
    pruned = _prune(teacher, PruneSpec("removal", 0.5, round_to=4))
    _, report = recover(pruned, _split(copy, "train"), transform=eval_transform(), method="removal",
                        options=OPTIONS, cache_dir=tmp_path / "cache", teacher=teacher)
    assert report.steps == 4 and report.provenance["data_split"] == "train"
    with pytest.raises(HarnessError, match="train split only; it was given the 'val' split"):
        recover(pruned, val, transform=eval_transform(), method="removal", options=OPTIONS,
                cache_dir=tmp_path / "cache", teacher=teacher)


def test_distillation_loss_is_label_loss_plus_scaled_kl() -> None:
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    ce = torch.nn.functional.cross_entropy(student, labels)
    assert torch.allclose(distillation_loss(student, None, labels, 4.0), ce)
    assert torch.allclose(distillation_loss(student, student.clone(), labels, 4.0), ce, atol=1e-6)
    t = 4.0
    p_t = torch.softmax(teacher / t, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(student / t, 1))).sum(1).mean()
    assert torch.allclose(distillation_loss(student, teacher, labels, t), ce + kl * t * t, atol=1e-5)


def test_options_are_strict() -> None:
    with pytest.raises(ValueError, match="epoch"):
        RecoverOptions.model_validate({"epoch": 3})
    with pytest.raises(ValueError):
        RecoverOptions(temperature=0)
    with pytest.raises(HarnessError, match="needs the unpruned model as teacher"):
        recover(_model(), type("S", (), {"split": "train", "name": "x", "samples": [1]})(), transform=eval_transform(),
                method="removal", options=RecoverOptions(), cache_dir=Path("/nonexistent"))


def test_recover_block_in_a_pruner_entry() -> None:
    from harness.config import load_config

    config = load_config(None, {"pruners": [{"method": "removal", "amounts": [0.5], "round_to": 8},
                                            {"method": "removal", "amounts": [0.5], "round_to": 8,
                                             "recover": {"epochs": 3, "distill": False}}]})
    assert config.pruners[0].recover is None
    assert config.pruners[1].recover == RecoverOptions(epochs=3, distill=False)
    with pytest.raises(HarnessError, match="pruners.0.recover.temperature"):
        load_config(None, {"pruners": [{"method": "removal", "recover": {"temperature": 0}}]})
