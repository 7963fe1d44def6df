"""INT8 calibration on CPU: calibration set, Q/DQ model, TensorRT EP table, provenance caches.

Real ONNX Runtime throughout (CPU provider); a tiny CNN trained for a few seconds
on synthetic PNG images laid out as ``<root>/train/<cls>/`` and ``<root>/val/<cls>/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms  # noqa: E402

from backends.base import PhaseTimes  # noqa: E402
from calib import (  # noqa: E402
    CalibrationData,
    CalibrationSet,
    Provenance,
    build_calibration_artifacts,
    count_qdq_nodes,
    file_list_hash,
    read_table_entries,
    select_calibration_files,
)
from calib.calibset import dataset_root_of  # noqa: E402
from calib.provenance import (  # noqa: E402
    load_if_matching,
    sidecar_path,
    validate_onnx,
    write_with_provenance,
)
from harness.errors import HarnessError  # noqa: E402
from harness.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx  # noqa: E402
from harness.store.fingerprint import model_content_hash  # noqa: E402

NUM_CLASSES = 10
TRAIN_PER_CLASS = 6
VAL_PER_CLASS = 3
SIDE = 32
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def eval_transform() -> transforms.Compose:
    return transforms.Compose([transforms.Resize(SIDE), transforms.CenterCrop(SIDE), transforms.ToTensor(),
                               transforms.Normalize(MEAN, STD)])


def _image(label: int, rng: np.random.Generator) -> Image.Image:
    """A class-dependent pattern: a colour and a stripe orientation/frequency, plus noise."""
    side = SIDE + 8  # the transform resizes, as evaluation does
    yy, xx = np.mgrid[0:side, 0:side] / side
    angle = np.pi * label / NUM_CLASSES
    freq = 2 + label % 3
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    colour = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256]) / 255.0
    img = 0.6 * stripes[..., None] * colour + 0.3 * stripes[..., None] + 0.1 * rng.random((side, side, 3))
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")


def _samples(root: Path, split: str) -> list[tuple[Path, int]]:
    out = []
    for label in range(NUM_CLASSES):
        out += [(p, label) for p in sorted((root / split / f"c{label}").glob("*.png"))]
    return out


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for label in range(NUM_CLASSES):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                _image(label, rng).save(folder / f"{split}_{label}_{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def model(dataset: Path) -> TinyCNN:
    """The tiny CNN, trained briefly so that its logits mean something."""
    torch.manual_seed(0)
    net = TinyCNN()
    tf = eval_transform()
    samples = _samples(dataset, "train")
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p, _ in samples])
    y = torch.tensor([label for _, label in samples])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    try:
        for _ in range(40):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


@pytest.fixture(scope="module")
def fp32_onnx(model: TinyCNN, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("onnx-cache")
    return export_onnx(model, (3, SIDE, SIDE), content_hash=model_content_hash(model), cache_dir=cache,
                       name="tiny").path


@pytest.fixture(scope="module")
def val_batch(dataset: Path) -> np.ndarray:
    tf = eval_transform()
    return torch.stack([tf(Image.open(p).convert("RGB")) for p, _ in _samples(dataset, "val")]).numpy()


def _calib_set(dataset: Path, *, count: int = 24, seed: int = 0) -> CalibrationSet:
    return CalibrationSet.select(_samples(dataset, "train"), count=count, seed=seed,
                                 exclude=[p for p, _ in _samples(dataset, "val")])


def _data(fp32: Path, calib_set: CalibrationSet, cache: Path, method: str = "entropy",
          phases: PhaseTimes | None = None) -> CalibrationData:
    return CalibrationData(lambda: fp32, calib_set, eval_transform(), method, cache, phases or PhaseTimes(),
                           ort_batch_size=8)


def _cpu_session(path: Path, *, reference: bool = False) -> ort.InferenceSession:
    """ONNX Runtime on CPU; ``reference``: no graph optimisation, i.e. the Q/DQ model's exact arithmetic
    (DequantizeLinear -> float op -> QuantizeLinear), which is what TensorRT's explicit INT8 implements."""
    options = ort.SessionOptions()
    if reference:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]
    return session


