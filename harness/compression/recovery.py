"""Recovery after pruning: a short fine-tune of the compressed model on the **train** split.

Structural removal is the only pruning that speeds a dense kernel up, and it is also the one that
costs the most accuracy out of the box; every practitioner fine-tunes after it (Torch-Pruning's own
examples do, and ShrinkBench argues pruning methods can only be compared after fine-tuning). This
module is that step, kept honest:

* it trains on the train split only (a split whose ``split`` is not ``train`` is refused), so the
  accuracy later reported on the evaluation split is never fitted;
* by default it distils from the unpruned model: ``KL(student_T || teacher_T) * T^2`` on logits
  softened by the temperature ``T`` plus the cross-entropy on the labels (Hinton et al.);
* the compression keeps its form: zero-fill pruning and 2:4 keep their zeros (the mask of the
  zeros the pruner wrote is re-applied after every optimizer step, so a 2:4 pattern stays 2:4),
  structural removal keeps its smaller dense shapes (nothing is re-grown);
* it is deterministic: seeded and single-threaded (multi-threaded CPU kernels reduce in varying
  order), like :mod:`harness.tinycnn`'s training;
* the recovered weights are cached by content (student, teacher, data, options, library versions)
  with a size + sha256 sidecar (:mod:`harness.store.cache_files`): a damaged file is retrained with a
  one-line note, never handed to ``torch.load`` unverified.
"""

from __future__ import annotations

import copy
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from harness.compression.measures import target_weights
from harness.compression.registry import NO_PRUNING, pruner_for
from harness.errors import HarnessError
from harness.store import cache_files
from harness.store.fingerprint import dict_hash, model_content_hash

#: Bump when the training recipe changes (invalidates cached recovered weights).
RECOVERY_RECIPE_VERSION = 1

#: ``on_progress(step, total_steps, eta_seconds)``; eta is None before the first step finished.
ProgressCallback = Callable[[int, int, "float | None"], None]


class RecoverOptions(BaseModel):
    """The ``recover:`` block of a pruner entry (unknown keys rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=3, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=32, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    distill: bool = True
    temperature: float = Field(default=4.0, gt=0)
    seed: int = 0

    def identity(self) -> dict[str, Any]:
        """What a cell key holds of these options (every field: each changes the recovered model)."""
        return self.model_dump()


@dataclass(frozen=True)
class RecoveryReport:
    """What recovery did (accuracy-independent: the cell records accuracy before and after itself)."""

    steps: int
    epochs_run: float
    seconds: float  # training time; 0 when the cached weights were reused
    train_images: int
    final_loss: float | None
    distill: bool
    cached: bool
    cache_path: str
    provenance: dict[str, Any]
    masked_tensors: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def keeps_mask(method: str) -> bool:
    """Whether recovery must keep the zeros ``method`` wrote: zero-fill pruners and sparsity patterns
    (2:4); structural removal has no zeros to keep (its tensors are smaller)."""
    if method == NO_PRUNING:
        return False
    pruner = pruner_for(method)
    return pruner.zero_fill or pruner.sparse_weights


def _masks(model: nn.Module, method: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{weight name: (tensor, keep-mask)}`` for the pruner's zeros (zero-fill and 2:4 only)."""
    if not keeps_mask(method):
        return {}
    return {tw.name: (tw.tensor, (tw.tensor.detach() != 0)) for tw in target_weights(model)}


