"""Models by name: every torchvision classifier, tinycnn, and custom factories.

Each loaded model carries the preprocessing its weights define (resize, crop,
mean/std; Inception-v3 is 299 px) and the label space of its outputs, so that
accuracy can be taken over the right logits.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision import transforms

from harness.errors import HarnessError

WEIGHT_CHOICES = ("pretrained", "random")
#: The seed random torchvision weights are drawn with.
RANDOM_WEIGHTS_SEED = 0
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Models whose auxiliary heads must be off for inference, export and pruning.
_AUX_MODELS = {"googlenet", "inception_v3"}


@dataclass
class LoadedModel:
    name: str
    module: nn.Module
    transform: Callable[[Any], torch.Tensor]
    input_shape: tuple[int, int, int]
    num_outputs: int
    label_space: str  # "imagenet" (1000 logits) or "own" (trained on the dataset's classes)
    weights: str
    own_classes: list[str] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


PUBLISHED_TOLERANCE_POINTS = 0.3
IMAGENET_VAL_IMAGES = 50_000


def published_accuracy_check(
    model_name: str,
    weights: Any,
    measured_top1: float,
    measured_top5: float | None,
    *,
    samples: int | None = None,
    tolerance_points: float = PUBLISHED_TOLERANCE_POINTS,
) -> dict[str, Any]:
    """Compare measured ImageNet-1k val accuracy with the accuracy torchvision publishes for the
    weights (``weights.meta["_metrics"]["ImageNet-1K"]``); pure (reads weight metadata only).

    `weights`: "pretrained" (the DEFAULT weights that load_model uses), a torchvision WeightsEnum
    member, or its name ("ResNet18_Weights.IMAGENET1K_V1"). Measured values are fractions (0..1, as
    in AccuracyResult); published ones are in percent. `samples`, when given, must be the full
    50,000 val images for the comparison to apply. Returns ``{"applicable": False, "reason": ...}``
    or the published and measured values in percent, their differences (measured - published) and
    ``"flag": True`` when either differs by more than `tolerance_points`.
    """
    def skip(reason: str) -> dict[str, Any]:
        return {"applicable": False, "reason": reason}

    for label, value in (("top-1", measured_top1), ("top-5", measured_top5)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise HarnessError(f"measured {label} accuracy {value} is not a fraction in 0..1")
    if weights is None or weights in ("random", "custom"):
        return skip(f"{weights or 'no'} weights have no published accuracy")
    if model_name not in torchvision_classifiers():
        return skip(f"{model_name} is not a torchvision classifier")
    try:
        if isinstance(weights, torchvision.models.WeightsEnum):
            enum = weights
        elif weights == "pretrained":
            enum = torchvision.models.get_model_weights(model_name).DEFAULT
        else:
            enum = torchvision.models.get_weight(str(weights))
    except (ValueError, KeyError, AttributeError) as exc:
        raise HarnessError(f"unknown torchvision weights {weights!r} for {model_name}: {exc}") from None
    metrics = enum.meta.get("_metrics", {}).get("ImageNet-1K")
    if not metrics or "acc@1" not in metrics:
        return skip(f"{enum} publishes no ImageNet-1K accuracy")
    if samples is not None and samples != IMAGENET_VAL_IMAGES:
        return skip(f"published accuracy is over the {IMAGENET_VAL_IMAGES:,} val images; {samples:,} were evaluated")
    out: dict[str, Any] = {"applicable": True, "weights": str(enum), "tolerance_points": tolerance_points}
    flags = []
    for key, label, measured in (("top1", "acc@1", measured_top1), ("top5", "acc@5", measured_top5)):
        published = metrics.get(label)
        out[f"published_{key}"] = published
        out[f"measured_{key}"] = None if measured is None else round(100.0 * measured, 6)
        if published is None or measured is None:
            out[f"diff_{key}"] = None
            continue
        diff = round(100.0 * measured - float(published), 6)  # rounding: 0.3 exactly is not "above"
        out[f"diff_{key}"] = diff
        if abs(diff) > tolerance_points:
            flags.append(f"{key} {diff:+.2f} points")
    out["flag"] = bool(flags)
    out["message"] = (f"measured accuracy differs from the published one for {enum} ({', '.join(flags)}): "
                      "check preprocessing and the label map" if flags else "")
    return out


def torchvision_classifiers() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_models() -> list[str]:
    return ["tinycnn", *torchvision_classifiers()]


def is_custom(name: str) -> bool:
    return ":" in name


def check_model_name(name: str, weights: str | None = None) -> None:
    """Raise for a name that cannot be loaded; with ``weights="pretrained"`` also make sure the
    torchvision weights are in the cache (downloading them once, or saying how to get them)."""
    if name == "tinycnn":
        return
    if name in torchvision_classifiers():
        if weights == "pretrained":
            _require_cached_weights(name, torchvision.models.get_model_weights(name).DEFAULT)
        return
    if is_custom(name):
        target = name.rpartition(":")[0]
        if target.endswith(".py") and not Path(target).is_file():
            raise HarnessError(f"custom model file {target} does not exist")
        return
    raise HarnessError(
        f"unknown model '{name}'; run `harness models` for the list, or pass a custom "
        "factory as path/to/file.py:factory or module:factory"
    )


def load_model(name: str, *, weights: str, cache_dir: Path, data_root: Path,
               on_rebuild: Callable[[str], None] | None = None) -> LoadedModel:
    """Load a model by name (see :func:`list_models`) or ``file.py:factory`` / ``module:factory``.

    ``on_rebuild`` receives the one-line note when a damaged cached artifact (tinycnn's trained
    weights) was rebuilt; without it a ``CacheRebuiltWarning`` is issued."""
    if weights not in WEIGHT_CHOICES:
        raise HarnessError(f"unknown weights '{weights}'; choose one of: {', '.join(WEIGHT_CHOICES)}")
    if name == "tinycnn":
        return _load_tinycnn(cache_dir, data_root, weights, on_rebuild)
    check_model_name(name)
    if is_custom(name):
        return _load_custom(name)
    return _load_torchvision(name, weights)


def _load_torchvision(name: str, weights: str) -> LoadedModel:
    enum = torchvision.models.get_model_weights(name).DEFAULT
    preprocess = enum.transforms()
    crop = int(preprocess.crop_size[0])
    transform = transforms.Compose([
        transforms.Resize(list(preprocess.resize_size), interpolation=preprocess.interpolation, antialias=True),
        transforms.CenterCrop(crop),
        transforms.ToTensor(),
        transforms.Normalize(preprocess.mean, preprocess.std),
    ])
    kwargs: dict[str, Any] = {}
    if weights == "pretrained":
        _require_cached_weights(name, enum)
        kwargs["weights"] = enum
    else:
        kwargs["weights"] = None
        if name in _AUX_MODELS:
            kwargs.update(aux_logits=False, init_weights=True)
    if weights == "random":
        # The same random weights in every process (seeded, without touching the caller's RNG), so the cells of
        # two runs (e.g. two quantizers compared on one model) hold one model and pair by content.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            module = torchvision.models.get_model(name, **kwargs).eval()
    else:
        module = torchvision.models.get_model(name, **kwargs).eval()
    if name in _AUX_MODELS and hasattr(module, "aux_logits"):
        module.aux_logits = False
    return LoadedModel(
        name=name, module=module, transform=transform, input_shape=(3, crop, crop),
        num_outputs=len(enum.meta["categories"]), label_space="imagenet", weights=weights,
        notes={"weights_enum": str(enum), "resize": list(preprocess.resize_size), "crop": crop},
    )


def weights_cache_path(enum: torchvision.models.WeightsEnum) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name


def _require_cached_weights(name: str, enum: torchvision.models.WeightsEnum) -> None:
    path = weights_cache_path(enum)
    if path.exists():
        return
    try:
        torch.hub.load_state_dict_from_url(enum.url, progress=False, check_hash=True)
    except Exception as exc:  # URLError, socket timeout, HTTP errors
        raise HarnessError(
            f"pretrained weights for {name} are not in the torch cache ({path}) and could not be "
            f"downloaded ({type(exc).__name__}); download {enum.url} to that path on a machine "
            "with network access, or use --weights random for a latency-only run"
        ) from None


def _load_tinycnn(cache_dir: Path, data_root: Path, weights: str,
                  on_rebuild: Callable[[str], None] | None = None) -> LoadedModel:
    from harness import tinycnn
    from harness.data.registry import open_split

    if weights == "random":
        module, meta = tinycnn.TinyCNN().eval(), {"trained": False}
        classes = None
    else:
        train = open_split("shapes", "train", data_root=data_root, cache_dir=cache_dir)
        module, meta = tinycnn.load_or_train(cache_dir, train, on_rebuild=on_rebuild)
        classes = list(train.classes)
    return LoadedModel(
        name="tinycnn", module=module, transform=tinycnn.eval_transform(),
        input_shape=(3, tinycnn.INPUT_SIZE, tinycnn.INPUT_SIZE), num_outputs=module.fc.out_features,
        label_space="own", weights=weights, own_classes=classes, notes={"training": meta},
    )


def check_custom_model(spec: str) -> None:
    """Preflight of a custom ``file.py:factory`` / ``module:factory``: the file imports, the factory
    exists and returns an ``nn.Module``, and one forward pass on the example input works; else a
    :class:`HarnessError` naming the file and the reason (before any cell runs)."""
    _load_custom(spec)


def _load_custom(spec: str) -> LoadedModel:
    target, _, factory_name = spec.rpartition(":")
    if not target or not factory_name:
        raise HarnessError(f"custom model '{spec}' must look like path/to/file.py:factory or module:factory")
    where = f"custom model {spec}"
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise HarnessError(f"custom model file {path} does not exist")
        module_name = f"pq_custom_{abs(hash(path.resolve()))}"
        spec_obj = importlib.util.spec_from_file_location(module_name, path)
        if spec_obj is None or spec_obj.loader is None:
            raise HarnessError(f"{where}: cannot import {path} as a Python module")
        mod = importlib.util.module_from_spec(spec_obj)
        sys.modules[module_name] = mod
        try:
            spec_obj.loader.exec_module(mod)
        except SyntaxError as exc:
            sys.modules.pop(module_name, None)
            raise HarnessError(f"{where}: {path} has a syntax error at line {exc.lineno}: {exc.msg}") from None
        except Exception as exc:  # noqa: BLE001 - user code may raise anything
            sys.modules.pop(module_name, None)
            raise HarnessError(f"{where}: importing {path} failed: {type(exc).__name__}: {exc}") from None
    else:
        try:
            mod = importlib.import_module(target)
        except SyntaxError as exc:
            raise HarnessError(f"{where}: {exc.filename} has a syntax error at line {exc.lineno}: "
                               f"{exc.msg}") from None
        except Exception as exc:  # noqa: BLE001 - user code may raise anything
            raise HarnessError(f"{where}: cannot import module '{target}': {type(exc).__name__}: {exc}") from None
    if not hasattr(mod, factory_name):
        raise HarnessError(f"{where}: '{factory_name}' is not defined in {target} (not a callable factory)")
    factory = getattr(mod, factory_name)
    if not callable(factory):
        raise HarnessError(f"{where}: '{factory_name}' in {target} is a {type(factory).__name__}, not a callable "
                           "factory")
    try:
        module = factory()
    except Exception as exc:  # noqa: BLE001 - user code may raise anything
        raise HarnessError(f"{where}: calling {factory_name}() in {target} failed: {type(exc).__name__}: "
                           f"{exc}") from None
    if not isinstance(module, nn.Module):
        raise HarnessError(f"{where}: {factory_name}() in {target} returned {type(module).__name__}, "
                           "not a torch.nn.Module")
    size = int(getattr(module, "input_size", 224))
    module.eval()
    try:
        with torch.inference_mode():
            output = module(torch.zeros(1, 3, size, size))
        if not isinstance(output, torch.Tensor) or output.dim() != 2:
            raise TypeError(f"it must return logits of shape (batch, classes), got "
                            f"{tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__}")
        num_outputs = int(output.shape[-1])
    except Exception as exc:  # noqa: BLE001 - user code may raise anything
        raise HarnessError(f"{where}: a forward pass on the example input (1, 3, {size}, {size}) failed: "
                           f"{type(exc).__name__}: {exc}") from None
    transform = transforms.Compose([
        transforms.Resize(size if size != 224 else 256, antialias=True),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(getattr(module, "mean", _IMAGENET_MEAN), getattr(module, "std", _IMAGENET_STD)),
    ])
    return LoadedModel(
        name=spec, module=module, transform=transform, input_shape=(3, size, size), num_outputs=num_outputs,
        label_space="imagenet" if num_outputs == 1000 else "own", weights="custom",
    )
