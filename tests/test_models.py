"""harness.models: torchvision by name, aux heads off, offline-friendly pretrained errors, custom factories.

Regression context: the thesis tool needed network access at run time
(torch.hub); a missing pretrained checkpoint must be a clear error pointing at ``--weights random``.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.models import list_models, load_model, torchvision_classifiers, weights_cache_path


def _load(name: str, tmp_path: Path, weights: str = "random"):
    return load_model(name, weights=weights, cache_dir=tmp_path / "cache", data_root=tmp_path / "data")


# --------------------------------------------------------------------------- listing


def test_torchvision_classifiers_listed() -> None:
    names = torchvision_classifiers()
    thesis_models = {"alexnet", "resnet18", "densenet121", "googlenet", "inception_v3", "mobilenet_v2",
                     "squeezenet1_0", "shufflenet_v2_x1_0", "vit_b_16"}
    assert thesis_models <= set(names)
    assert names == sorted(names)
    # classification models only: no detection/segmentation/video builders
    assert "fasterrcnn_resnet50_fpn" not in names and "deeplabv3_resnet50" not in names
    listed = list_models()
    assert listed[0] == "tinycnn"
    assert listed[1:] == names


# --------------------------------------------------------------------------- torchvision, random weights


def test_resnet18_random(tmp_path: Path) -> None:
    loaded = _load("resnet18", tmp_path)
    assert loaded.input_shape == (3, 224, 224)
    assert loaded.num_outputs == 1000
    assert loaded.label_space == "imagenet"
    assert loaded.weights == "random"
    assert not loaded.module.training
    assert loaded.module.fc.out_features == 1000


def test_random_weights_are_the_same_in_every_process_and_leave_the_rng_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    from harness.store.fingerprint import model_content_hash

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    here = model_content_hash(_load("resnet18", tmp_path).module)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's RNG stream is untouched
    code = ("from pathlib import Path; from harness.models import load_model; "
            "from harness.store.fingerprint import model_content_hash; import torch; torch.manual_seed(7); "
            f"print(model_content_hash(load_model('resnet18', weights='random', cache_dir=Path({str(tmp_path)!r}), "
            f"data_root=Path({str(tmp_path)!r})).module))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == here


def test_inception_v3_random_is_299_and_returns_a_plain_tensor(tmp_path: Path) -> None:
    loaded = _load("inception_v3", tmp_path)
    assert loaded.input_shape == (3, 299, 299)
    assert loaded.num_outputs == 1000
    assert not loaded.module.training
    assert loaded.module.aux_logits is False
    assert loaded.module.AuxLogits is None
    with torch.inference_mode():
        out = loaded.module(torch.zeros(1, 3, 75, 75))  # 75 px is Inception-v3's smallest input
    assert type(out) is torch.Tensor
    assert out.shape == (1, 1000)


def test_googlenet_random_returns_a_plain_tensor(tmp_path: Path) -> None:
    loaded = _load("googlenet", tmp_path)
    assert loaded.input_shape == (3, 224, 224)
    assert loaded.module.aux_logits is False
    with torch.inference_mode():
        out = loaded.module(torch.zeros(2, 3, 64, 64))
    assert type(out) is torch.Tensor
    assert out.shape == (2, 1000)


def test_preprocessing_of_resnet18_gives_3x224x224(tmp_path: Path) -> None:
    loaded = _load("resnet18", tmp_path)
    image = Image.new("RGB", (300, 200), color=(200, 30, 90))
    x = loaded.transform(image)
    assert isinstance(x, torch.Tensor)
    assert tuple(x.shape) == (3, 224, 224)
    assert x.dtype == torch.float32
    # normalised with ImageNet mean/std: a uniform red channel of 200/255 becomes (0.784 - 0.485) / 0.229
    assert float(x[0].mean()) == pytest.approx((200 / 255 - 0.485) / 0.229, abs=1e-3)


# --------------------------------------------------------------------------- errors


def test_unknown_model_mentions_harness_models(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="harness models"):
        _load("resnet19", tmp_path)


def test_unknown_weights_choice(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="random"):
        _load("resnet18", tmp_path, weights="imagenet")


def test_pretrained_not_cached_and_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch_home = tmp_path / "torch-home"
    torch_home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    # Route every download through a closed local port so it fails fast (no 5 MB fetch, no network).
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # an opener built earlier would keep old proxies

    name = "squeezenet1_1"
    import torchvision

    enum = torchvision.models.get_model_weights(name).DEFAULT
    expected_path = weights_cache_path(enum)
    assert torch_home in expected_path.parents  # the cache really is the empty tmp dir
    assert not expected_path.exists()

    try:
        _load(name, tmp_path, weights="pretrained")
    except HarnessError as exc:
        message = str(exc)
    else:
        pytest.skip("the pretrained weights were downloaded despite the dead proxy; cannot test offline error")
    assert "--weights random" in message
    assert name in message
    assert str(expected_path) in message
    assert not expected_path.exists()


# --------------------------------------------------------------------------- custom factories

_FACTORY_SOURCE = """
import torch
from torch import nn