@torch.no_grad()
def _apply_masks(masks: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    for tensor, keep in masks.values():
        tensor.mul_(keep)


def recovery_provenance(student: nn.Module, teacher: nn.Module | None, train_split: Any, method: str,
                        options: RecoverOptions, planned_steps: int) -> dict[str, Any]:
    """Everything the recovered weights depend on (the cache key is its hash)."""
    return {
        "recipe": RECOVERY_RECIPE_VERSION,
        "student_hash": model_content_hash(student),
        "teacher_hash": model_content_hash(teacher) if teacher is not None and options.distill else None,
        "data_hash": train_split.file_list_hash(),
        "data_split": train_split.split,
        "method": method,
        "options": options.identity(),
        "steps": planned_steps,
        "seed": options.seed,
        "versions": {"torch": torch.__version__},
    }


def planned_steps(train_images: int, options: RecoverOptions) -> int:
    per_epoch = math.ceil(train_images / options.batch_size)
    total = per_epoch * options.epochs
    return min(total, options.max_steps) if options.max_steps is not None else total


def recover(
    student: nn.Module,
    train_split: Any,
    *,
    transform: Callable[[Any], torch.Tensor],
    method: str,
    options: RecoverOptions,
    cache_dir: Path,
    teacher: nn.Module | None = None,
    label_map: Sequence[int] | None = None,
    on_progress: ProgressCallback | None = None,
    on_rebuild: cache_files.OnRebuild | None = None,
) -> tuple[nn.Module, RecoveryReport]:
    """Fine-tune a copy of the pruned ``student`` on ``train_split`` (an ``ImageSplit`` of the train
    split); returns (recovered model in eval mode, report). ``student`` itself is not modified.

    ``method`` is the pruning method that produced ``student`` (its zeros are kept for zero-fill and
    2:4). ``teacher`` (the unpruned model) is needed when ``options.distill``. ``label_map`` maps a
    dataset label to the model's output index (an ImageNet model on an ImageNet subset); None: the
    model's outputs are the dataset's classes. Cached under ``<cache_dir>/recovered/``.
    """
    if getattr(train_split, "split", None) != "train":
        raise HarnessError(f"recovery trains on the train split only; it was given the "
                           f"'{getattr(train_split, 'split', '?')}' split of {getattr(train_split, 'name', '?')}")
    if options.distill and teacher is None:
        raise HarnessError("recovery with distill: true needs the unpruned model as teacher")
    if len(train_split.samples) == 0:
        raise HarnessError(f"the train split of {train_split.name} holds no images to recover on")
    steps = planned_steps(len(train_split.samples), options)
    provenance = recovery_provenance(student, teacher, train_split, method, options, steps)
    path = Path(cache_dir) / "recovered" / f"recovered-{dict_hash(provenance)[:20]}.pt"
    model = copy.deepcopy(student)
    reason = cache_files.damaged(path)
    if reason is None and path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001 - checksum intact but unusable: train again
            reason = f"it does not load into the pruned model ({type(exc).__name__})"
            model = copy.deepcopy(student)
        else:
            meta = cache_files.read_meta(path)
            return model.eval(), RecoveryReport(
                steps=int(meta.get("steps", steps)), epochs_run=float(meta.get("epochs_run", 0.0)), seconds=0.0,
                train_images=int(meta.get("train_images", len(train_split.samples))),
                final_loss=meta.get("final_loss"), distill=options.distill, cached=True, cache_path=str(path),
                provenance=provenance, masked_tensors=int(meta.get("masked_tensors", 0)))
    trained = _train(model, teacher if options.distill else None, train_split, transform, method, options, steps,
                     label_map, on_progress)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    cache_files.write_bytes(path, buffer.getvalue(), {**trained, "provenance": provenance})
    notes: list[str] = []
    if reason is not None:
        note = cache_files.rebuilt_note("recovered weights", path, reason)
        cache_files.report_rebuild(note, on_rebuild)
        notes.append(note)
    return model.eval(), RecoveryReport(
        steps=trained["steps"], epochs_run=trained["epochs_run"], seconds=trained["seconds"],
        train_images=trained["train_images"], final_loss=trained["final_loss"], distill=options.distill,
        cached=False, cache_path=str(path), provenance=provenance, masked_tensors=trained["masked_tensors"],
        notes=notes)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Cross-entropy on the labels, plus ``KL(teacher_T || student_T) * T^2`` when a teacher is given
    (the T^2 keeps the soft term's gradients on the scale of the hard one's)."""
    loss = nn.functional.cross_entropy(student_logits, labels)
    if teacher_logits is not None:
        t = float(temperature)
        soft = nn.functional.kl_div(nn.functional.log_softmax(student_logits / t, dim=1),
                                    nn.functional.log_softmax(teacher_logits / t, dim=1),
                                    reduction="batchmean", log_target=True)
        loss = loss + soft * t * t
    return loss


def _train(model: nn.Module, teacher: nn.Module | None, train_split: Any, transform: Callable[[Any], torch.Tensor],
           method: str, options: RecoverOptions, steps: int, label_map: Sequence[int] | None,
           on_progress: ProgressCallback | None) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic reductions (see the module docstring)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(options.seed)
            return _train_seeded(model, teacher, train_split, transform, method, options, steps, label_map,
                                 on_progress)
    finally:
        torch.set_num_threads(threads)


def _train_seeded(model: nn.Module, teacher: nn.Module | None, train_split: Any,
                  transform: Callable[[Any], torch.Tensor], method: str, options: RecoverOptions, steps: int,
                  label_map: Sequence[int] | None, on_progress: ProgressCallback | None) -> dict[str, Any]:
    started = time.perf_counter()
    dataset = train_split.dataset(transform)
    generator = torch.Generator().manual_seed(options.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=options.batch_size, shuffle=True, generator=generator,
                                         num_workers=0)
    mapping = torch.tensor(list(label_map)) if label_map is not None else None
    masks = _masks(model, method)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    if teacher is not None:
        teacher = teacher.eval()
    model.train()
    step, loss_value = 0, None
    per_epoch = max(1, math.ceil(len(dataset) / options.batch_size))
    while step < steps:
        for images, labels in loader:
            if step >= steps:
                break
            if mapping is not None:
                labels = mapping[labels]
            optimizer.zero_grad(set_to_none=True)
            logits = model(images)
            teacher_logits = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(images)
            loss = distillation_loss(logits, teacher_logits, labels, options.temperature)
            loss.backward()
            optimizer.step()
            schedule.step()
            _apply_masks(masks)  # the pruner's zeros stay zero (zero-fill, 2:4 pattern)
            step += 1
            loss_value = float(loss.detach())
            if on_progress is not None:
                elapsed = time.perf_counter() - started
                on_progress(step, steps, elapsed / step * (steps - step))
    model.eval()
    return {"steps": step, "epochs_run": step / per_epoch, "seconds": time.perf_counter() - started,
            "train_images": len(dataset), "final_loss": loss_value, "masked_tensors": len(masks)}


__all__ = [
    "RECOVERY_RECIPE_VERSION",
    "RecoverOptions",
    "RecoveryReport",
    "distillation_loss",
    "keeps_mask",
    "planned_steps",
    "recover",
    "recovery_provenance",
]
