"""tinycnn: a small CNN trained on the embedded `shapes` set by our own code.

It gives the offline default a model with real accuracy. Training is seeded
and single-threaded-deterministic, takes well under a minute on 2 cores, and
the weights are cached under the harness cache, keyed by this file's recipe
version and the dataset's manifest.  The cached weights heal
(:mod:`harness.store.cache_files`): a damaged or unverifiable file is retrained with a
one-line note, never handed to ``torch.load``.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms

from harness.store import cache_files

RECIPE_VERSION = 3
INPUT_SIZE = 64
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


class TinyCNN(nn.Module):
    """Strided conv-BN-ReLU stages with a residual block, global pooling, a linear head (~9 M MACs)."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.stage1 = _block(w, 2 * w, stride=2)
        self.res = nn.Sequential(
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w),
        )
        self.stage2 = _block(2 * w, 4 * w, stride=2)
        self.stage3 = _block(4 * w, 8 * w, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.stem(x))
        x = torch.relu(x + self.res(x))
        x = self.stage3(self.stage2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def eval_transform() -> Callable:
    return transforms.Compose([
        transforms.Resize(INPUT_SIZE),
        transforms.CenterCrop(INPUT_SIZE),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


def load_or_train(cache_dir: Path, train_split, *, epochs: int = 15, seed: int = 0,
                  on_rebuild: cache_files.OnRebuild | None = None) -> tuple[TinyCNN, dict]:
    """Cached weights for ``train_split`` (an ImageSplit of shapes/train), trained on first use.

    Damaged cached weights (truncated, garbled, no sidecar, not loadable) are retrained;
    the one-line note goes to ``on_rebuild`` (else a ``CacheRebuiltWarning``) and is
    returned in the metadata as ``rebuilt``.
    """
    key = f"tinycnn-r{RECIPE_VERSION}-e{epochs}-s{seed}-{train_split.file_list_hash()[:12]}"
    weights_path = cache_dir / "models" / f"{key}.pt"
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the initial weights are part of the recipe
        model = TinyCNN(num_classes=len(train_split.classes))
    reason = cache_files.damaged(weights_path)
    legacy_meta = weights_path.with_suffix(".json")  # written before checksum sidecars existed
    if reason is not None and not cache_files.sidecar_of(weights_path).exists() and legacy_meta.exists():
        try:
            model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
            meta = json.loads(legacy_meta.read_text())
        except Exception:  # noqa: BLE001 - damaged legacy file: retrain below
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                model = TinyCNN(num_classes=len(train_split.classes))
        else:
            cache_files.seal(weights_path, meta)  # adopt it: verified from now on
            legacy_meta.unlink(missing_ok=True)
            return model.eval(), meta
    if reason is None and weights_path.exists():
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            return model.eval(), cache_files.read_meta(weights_path)
        except Exception as exc:  # noqa: BLE001 - checksum intact but unusable (e.g. another recipe): retrain
            reason = f"it does not load as tinycnn weights ({type(exc).__name__})"
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                model = TinyCNN(num_classes=len(train_split.classes))
    meta = train(model, train_split, epochs=epochs, seed=seed)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    cache_files.write_bytes(weights_path, buffer.getvalue(), meta)
    if reason is not None:
        note = cache_files.rebuilt_note("tinycnn weights", weights_path, reason)
        cache_files.report_rebuild(note, on_rebuild)
        return model.eval(), {**meta, "rebuilt": note}
    return model.eval(), meta


def train(model: TinyCNN, train_split, *, epochs: int, seed: int) -> dict:
    """Seeded AdamW with a one-cycle learning rate; returns training metadata."""
    started = time.perf_counter()
    dataset = train_split.dataset(eval_transform())
    threads = torch.get_num_threads()
    # One thread: multi-threaded CPU kernels reduce in varying order, so weights would differ run to run.
    torch.set_num_threads(1)
    try:
        return _train_seeded(model, dataset, train_split, epochs=epochs, seed=seed, started=started)
    finally:
        torch.set_num_threads(threads)


def _train_seeded(model: TinyCNN, dataset, train_split, *, epochs: int, seed: int, started: float) -> dict:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        labels = torch.tensor([label for _, label in train_split.samples])
        batch = 32
        steps_per_epoch = (len(images) + batch - 1) // batch
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-3, epochs=epochs,
                                                       steps_per_epoch=steps_per_epoch)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(images))
            for start in range(0, len(images), batch):
                idx = order[start:start + batch]
                optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
                loss.backward()
                optimizer.step()
                schedule.step()
    model.eval()
    return {"recipe": RECIPE_VERSION, "epochs": epochs, "seed": seed, "train_images": len(images),
            "final_loss": float(loss.detach()), "train_seconds": time.perf_counter() - started}
