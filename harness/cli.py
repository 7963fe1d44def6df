"""The `harness` command. It owns the console: library code never prints."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from backends import BACKEND_NAMES
from harness.errors import HarnessError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="PQ Harness: which pruning and quantization, on which backend, is fastest, "
                       "smallest and most accurate on this machine, and why.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: list and download.")
results_app = typer.Typer(no_args_is_help=True, help="Inspect and export stored results.")
app.add_typer(data_app, name="data")
app.add_typer(results_app, name="results")

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = 2) -> None:
    # The message is text, not markup: "pip install 'pq-harness[ray]'" keeps its brackets.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class _ProgressObserver:  # a harness.sweep.SweepObserver (not subclassed: keeps `--help` free of torch)
    """Renders the sweep: the current stage, and cells done/failed/left with a time estimate
    (harness.progress), the same for the local and the Ray executor."""

    def __init__(self, progress: Progress, task: Any) -> None:
        from harness.progress import SweepProgress

        self.progress, self.task = progress, task
        self.eval_task: Any = None
        self.counts = SweepProgress()

    def planned(self, cells: int, skipped: int) -> None:
        self.counts.start(cells, skipped)
        self.progress.update(self.task, total=cells, completed=skipped, counts=self.counts.line())

    def evaluated(self, done: int, total: int) -> None:
        if self.eval_task is None:
            self.eval_task = self.progress.add_task("evaluating (val images)", total=total, counts="")
        self.progress.update(self.eval_task, completed=done, total=total, visible=done < total)

    def stage(self, text: str) -> None:
        self.progress.update(self.task, description=text, counts=self.counts.line())

    def cell_done(self, outcome: Any) -> None:  # a harness.outcome.CellOutcome
        self.counts.cell_finished(outcome.status == "ok")
        self.progress.update(self.task, advance=1, counts=self.counts.line())
        if outcome.status == "error":
            self.progress.console.print(f"[red]failed[/] {outcome.identity.label}: {outcome.error}",
                                        highlight=False)


def _run_sweep(config_path: Path | None, overrides: dict[str, Any], resume: bool) -> None:
    from harness.config import load_config
    from harness.machine import probe_machine
    from harness.results import ResultStore, export_csv, export_json
    from harness.sweep import plan_cells, preflight, run_sweep

    config = load_config(config_path, overrides)
    if config.executor.kind == "ray":
        from harness.executors.ray_executor import import_ray

        import_ray()  # a missing Ray is a one-line error naming the extra, before any work
    facts = probe_machine()
    preflight(config, facts)
    out = Path(config.out_dir)
    cells = plan_cells(config)
    with ResultStore(out / "results.db") as store:
        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[counts]}"), console=console,
                            transient=False)
        with progress:
            task = progress.add_task("starting", total=len(cells), counts="")
            counts = run_sweep(config, store, _ProgressObserver(progress, task), resume=resume, facts=facts)
            progress.update(task, completed=len(cells), description="done")
        n_csv = export_csv(store, out / "results.csv")
        export_json(store, out / "results.json")
        _print_table(store)
    console.print(f"cells: {counts['ok']} ok, {counts['error']} failed, {counts['skipped']} skipped (resume); "
                  f"{n_csv} rows in {out / 'results.csv'}, database {out / 'results.db'}")
    if counts["error"]:
        raise typer.Exit(1)


def _print_table(store: Any) -> None:
    """One line per cell: median batch latency under both timing definitions, side by side."""
    from harness.results import flat_rows

    table = Table(title="results: median batch latency (compute = input already on the device; "
                        "e2e = host in, host out)")
    for col, justify in (("model", "left"), ("pruning", "left"), ("backend", "left"), ("batch", "right"),
                         ("top-1", "right"), ("compute ms", "right"), ("e2e ms", "right"), ("p99 ms", "right"),
                         ("img/s", "right"), ("MB", "right"), ("status", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for record in store.records():
        rows = {row.get("timing_definition"): row for row in flat_rows(record)}
        first = next(iter(rows.values()))
        compute, e2e = rows.get("compute", {}), rows.get("e2e", {})
        main = compute or e2e
        pruning = "-" if first["Pruner"] == "-" else f"{first['Pruner']} {first['Amount']:g}"
        table.add_row(
            first["Model"], pruning, f"{first['backend']} {first['precision']}", str(first["Batch Size"]),
            _fmt(first["Accuracy"], ".3f"), _fmt(compute.get("Inference Time (ms)"), ".3f"),
            _fmt(e2e.get("Inference Time (ms)"), ".3f"), _fmt(main.get("latency_p99_ms"), ".3f"),
            _fmt(main.get("throughput_ips"), ".0f"), _fmt(first["Compressed Size"], ".2f"),
            "ok" if first["status"] == "ok" else f"[red]{(first['error'] or '')[:80]}[/]",
        )
    console.print(table)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _guard(fn: Callable[[], None]) -> None:
    try:
        fn()
    except HarnessError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted; every finished cell is saved: rerun with --resume to go on", code=130)


@app.command()
def run(
    config: Path = typer.Option(None, "--config", "-c", help="Sweep config (YAML)."),
    backend: str = typer.Option(None, "--backend", "-b", help=" | ".join(BACKEND_NAMES)),
    precision: list[str] = typer.Option(None, "--precision", "-p", help="fp32 | fp16 | bf16 | int8 (repeatable)"),
    model: list[str] = typer.Option(None, "--model", "-m", help="Model name, file.py:factory or module:factory."),
    dataset: list[str] = typer.Option(None, "--dataset", "-d", help="imagenette | imagewoof | folder | shapes"),
    batch_size: list[int] = typer.Option(None, "--batch-size", help="Batch size (repeatable)."),
    weights: str = typer.Option(None, "--weights", help="pretrained | random (random: latency only)."),
    data_root: Path = typer.Option(None, "--data-root", help="Where datasets live."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Cache for weights, ONNX, calibration, engines."),
    out: Path = typer.Option(None, "--out", "-o", help="Output directory (results.db, results.csv)."),
    warmup: int = typer.Option(None, "--warmup", help="Warm-up iterations per repeat."),
    iterations: int = typer.Option(None, "--iterations", help="Timed iterations per repeat."),
    repeats: int = typer.Option(None, "--repeats", help="Repeats."),
    max_eval_samples: int = typer.Option(None, "--max-eval-samples", help="Evaluate on the first N val images."),
    resume: bool = typer.Option(False, "--resume", help="Skip cells already finished in --out's database."),
    executor: str = typer.Option(None, "--executor", help="local (default) | ray: run units on a Ray cluster."),
    address: str = typer.Option(None, "--address", help="Ray cluster: auto | HOST:PORT (default: a local Ray)."),
    eval_workers: int = typer.Option(None, "--eval-workers", help="Processes decoding the evaluation split."),
) -> None:
    """Run a benchmark sweep; flags override the config file.

    Examples:

    * `harness run --config configs/demo.yaml`
    * `harness run --model resnet18 --dataset imagenette --backend ort-cpu --precision fp32 --batch-size 1 --batch-size 32`
    * `harness run --config configs/thesis.yaml --out results/thesis --resume`
    * `harness run --model my_models.py:build --weights random --backend torch`
    * `harness run --config configs/thesis.yaml --executor ray --address head:6379`
    """
    overrides: dict[str, Any] = {
        "models": model or None, "datasets": dataset or None, "batch_sizes": batch_size or None,
        "weights": weights, "data_root": data_root, "cache_dir": cache_dir, "out_dir": out,
        "max_eval_samples": max_eval_samples, "eval_workers": eval_workers,
    }
    timing = {k: v for k, v in (("warmup", warmup), ("iterations", iterations), ("repeats", repeats)) if v is not None}

    def go() -> None:
        from harness.config import load_config

        base = load_config(config, None) if config else None
        if backend:
            overrides["backends"] = {backend: precision or ["fp32"]}
        elif precision:
            names = list(base.backends) if base else ["torch"]
            overrides["backends"] = {name: list(precision) for name in names}
        if timing:
            overrides["timing"] = {**(base.timing.model_dump() if base else {}), **timing}
        if executor is not None or address is not None:
            chosen = {**(base.executor.model_dump(exclude_unset=True) if base else {})}
            if executor is not None:
                chosen["kind"] = executor
            if address is not None:
                chosen["address"] = address
            overrides["executor"] = chosen
        _run_sweep(config, overrides, resume)

    _guard(go)


@app.command()
def demo(
    out: Path = typer.Option(None, "--out", "-o", help="Output directory (default results/demo)."),
    resume: bool = typer.Option(False, "--resume", help="Skip cells already finished."),
) -> None:
    """The embedded offline default: tinycnn on `shapes`, on CPU (same as `harness run --config configs/demo.yaml`).

    Example: `harness demo --out results/demo && harness report --out results/demo`
    """
    def go() -> None:
        from harness.configs import demo_config

        # In the containers HARNESS_OUT_DIR names the results volume; the demo writes below it.
        default_out = Path(os.environ["HARNESS_OUT_DIR"]) / "demo" if os.environ.get("HARNESS_OUT_DIR") else None
        with demo_config() as path:
            _run_sweep(path, {"out_dir": out or default_out}, resume)

    _guard(go)


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
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
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


@results_app.command("show")
def results_show(out: Path = typer.Option(Path("results"), "--out", "-o", help="Directory holding results.db.")) -> None:
    """Print the stored results as a table. Example: `harness results show --out results/demo`."""
    from harness.results import ResultStore

    def go() -> None:
        db = out / "results.db"
        if not db.exists():
            raise HarnessError(f"no results database at {db}; run a sweep first or pass --out")
        with ResultStore(db) as store:
            _print_table(store)

    _guard(go)


@results_app.command("export")
def results_export(
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Directory holding results.db."),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv | json"),
    dest: Path = typer.Option(None, "--to", help="Output file (default <out>/results.<format>)."),
) -> None:
    """Export results: CSV with the thesis's columns plus extended columns, or JSON.

    Example: `harness results export --out results/demo --format csv --to demo.csv`
    """
    from harness.results import ResultStore, export_csv, export_json

    def go() -> None:
        if fmt not in ("csv", "json"):
            raise HarnessError(f"unknown format '{fmt}'; choose csv or json")
        db = out / "results.db"
        if not db.exists():
            raise HarnessError(f"no results database at {db}; run a sweep first or pass --out")
        target = dest or out / f"results.{fmt}"
        with ResultStore(db) as store:
            n = (export_csv if fmt == "csv" else export_json)(store, target)
        console.print(f"wrote {n} rows to {target}")

    _guard(go)


@app.command()
def report(
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Directory holding results.db."),
    definition: str = typer.Option("compute", "--timing", help="compute | e2e"),
) -> None:
    """Plots (accuracy vs amount, throughput vs batch, accuracy vs latency) and report.md with the
    fastest configuration per backend and theoretical vs measured speedup.

    Example: `harness report --out results/demo` (writes results/demo/report/)
    """
    from harness.report import write_report
    from harness.results import ResultStore

    def go() -> None:
        if definition not in ("compute", "e2e"):
            raise HarnessError(f"unknown timing definition '{definition}'; choose compute or e2e")
        db = out / "results.db"
        if not db.exists():
            raise HarnessError(f"no results database at {db}; run a sweep first or pass --out")
        with ResultStore(db) as store:
            files = write_report(store, out / "report", definition)
        for f in files:
            console.print(f"wrote {f}")

    _guard(go)


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
    from harness.fingerprint import model_content_hash
    from harness.models import load_model
    from harness.onnx_export import export_onnx

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