def make():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))


def make_small():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1000))
    net.input_size = 32
    return net


def not_a_module():
    return {"weights": [1, 2, 3]}


NOT_CALLABLE = 42
"""


def test_custom_file_factory(tmp_path: Path) -> None:
    src = tmp_path / "mynets.py"
    src.write_text(_FACTORY_SOURCE)
    loaded = _load(f"{src}:make", tmp_path)
    assert isinstance(loaded.module, torch.nn.Module)
    assert not loaded.module.training
    assert loaded.num_outputs == 7
    assert loaded.label_space == "own"
    assert loaded.input_shape == (3, 224, 224)
    assert loaded.weights == "custom"
    x = loaded.transform(Image.new("RGB", (300, 200)))
    assert tuple(x.shape) == (3, 224, 224)

    small = _load(f"{src}:make_small", tmp_path)
    assert small.input_shape == (3, 32, 32)
    assert small.num_outputs == 1000
    assert small.label_space == "imagenet"
    assert tuple(small.transform(Image.new("RGB", (300, 200))).shape) == (3, 32, 32)


def test_custom_module_factory_via_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module_name = "pq_test_custom_nets_mod"
    (tmp_path / f"{module_name}.py").write_text(_FACTORY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module_name, raising=False)
    try:
        loaded = _load(f"{module_name}:make", tmp_path)
    finally:
        sys.modules.pop(module_name, None)
    assert loaded.num_outputs == 7
    assert loaded.name == f"{module_name}:make"


def test_custom_factory_must_return_a_module(tmp_path: Path) -> None:
    src = tmp_path / "mynets.py"
    src.write_text(_FACTORY_SOURCE)
    with pytest.raises(HarnessError, match="not a torch.nn.Module"):
        _load(f"{src}:not_a_module", tmp_path)
    with pytest.raises(HarnessError, match="not a callable"):
        _load(f"{src}:NOT_CALLABLE", tmp_path)
    with pytest.raises(HarnessError, match="not a callable"):
        _load(f"{src}:missing_factory", tmp_path)


def test_custom_missing_file_or_module(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="does not exist"):
        _load(f"{tmp_path / 'nowhere.py'}:make", tmp_path)
    with pytest.raises(HarnessError, match="cannot import"):
        _load("pq_no_such_module_anywhere:make", tmp_path)


def test_custom_file_that_fails_to_import(tmp_path: Path) -> None:
    src = tmp_path / "broken.py"
    src.write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(HarnessError, match="boom at import"):
        _load(f"{src}:make", tmp_path)


# --------------------------------------------------------------------------- transform parts (uint8 + normalise)


def test_every_built_transform_splits_into_uint8_and_normalise(tmp_path: Path) -> None:
    from harness.data.preprocess import split_transform

    src = tmp_path / "mynets.py"
    src.write_text(_FACTORY_SOURCE)
    gen = torch.Generator().manual_seed(1)
    img = Image.fromarray(torch.randint(0, 256, (211, 333, 3), generator=gen, dtype=torch.uint8).numpy())
    for name in ("tinycnn", "inception_v3", f"{src}:make_small"):
        loaded = _load(name, tmp_path)
        parts = split_transform(loaded.transform)
        assert parts is not None, name
        u8 = parts.to_uint8(img)
        assert u8.dtype == torch.uint8 and tuple(u8.shape) == loaded.input_shape, name
        assert torch.equal(parts.normalize(u8.unsqueeze(0))[0], loaded.transform(img)), name