# -- calibration set ----------------------------------------------------------------------------


def test_calibration_set_is_train_only(dataset: Path) -> None:
    train, val = _samples(dataset, "train"), _samples(dataset, "val")
    chosen = select_calibration_files(train, count=40, seed=0, exclude=[p for p, _ in val])
    assert len(chosen) == 40
    val_paths = {p.resolve() for p, _ in val}
    assert not any(p.resolve() in val_paths for p, _ in chosen)
    assert all(p.relative_to(dataset).parts[0] == "train" for p, _ in chosen)

    # Asked to include evaluation files: refused, whether listed in exclude or lying under val/.
    with pytest.raises(HarnessError, match="evaluation"):
        select_calibration_files(train + val[:1], count=10, exclude=[p for p, _ in val])
    with pytest.raises(HarnessError, match="evaluation"):
        select_calibration_files(train + val[:1], count=10, root=dataset)
    with pytest.raises(HarnessError, match="evaluation"):
        select_calibration_files(train, count=10, exclude=[train[3][0]])  # an eval list overlapping train


def test_calibration_set_is_deterministic_per_seed(dataset: Path) -> None:
    train = _samples(dataset, "train")
    a = select_calibration_files(train, count=20, seed=0)
    b = select_calibration_files(list(reversed(train)), count=20, seed=0)  # input order does not matter
    c = select_calibration_files(train, count=20, seed=1)
    assert a == b
    assert a != c
    rel = [p.relative_to(dataset).as_posix() for p, _ in a]
    assert rel == sorted(rel)
    assert file_list_hash(a, dataset) == file_list_hash(b, dataset) != file_list_hash(c, dataset)
    assert dataset_root_of(train) == dataset

    cs = _calib_set(dataset, count=20, seed=0)
    assert list(cs.files) == a and cs.count == 20 and cs.file_list_hash == file_list_hash(a, dataset)
    assert cs.relative_paths() == rel


def test_count_larger_than_split_uses_all(dataset: Path) -> None:
    cs = _calib_set(dataset, count=10_000)
    assert cs.count == NUM_CLASSES * TRAIN_PER_CLASS
    assert cs.requested_count == 10_000 and cs.notes and "all used" in cs.notes[0]


def test_batches_are_preprocessed_like_evaluation(dataset: Path) -> None:
    cs = _calib_set(dataset, count=21)
    tf = eval_transform()
    batches = list(cs.batches(tf, 8))
    assert [b.shape[0] for b in batches] == [8, 8, 5]  # last partial batch kept (ORT)
    assert all(b.dtype == torch.float32 and b.shape[1:] == (3, SIDE, SIDE) for b in batches)
    first = tf(Image.open(cs.files[0][0]).convert("RGB"))
    assert torch.equal(batches[0][0], first)
    last = tf(Image.open(cs.files[-1][0]).convert("RGB"))
    assert torch.equal(batches[-1][-1], last)
    full = list(cs.batches(tf, 8, full_batches_only=True))  # TensorRT: one fixed batch size
    assert [b.shape[0] for b in full] == [8, 8]
    assert cs.num_batches(8) == 3 and cs.num_batches(8, full_batches_only=True) == 2
    with pytest.raises(HarnessError, match="no full batch"):
        next(cs.batches(tf, 64, full_batches_only=True))


# -- Q/DQ model and TensorRT EP table -----------------------------------------------------------


