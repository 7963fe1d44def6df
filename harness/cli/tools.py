"""Everything around a sweep: ``models``, ``datasets``, ``data fetch|list``, ``calib``, ``hw``, ``selftest``,
``sensitivity``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from harness.cli.common import _guard, app, console, data_app
from harness.errors import HarnessError


@app.command()
def models() -> None:
    """List the models: tinycnn, every torchvision classifier, and the custom-factory syntax.

    Example: `harness models`, then `harness run --model mobilenet_v3_small --weights random`
    """
    from harness.models import list_models

    table = Table(title="models")
    table.add_column("name")
    for name in list_models():
        table.add_row(name)
    console.print(table)
    console.print("custom: --model path/to/file.py:factory or --model package.module:factory")


@app.command()
def datasets() -> None:
    """List the datasets and whether they need a download.

    Example: `harness datasets`, then `harness data fetch imagewoof --size 160`
    """
    from harness.data.registry import list_datasets

    table = Table(title="datasets")
    for col in ("name", "classes", "ImageNet map", "download", "description"):
        table.add_column(col)
    for info in list_datasets():
        table.add_row(info.name, str(info.num_classes or "any"), "yes" if info.imagenet_indices else "-",
                      "harness data fetch " + info.name if info.needs_download else "-", info.description)
    console.print(table)


@data_app.command("fetch")
def data_fetch(
    name: str = typer.Argument(..., help="imagenette or imagewoof"),
    size: str = typer.Option("160", "--size", help="160 | 320 | full"),
    data_root: Path = typer.Option(Path("data"), "--data-root", envvar="HARNESS_DATA_ROOT"),
) -> None:
    """Download, verify and extract a dataset. Example: `harness data fetch imagenette --size 160`."""
    from harness.data.fetch import fetch_dataset

    def go() -> None:
        with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task(f"downloading {name} ({size})", total=None)

            def report(done: int, total: int | None) -> None:
                progress.update(task, completed=done, total=total)

            path = fetch_dataset(name, size, data_root, progress=report)
        console.print(f"{name} ready at {path}")

    _guard(go)


@data_app.command("list")
def data_list() -> None:
    """Same as `harness datasets`. Example: `harness data list`"""
    datasets()


@app.command()
def calib(
    model: str = typer.Option("tinycnn", "--model", "-m", help="Model whose fp32 ONNX is calibrated."),
    dataset: str = typer.Option("shapes", "--dataset", "-d", help="Dataset whose train split is sampled."),
    method: str = typer.Option("entropy", "--method", help="entropy | minmax | percentile"),
    count: int = typer.Option(512, "--count", help="Calibration images (seeded sample of the train split)."),
    seed: int = typer.Option(0, "--seed"),
    weights: str = typer.Option("pretrained", "--weights", help="pretrained | random"),
    data_root: Path = typer.Option(Path("data"), "--data-root", envvar="HARNESS_DATA_ROOT"),
    cache_dir: Path = typer.Option(Path(".harness-cache"), "--cache-dir", envvar="HARNESS_CACHE_DIR"),
    dataset_size: str = typer.Option(None, "--dataset-size", help="160 | 320 | full"),
    rebuild: bool = typer.Option(False, "--rebuild-calib", help="Rebuild even when a matching cache exists."),
) -> None:
    """Build INT8 calibration artifacts on demand (sweeps build them when needed).

    Writes the Q/DQ INT8 ONNX models (CPU and TensorRT flavours) and the TensorRT EP calibration table, each
    with a provenance record. Example: `harness calib --model resnet18 --dataset imagenette --count 512`
    """
    from calib import build_calibration_artifacts
    from harness.data.registry import open_split
    from harness.models import load_model
    from harness.onnx_export import export_onnx
    from harness.store.fingerprint import model_content_hash

    def go() -> None:
        loaded = load_model(model, weights=weights, cache_dir=cache_dir, data_root=data_root)
        train = open_split(dataset, "train", data_root=data_root, cache_dir=cache_dir, size=dataset_size)
        val = open_split(dataset, "val", data_root=data_root, cache_dir=cache_dir, size=dataset_size)
        onnx = export_onnx(loaded.module, loaded.input_shape, content_hash=model_content_hash(loaded.module),
                           cache_dir=cache_dir, name=loaded.name)
        with console.status(f"calibrating {model} on {count} {dataset} train images ({method})"):
            result = build_calibration_artifacts(
                onnx.path, train.samples, transform=loaded.transform, cache_dir=cache_dir,
                eval_samples=val.samples, method=method, count=count, seed=seed, rebuild=rebuild)
        info = result.to_dict()
        table = Table(title=f"calibration artifacts ({info['seconds']:.1f} s)")
        table.add_column("artifact")
        table.add_column("path")
        for target, path in info["qdq_onnx"].items():
            table.add_row(f"Q/DQ ONNX ({target})", path)
        table.add_row("TensorRT EP table", str(info["trt_table"]))
        console.print(table)
        console.print(f"provenance {info['provenance_hash']}: {json.dumps(info['provenance'], default=str)}",
                      highlight=False)

    _guard(go)


@app.command()
def hw(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")) -> None:
    """Hardware capability report: GPUs, tensor-core precisions, libraries, usable backends.

    Examples: `harness hw`, `harness hw --json > hw.json`, `docker compose run hw`
    """
    from harness.hw import collect_hw_report, render_hw_report

    def go() -> None:
        report = collect_hw_report()
        if as_json:
            sys.stdout.write(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        else:
            render_hw_report(report, console)

    _guard(go)


@app.command()
def selftest(as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON.")) -> None:
    """Prove the GPU paths work here: torch CUDA, NVML, TensorRT (build, run, compare with torch),
    ONNX Runtime's CUDA and TensorRT EPs (active, compared with torch). One line per check; exits
    non-zero at the first failure (the rest are listed as not run). A check of what this machine does
    not ship (the ONNX Runtime GPU checks beside TensorRT 11 without them: the trt11 image) is skipped
    with the reason and does not fail.

    Examples: `harness selftest`, `harness selftest --json`
    """
    from harness.selftest import default_checks, run_checks

    results = run_checks(default_checks())
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    else:
        for r in results:
            style = {"ok": "green", "FAIL": "bold red", "skipped": "yellow"}.get(r.status, "dim")
            console.print(Text.assemble((f"{r.status:<8}", style), f"{r.name:<30} ", r.detail), soft_wrap=True)
    if any(r.status == "FAIL" for r in results):
        raise typer.Exit(1)


@app.command()
def sensitivity(
    model: str = typer.Option("tinycnn", "--model", "-m", help="Model whose INT8 Q/DQ nodes are scored."),
    dataset: str = typer.Option("shapes", "--dataset", "-d", help="Dataset whose train split is used."),
    backend: str = typer.Option("ort-cpu", "--backend", "-b", help="ort-cpu | ort-cuda | ort-trt | trt-native "
                                "(the Q/DQ flavour it runs; scored on this machine's CPU)."),
    precision: str = typer.Option("int8", "--precision", "-p", help="int8 | fp8 (E4M3; ort-cpu or trt-native)"),
    only_quantized: bool = typer.Option(False, "--only-quantized", help="Quantize one node at a time instead of "
                                        "leaving one node at a time in FP32."),
    max_accuracy_drop: float = typer.Option(None, "--max-accuracy-drop", help="Also find the fewest nodes to "
                                            "leave in FP32 for this budget (points)."),
    method: str = typer.Option("entropy", "--method", help="entropy | minmax | percentile"),
    count: int = typer.Option(512, "--count", help="Calibration images (seeded sample of the train split)."),
    holdout: int = typer.Option(500, "--holdout", help="Held-out train images (not calibration images) scored."),
    seed: int = typer.Option(0, "--seed"),
    weights: str = typer.Option("pretrained", "--weights", help="pretrained | random"),
    data_root: Path = typer.Option(Path("data"), "--data-root", envvar="HARNESS_DATA_ROOT"),
    cache_dir: Path = typer.Option(Path(".harness-cache"), "--cache-dir", envvar="HARNESS_CACHE_DIR"),
    dataset_size: str = typer.Option(None, "--dataset-size", help="160 | 320 | full"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Per-node INT8 (or FP8) sensitivity: accuracy, top-1 agreement and logit SNR against FP32 with one node left
    in FP32 (or only one quantized), most harmful first, on held-out train images (never the evaluation split).

    Example: `harness sensitivity --model tinycnn --dataset shapes --max-accuracy-drop 0.5`
    """
    from calib.sensitivity import analyse, target_for_backend
    from harness.data.registry import open_split
    from harness.models import load_model
    from harness.onnx_export import export_onnx
    from harness.store.fingerprint import model_content_hash

    def go() -> None:
        target = target_for_backend(backend, precision)
        label = precision.upper()
        loaded = load_model(model, weights=weights, cache_dir=cache_dir, data_root=data_root)
        train = open_split(dataset, "train", data_root=data_root, cache_dir=cache_dir, size=dataset_size)
        val = open_split(dataset, "val", data_root=data_root, cache_dir=cache_dir, size=dataset_size)
        label_map = None
        if loaded.label_space == "imagenet":
            if train.imagenet_indices is None:
                raise HarnessError(f"{model} predicts ImageNet classes and {dataset} has no ImageNet index map "
                                   "(pass a class map), so accuracy cannot be scored")
            label_map = list(train.imagenet_indices)
        onnx = export_onnx(loaded.module, loaded.input_shape, content_hash=model_content_hash(loaded.module),
                           cache_dir=cache_dir, name=loaded.name)
        with console.status(f"scoring the {label} nodes of {model} ({backend} Q/DQ flavour)") as status:
            run = analyse(onnx.path, train, val, loaded.transform, method=method, count=count, seed=seed,
                          holdout_count=holdout, target=target, mode="int8-one" if only_quantized else "fp32-one",
                          label_map=label_map, max_drop_points=max_accuracy_drop,
                          on_node=lambda i, n, name: status.update(f"node {i + 1}/{n}: {name}"))
        if as_json:
            sys.stdout.write(json.dumps(run.to_dict(), indent=2, default=str) + "\n")
            return
        t = run.table
        table = Table(title=Text(f"{label} sensitivity of {model} on {t.samples} held-out {dataset} train images "
                                 f"({t.mode}: {'only this node quantized' if only_quantized else 'only this node in FP32'}"
                                 f"); FP32 {100 * t.fp32.accuracy:.2f} %, full {label} {100 * t.int8.accuracy:.2f} % "
                                 f"(SNR {t.int8.snr_db:.1f} dB)"))
        for col in ("rank", "node", "op", "top-1 %", "agreement", "SNR dB", "harm (points)"):
            table.add_column(col)
        for i, r in enumerate(t.rows, start=1):
            table.add_row(str(i), Text(r.node), r.op_type, f"{100 * r.accuracy:.2f}", f"{r.agreement:.4f}",
                          f"{r.snr_db:.1f}", f"{r.harm_points:.2f}")
        console.print(table)
        if run.mixed is not None:
            m = run.mixed
            verdict = "within" if m.within_budget else "NOT within"
            console.print(f"accuracy budget {m.budget_points:g} points: {verdict} it with {len(m.excluded)} node(s) "
                          f"in FP32 (drop {m.drop_points:.2f} points)", markup=False, highlight=False)
            for e in m.excluded:
                console.print(f"  {e['node']}: {e['reason']}", markup=False, highlight=False)

    _guard(go)