def test_qdq_model_runs_on_cpu_and_matches_fp32(dataset: Path, fp32_onnx: Path, val_batch: np.ndarray,
                                                tmp_path: Path) -> None:
    data = _data(fp32_onnx, _calib_set(dataset, count=40), tmp_path)
    ref = _cpu_session(fp32_onnx).run([OUTPUT_NAME], {INPUT_NAME: val_batch})[0]
    assert (ref.argmax(1) == np.repeat(np.arange(NUM_CLASSES), VAL_PER_CLASS)).mean() >= 0.8  # the model learnt

    for target in ("cpu", "tensorrt"):
        path = data.qdq_onnx(target)
        assert path.parent == tmp_path / "calib" and path.exists()
        counts = count_qdq_nodes(path)
        assert counts["QuantizeLinear"] >= 3 and counts["DequantizeLinear"] >= 4
        session = _cpu_session(path)
        assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch survives quantisation
        fused = session.run([OUTPUT_NAME], {INPUT_NAME: val_batch})[0]
        assert (fused.argmax(1) == ref.argmax(1)).mean() >= 0.9, target
        # The cpu flavour is judged as the CPU EP runs it (fused int8 kernels).  The tensorrt flavour is
        # judged by its Q/DQ arithmetic: ORT's fused x86 kernels without VNNI saturate int16 pair sums
        # (VPMADDUBSW) with its full 8-bit weights, an ORT-CPU artefact TensorRT (int32 accumulation) lacks.
        out = fused if target == "cpu" else _cpu_session(path, reference=True).run(
            [OUTPUT_NAME], {INPUT_NAME: val_batch})[0]
        agreement = (out.argmax(1) == ref.argmax(1)).mean()
        assert agreement >= 0.9, (target, agreement)
        # Entropy calibration clips the largest logits on purpose; the logit vectors stay aligned.
        cosine = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
        assert cosine.min() >= 0.97, (target, cosine.min())
        assert np.median(np.abs(out - ref)) <= 0.05 * np.abs(ref).max(), target
        one = session.run([OUTPUT_NAME], {INPUT_NAME: val_batch[:1]})[0]  # other batch sizes run too
        assert one.shape == (1, NUM_CLASSES)

    # The tensorrt flavour: int8 activations with zero point 0, float biases (no int32 DequantizeLinear).
    trt_model = onnx.load(str(data.qdq_onnx("tensorrt")))
    inits = {i.name: numpy_helper.to_array(i) for i in trt_model.graph.initializer}
    for node in trt_model.graph.node:
        if node.op_type == "QuantizeLinear":
            zero_point = inits[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any()
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            assert inits[node.input[0]].dtype == np.int8
    cpu_model = onnx.load(str(data.qdq_onnx("cpu")))
    cpu_inits = {i.name: numpy_helper.to_array(i) for i in cpu_model.graph.initializer}
    q_types = {cpu_inits[n.input[2]].dtype for n in cpu_model.graph.node if n.op_type == "QuantizeLinear"}
    assert q_types == {np.dtype(np.uint8)}
    assert data.builds == {"qdq-cpu": 1, "qdq-tensorrt": 1}


def test_trt_table_written(dataset: Path, fp32_onnx: Path, tmp_path: Path) -> None:
    import os

    data = _data(fp32_onnx, _calib_set(dataset), tmp_path)
    engine_cache = tmp_path / "engines"
    old_umask = os.umask(0o022)
    try:
        table = data.ort_trt_table(engine_cache)
    finally:
        os.umask(old_umask)
    for written in (table, engine_cache / "calibration.cache", sidecar_path(table)):
        assert written.stat().st_mode & 0o777 == 0o644, written  # the umask, not mkstemp's 0600
    assert table == engine_cache / "calibration.flatbuffers"
    assert table.stat().st_size > 0
    assert (engine_cache / "calibration.cache").stat().st_size > 0
    assert (engine_cache / "calibration.json").exists()
    assert sidecar_path(table).exists()
    entries = read_table_entries(table)
    fp32_tensors = {o for n in onnx.load(str(fp32_onnx)).graph.node for o in n.output}
    assert INPUT_NAME in entries and OUTPUT_NAME in entries
    assert set(entries) <= fp32_tensors | {INPUT_NAME}  # names of the unmodified fp32 model
    assert all(v > 0 for v in entries.values())
    assert not [p for p in engine_cache.iterdir() if p.name.startswith("calib-table.")]  # temp dir gone
    assert data.ort_trt_table(engine_cache) == table and data.builds == {"ort-trt-table": 1}  # memoised


# -- provenance ---------------------------------------------------------------------------------


def test_provenance_reuse_and_staleness(dataset: Path, fp32_onnx: Path, tmp_path: Path) -> None:
    phases = PhaseTimes()
    first = _data(fp32_onnx, _calib_set(dataset, seed=0), tmp_path, phases=phases)
    qdq = first.qdq_onnx("cpu")
    table = first.ort_trt_table(tmp_path / "engines")
    assert first.builds == {"qdq-cpu": 1, "ort-trt-table": 1} and phases.seconds["calibrate"] > 0
    mtime = qdq.stat().st_mtime_ns

    # Same everything: reused, nothing built, no calibrate time.
    reuse_phases = PhaseTimes()
    same = _data(fp32_onnx, _calib_set(dataset, seed=0), tmp_path, phases=reuse_phases)
    assert same.qdq_onnx("cpu") == qdq and same.ort_trt_table(tmp_path / "engines") == table
    assert same.builds == {} and "calibrate" not in reuse_phases.seconds
    assert qdq.stat().st_mtime_ns == mtime
    assert same.provenance_hash == first.provenance_hash

    # Another file list (seed): same artifact names, stale sidecars -> rebuilt in place.
    other_files = _data(fp32_onnx, _calib_set(dataset, seed=1), tmp_path)
    assert other_files.provenance_hash != first.provenance_hash
    assert other_files.qdq_onnx("cpu") == qdq and other_files.ort_trt_table(tmp_path / "engines") == table
    assert other_files.builds == {"qdq-cpu": 1, "ort-trt-table": 1}
    side = json.loads(sidecar_path(qdq).read_text())
    assert side["provenance"]["calib_file_list_hash"] == _calib_set(dataset, seed=1).file_list_hash

    # Another method: rebuilt (its own Q/DQ file; the table is stale and rebuilt).
    minmax = _data(fp32_onnx, _calib_set(dataset, seed=1), tmp_path, method="minmax")
    assert minmax.qdq_onnx("cpu") != qdq and minmax.ort_trt_table(tmp_path / "engines") == table
    assert minmax.builds == {"qdq-cpu": 1, "ort-trt-table": 1}
    assert json.loads(sidecar_path(table).read_text())["provenance"]["method"] == "minmax"

    # The first provenance is now stale for the shared table: rebuilt, never reused.
    again = _data(fp32_onnx, _calib_set(dataset, seed=0), tmp_path)
    again.ort_trt_table(tmp_path / "engines")
    assert again.builds == {"ort-trt-table": 1}


def test_excluded_nodes_are_part_of_the_qdq_cache_key(dataset: Path, fp32_onnx: Path, tmp_path: Path) -> None:
    convs = [n.name for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type == "Conv"]
    first = _data(fp32_onnx, _calib_set(dataset), tmp_path, method="minmax")
    plain = first.qdq_onnx("cpu")
    kept = first.qdq_onnx("cpu", exclude_nodes=[convs[-1]])
    assert kept != plain and plain.exists() and kept.exists()
    assert first.builds == {"qdq-cpu": 2}
    # Order and repeats do not matter; the default provenance has no exclusion key (old caches still match).
    assert first.qdq_path("cpu", [convs[-1], convs[-1]]) == kept
    assert "exclude_nodes" not in first.qdq_provenance("cpu").options
    assert first.qdq_provenance("cpu", [convs[-1]]).options["exclude_nodes"] == [convs[-1]]
    assert json.loads(sidecar_path(kept).read_text())["provenance"]["options"]["exclude_nodes"] == [convs[-1]]
    assert json.loads(sidecar_path(plain).read_text())["provenance"]["options"].get("exclude_nodes") is None
    # A second object reuses both; the excluded Conv keeps its float weight only in its own model.
    again = _data(fp32_onnx, _calib_set(dataset), tmp_path, method="minmax")
    assert again.qdq_onnx("cpu") == plain and again.qdq_onnx("cpu", exclude_nodes=(convs[-1],)) == kept
    assert again.builds == {}

    def float_weight(path: Path) -> bool:
        graph = onnx.load(str(path)).graph
        made_by = {o: n.op_type for n in graph.node for o in n.output}
        conv = next(n for n in graph.node if n.name == convs[-1])
        return made_by.get(conv.input[1]) != "DequantizeLinear"

    assert float_weight(kept) and not float_weight(plain)


def test_corrupt_cache_is_rebuilt(dataset: Path, fp32_onnx: Path, tmp_path: Path) -> None:
    """Issue 9: a damaged Q/DQ model, sidecar or EP table is rebuilt with a one-line note, never refused."""
    data = _data(fp32_onnx, _calib_set(dataset), tmp_path, method="minmax")
    qdq = data.qdq_onnx("cpu")
    good = qdq.read_bytes()

    def reload(**kwargs) -> tuple[CalibrationData, list[str]]:
        fresh = _data(fp32_onnx, _calib_set(dataset), tmp_path, method="minmax")
        before = len(fresh.notes)
        fresh.qdq_onnx("cpu", **kwargs)  # the source records the rebuild note instead of warning
        return fresh, fresh.notes[before:]

    qdq.write_bytes(good[: len(good) // 2])  # truncated: the fault reproduced first
    with pytest.raises(Exception):
        validate_onnx(qdq)
    fresh, notes = reload()
    assert fresh.builds == {"qdq-cpu": 1} and len(notes) == 1
    assert "corrupt" in notes[0] and str(qdq) in notes[0] and "rebuilding" in notes[0] and "\n" not in notes[0]
    validate_onnx(qdq)
    assert load_if_matching(qdq, fresh.qdq_provenance("cpu")) == qdq  # intact again, sidecar matches

    side = sidecar_path(qdq)
    side.write_text(side.read_text()[:40])  # garbled sidecar
    fresh, notes = reload()
    assert fresh.builds == {"qdq-cpu": 1} and "unreadable provenance sidecar" in notes[0]
    validate_onnx(qdq)

    # A sidecar that matches an unparsable ONNX (sha recorded after the damage): removed, None, note recorded.
    prov = fresh.qdq_provenance("cpu")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"\x08\x07garbage-not-a-model" * 10)
    write_with_provenance(bogus, prov)
    recorded: list[str] = []
    assert load_if_matching(bogus, prov, validate=validate_onnx, on_rebuild=recorded.append) is None
    assert len(recorded) == 1 and "corrupt" in recorded[0] and not bogus.exists() and not sidecar_path(bogus).exists()

    # The table: one byte appended -> rebuilt, and the rebuilt table is the original one.
    table = data.ort_trt_table(tmp_path / "engines")
    entries = read_table_entries(table)
    with table.open("ab") as fh:
        fh.write(b"x")
    again = _data(fp32_onnx, _calib_set(dataset), tmp_path, method="minmax")
    assert again.ort_trt_table(tmp_path / "engines") == table
    assert any("corrupt" in note for note in again.notes)
    assert again.builds == {"ort-trt-table": 1} and read_table_entries(table) == entries


def test_provenance_record() -> None:
    prov = Provenance(artifact_kind="ort-qdq-onnx", model_hash="ab" * 32, calib_file_list_hash="cd" * 32,
                      method="Entropy", count=512, seed=0, versions={"onnxruntime": "1.0", "onnx": "1.1"},
                      options={"target": "cpu", "shape": (3, 32, 32)})
    assert prov.method == "entropy"
    # The calibration identity defaults to the method's settings: TensorRT's 2048-bin entropy search.
    assert prov.calibration == {"method": "entropy", "algorithm": "tensorrt-entropy-kl", "histogram": "abs",
                                "num_bins": 2048, "num_quantized_bins": 128}
    assert prov.replace(method="percentile").calibration["percentile"] == 99.999
    assert prov.replace(method="minmax").calibration == {"method": "minmax", "algorithm": "max-abs"}
    assert Provenance.from_json(prov.to_json()) == prov
    assert Provenance.from_json(prov.to_json()).key() == prov.key() and len(prov.key()) == 16
    for change in ({"method": "minmax"}, {"seed": 1}, {"count": 500}, {"calib_file_list_hash": "ef" * 32},
                   {"versions": {"onnxruntime": "1.2", "onnx": "1.1"}}, {"model_hash": "00" * 32},
                   {"artifact_kind": "ort-trt-table"}, {"options": {"target": "tensorrt"}},
                   {"calibration": {**prov.calibration, "num_bins": 4096}}):
        assert prov.replace(**change) != prov and prov.replace(**change).key() != prov.key()
    with pytest.raises(HarnessError, match="calibration method"):
        Provenance(artifact_kind="x", model_hash="", calib_file_list_hash="", method="noise", count=1, seed=0)
    with pytest.raises(ValueError):
        Provenance.from_json("{}")


def test_build_calibration_artifacts(dataset: Path, fp32_onnx: Path, tmp_path: Path) -> None:
    kwargs = dict(transform=eval_transform(), cache_dir=tmp_path, eval_samples=_samples(dataset, "val"),
                  method="percentile", count=16, seed=3, ort_batch_size=8)
    first = build_calibration_artifacts(fp32_onnx, _samples(dataset, "train"), **kwargs)
    assert set(first.qdq_onnx) == {"cpu", "tensorrt"} and all(p.exists() for p in first.qdq_onnx.values())
    assert first.trt_table is not None and first.trt_table.name == "calibration.flatbuffers"
    assert first.calib_files == 16 and first.provenance["method"] == "percentile" and first.seconds > 0
    assert first.built == {"qdq-cpu": 1, "qdq-tensorrt": 1, "ort-trt-table": 1}
    json.dumps(first.to_dict())
    second = build_calibration_artifacts(fp32_onnx, _samples(dataset, "train"), **kwargs)
    assert second.built == {} and second.qdq_onnx == first.qdq_onnx and second.trt_table == first.trt_table
    assert second.provenance_hash == first.provenance_hash
    with pytest.raises(HarnessError, match="evaluation"):
        build_calibration_artifacts(fp32_onnx, _samples(dataset, "train") + _samples(dataset, "val"), **kwargs)



# -- calibration parity ------------------------------------------------------------------------


def _activation_scales(path: Path) -> dict[str, float]:
    """Scale of each activation QuantizeLinear (input name -> scale) of a Q/DQ model."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].size == 1}


def test_entropy_threshold_searches_and_clips_outliers() -> None:
    from calib.ort_table import entropy_threshold

    rng = np.random.default_rng(0)
    values = np.abs(np.concatenate([rng.normal(0, 1, 200_000), [60.0]]))  # one far outlier
    hist, edges = np.histogram(values, bins=2048, range=(0, values.max()))
    t = entropy_threshold(hist, edges)
    assert 2.0 < t < 10.0, t  # clips the outlier, keeps the bulk of the Gaussian
    # A distribution without outliers keeps (almost) its full range.
    flat, flat_edges = np.histogram(rng.uniform(0, 1, 200_000), bins=2048, range=(0, 1))
    assert entropy_threshold(flat, flat_edges) > 0.9
    # 128 bins searched with 128 quantized bins: a single candidate, the full range (ORT's default = max-abs).
    small, small_edges = np.histogram(values, bins=128, range=(0, values.max()))
    assert entropy_threshold(small, small_edges) == pytest.approx(values.max())


def _reference_entropy_amax(hist, edges, q=128):
    """Straight port of NVIDIA pytorch-quantization _compute_amax_entropy (stride 1, start 128)."""
    from collections import Counter

    bins = np.asarray(hist, dtype=np.float64).copy(); bins[0] = bins[1]
    total = bins.sum(); divs = []
    for i in range(q, len(bins) + 1):
        space = np.linspace(0, i, num=q + 1)
        dig = np.digitize(range(i), space) - 1
        dig[bins[:i] == 0] = -1
        dens = np.zeros(q)
        for idx, d in enumerate(dig):
            if d != -1: dens[d] += bins[idx]
        for k, v in Counter(dig).items():
            if k != -1: dens[k] /= v
        new = np.zeros(i)
        for idx, d in enumerate(dig):
            if d != -1: new[idx] = dens[d]
        ref = bins[:i].copy(); ref[-1] += bins[i:].sum()
        p = ref / ref.sum(); qq = new / new.sum() if new.sum() > 0 else new
        sup = p > 0
        divs.append(np.inf if np.any(qq[sup] == 0) else float(np.sum(p[sup] * np.log(p[sup] / qq[sup]))))
    divs = np.array(divs); best = len(divs) - 1 - np.argmin(divs[::-1])
    return float(edges[best + q])


@pytest.mark.parametrize("case", range(4))
def test_entropy_threshold_equals_tensorrt_reference_algorithm(case: int) -> None:
    """The vectorised search returns exactly what a literal port of NVIDIA's loop returns."""
    from calib.ort_table import entropy_threshold

    rng = np.random.default_rng(case)
    values = np.abs(np.concatenate([rng.normal(0, 1 + case, 20_000), rng.exponential(3, 400 * case), [40.0]]))
    if case == 3:
        values = np.maximum(values - 1, 0)  # a ReLU-like spike of exact zeros
    hist, edges = np.histogram(values, bins=(300, 450, 600, 700)[case])
    assert entropy_threshold(hist, edges) == _reference_entropy_amax(hist, edges)


def test_entropy_differs_from_minmax_for_table_and_qdq(dataset: Path, fp32_onnx: Path, tmp_path: Path) -> None:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from calib.ort_qdq import make_reader
    from calib.ort_table import compute_tensor_ranges, tensor_thresholds

    calib_set = _calib_set(dataset, count=40)
    batches = [b.numpy() for b in calib_set.batches(eval_transform(), 8)]
    ranges = {}
    for method in ("minmax", "entropy", "percentile"):
        ranges[method] = tensor_thresholds(compute_tensor_ranges(
            fp32_onnx, lambda: iter(batches), method, num_batches=len(batches), work_dir=tmp_path))
    assert set(ranges["entropy"]) == set(ranges["minmax"])
    clipped = [k for k in ranges["minmax"] if ranges["entropy"][k] < 0.98 * ranges["minmax"][k]]
    assert len(clipped) >= len(ranges["minmax"]) // 3, (ranges["entropy"], ranges["minmax"])
    assert all(ranges["entropy"][k] <= ranges["minmax"][k] * (1 + 1e-6) for k in ranges["minmax"])
    assert ranges["percentile"] != ranges["minmax"]

    # The bug being fixed: ONNX Runtime's entropy calibrator with its defaults (128 bins, 128 quantized
    # bins; one collect_data, so the histogram does not grow) returns exactly the minmax thresholds.
    held = np.concatenate(batches)
    calibrator = create_calibrator(fp32_onnx, None, augmented_model_path=str(tmp_path / "aug.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy, extra_options={"symmetric": True})
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator.collect_data(make_reader(lambda: iter([held]), 1))
        default = tensor_thresholds(calibrator.compute_data())
    assert default == pytest.approx(ranges["minmax"], rel=1e-5)
    assert ranges["entropy"] != pytest.approx(default, rel=1e-3)

    # The TensorRT EP table and the Q/DQ model both carry the clipped thresholds.
    tables = {m: read_table_entries(_data(fp32_onnx, calib_set, tmp_path / m, method=m).ort_trt_table(
        tmp_path / m / "engines")) for m in ("minmax", "entropy")}
    assert tables["entropy"] == pytest.approx(ranges["entropy"], rel=1e-5)
    assert tables["minmax"] == pytest.approx(ranges["minmax"], rel=1e-5)
    scales = {m: _activation_scales(_data(fp32_onnx, calib_set, tmp_path / m, method=m).qdq_onnx("tensorrt"))
              for m in ("minmax", "entropy")}
    shared = set(scales["minmax"]) & set(scales["entropy"])
    assert shared
    smaller = [k for k in shared if scales["entropy"][k] < 0.98 * scales["minmax"][k]]
    assert len(smaller) >= len(shared) // 3, (scales,)
    side = json.loads(sidecar_path(_data(fp32_onnx, calib_set, tmp_path / "entropy").qdq_path("tensorrt")
                                   ).read_text())
    assert side["provenance"]["calibration"]["num_bins"] == 2048
