"""The `harness` command. It owns the console: library code never prints."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from backends import BACKEND_NAMES
from harness.errors import HarnessError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="PQ Harness: which pruning and quantization, on which backend, is fastest, "
                       "smallest and most accurate on this machine, and why.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: list and download.")
results_app = typer.Typer(no_args_is_help=True, help="Inspect and export stored results.")
app.add_typer(data_app, name="data")
app.add_typer(results_app, name="results")

# markup=False: user text (paths, model names, library messages, hints such as
# `pip install 'pq-harness[ort-cpu]'`) prints literally; styling goes through Text.
console = Console(width=None if sys.stdout.isatty() else 160, markup=False)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200, markup=False)
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = 2) -> None:
    err_console.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class _ProgressObserver:  # a harness.sweep.observer.Observer
    """Renders the sweep: what it is doing now (``status``), and cells done/failed/left with a time estimate
    (harness.sweep.progress), the same for the local and the Ray executor."""

    def __init__(self, progress: Progress, task: Any) -> None:
        from harness.sweep.progress import SweepProgress

        self.progress, self.task = progress, task
        self.eval_task: Any = None
        self.started = False  # a unit began (work that a fault interrupts)
        self.committed = 0  # cells committed to the store by this run
        self.counts = SweepProgress()

    def planned(self, cells: int, skipped: int) -> None:
        self.counts.start(cells, skipped)
        self.progress.update(self.task, total=cells, completed=skipped, counts=self.counts.line())

    def evaluated(self, done: int, total: int) -> None:
        if self.eval_task is None:
            self.eval_task = self.progress.add_task("evaluating (val images)", total=total, counts="")
        self.progress.update(self.eval_task, completed=done, total=total, visible=done < total)

    def status(self, text: str) -> None:
        self.started = True
        self.progress.update(self.task, description=text, counts=self.counts.line())

    def notice(self, text: str) -> None:  # e.g. waiting for another harness process's timing window
        self.progress.console.print(text, markup=False, highlight=False)

    def cell_done(self, outcome: Any) -> None:  # a harness.store.outcome.CellOutcome
        self.committed += 1
        self.counts.cell_finished(outcome.status == "ok")
        self.progress.update(self.task, advance=1, counts=self.counts.line())
        if outcome.status == "error":
            self.progress.console.print(
                Text.assemble(("failed ", "red"), f"{outcome.identity.label}: {outcome.error}"), highlight=False)


ERROR_LOG = "harness-error.log"


def _run_sweep(config_path: Path | None, overrides: dict[str, Any], resume: bool, wait: bool = False) -> None:
    """One sweep into one output directory: the directory's lock is held throughout, so a second
    sweep into it is refused (or, with ``wait``, queued and then skips what the first finished)."""
    from harness.config import load_config
    from harness.errors import describe_os_error
    from harness.measure.locks import OutDirLock
    from harness.machine import probe_machine
    from harness.store.results import ResultStore, ResultStoreError, export_csv, export_json
    from harness.sweep.driver import preflight, run_sweep
    from harness.sweep.plan import plan_cells

    config = load_config(config_path, overrides)
    if config.executor.kind == "ray":
        from harness.sweep.executors.ray_executor import import_ray

        import_ray()  # a missing Ray is a one-line error naming the extra, before any work
    facts = probe_machine()
    preflight(config, facts)
    out = Path(config.out_dir)
    db = out / "results.db"
    cells = plan_cells(config)
    observer: _ProgressObserver | None = None
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultStoreError(f"cannot create the output directory {out} ({describe_os_error(exc)})") from exc
        lock = OutDirLock(out, wait=wait, on_wait=lambda message: err_console.print(
            f"{message} (its finished cells will be skipped)", highlight=False))
        try:
            lock.acquire()
        except HarnessError as exc:
            if lock.waited_for_pid is None or wait:
                raise
            raise HarnessError(f"{exc}; or rerun with --wait to queue behind it") from None
        # --wait implies --resume: the cells the other sweep finished are never measured again.
        resume = resume or wait
        with _releasing(lock), ResultStore(db) as store:
            progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[counts]}", markup=False),
                                console=console, transient=False)
            with progress:
                task = progress.add_task("starting", total=len(cells), counts="")
                observer = _ProgressObserver(progress, task)
                counts = run_sweep(config, store, observer, resume=resume, facts=facts)
                progress.update(task, completed=len(cells), description="done")
            n_csv = export_csv(store, out / "results.csv")
            export_json(store, out / "results.json")
            _print_table(store)
    except ResultStoreError as exc:
        raise _environment_fault(exc, out, db, None, len(cells)) from exc
    except (OSError, sqlite3.Error) as exc:
        raise _environment_fault(exc, out, db, observer, len(cells)) from exc
    console.print(f"cells: {counts['ok']} ok, {counts['error']} failed, {counts['skipped']} skipped (resume); "
                  f"{n_csv} rows in {out / 'results.csv'}, database {out / 'results.db'}", highlight=False)
    if counts["error"]:
        raise typer.Exit(1)


@contextlib.contextmanager
def _releasing(lock: Any) -> Iterator[None]:
    try:
        yield
    finally:
        lock.release()


def _write_error_log(exc: BaseException, out: Path | None) -> Path | None:
    """The full traceback in ``<out>/harness-error.log`` (else the temp directory); None when neither takes it."""
    import tempfile
    import time
    import traceback

    text = (f"--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} pid {os.getpid()}: "
            f"{' '.join(sys.argv)}\n{''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))}")
    candidates = ([out / ERROR_LOG] if out is not None else []) + \
        [Path(tempfile.gettempdir()) / f"harness-error-{os.getpid()}.log"]
    for path in candidates:
        try:
            with path.open("a") as fh:
                fh.write(text)
            return path
        except OSError:
            continue
    return None


def _environment_fault(exc: BaseException, out: Path, db: Path, observer: _ProgressObserver | None,
                       total: int) -> HarnessError:
    """One line for a fault of the machine (disk full, read-only or invalid path, unusable database):
    what happened, how many cells are safe, how to go on; exit 2 before any cell ran, 1 after."""
    from harness.errors import EnvironmentFault, describe_os_error
    from harness.store.results import count_safe_cells

    log = _write_error_log(exc, out)
    where = f"full traceback in {log}" if log else "no traceback log could be written"
    safe = count_safe_cells(db)
    if not db.is_file():
        safe_text = "nothing was stored"
    elif safe is None:
        safe_text = f"the database {db} cannot be read"
    else:
        safe_text = f"{safe} finished cell(s) are safe in {db}"
    what = str(exc) if isinstance(exc, HarnessError) else describe_os_error(exc)
    if observer is None or observer.committed == 0 and not observer.started:
        return EnvironmentFault(f"{what}; no cell ran; {safe_text}; fix it or choose another --out, then rerun "
                                f"({where})", exit_code=2)
    return EnvironmentFault(
        f"the sweep stopped after {observer.committed} of {total} cell(s): {what}; {safe_text}; fix it "
        f"(e.g. free disk space), then rerun with --resume to go on ({where})", exit_code=1)


def _print_table(store: Any, unstable: bool = False) -> None:
    """One line per cell: median batch latency under both timing definitions, side by side, each with
    its 95 % CI half-width; "!" marks an unstable measurement. Below the table one line counts the
    unstable windows by cause; with ``unstable`` each window's reasons are listed too."""
    from rich.text import Text

    from harness.measure.instability import summarize
    from harness.store.outcome import CellResult, latency_is_emulated
    from harness.store.results import megabytes, percent

    table = Table(title="results: median batch latency ±95 % CI half-width (compute = input already on the "
                        "device; e2e = host in, host out); ! = unstable; H = host-bound; ~ = emulated (not a "
                        "measurement of that precision's hardware)")
    for col, justify in (("model", "left"), ("pruning", "left"), ("backend", "left"), ("batch", "right"),
                         ("top-1", "right"), ("compute ms", "right"), ("e2e ms", "right"), ("p99 ms", "right"),
                         ("img/s", "right"), ("MB", "right"), ("status", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    notes: list[str] = []
    verdicts: list[dict[str, Any] | None] = []
    host_bound: list[tuple[str, str]] = []  # (cell and definition, backend) of host-bound GPU windows
    gpu_windows = 0
    for record in store.records():
        ident, result = record.identity, record.result or CellResult()
        windows = {"compute": result.timing("compute"), "e2e": result.timing("e2e")}
        main = windows["compute"] or windows["e2e"]
        pruning = "-" if ident.pruner == "none" else f"{ident.pruner} {ident.amount:g}"
        pruning += " +recover" if ident.recover else ""
        budget = (ident.int8 or {}).get("max_accuracy_drop")
        variant = "" if not ident.int8 else (f" budget {budget:g}" if budget is not None else " +sensitivity")
        cells = []
        for definition, window in windows.items():
            text = _latency(window)
            verdict = (window.stability if window is not None else None) or {}
            if window is not None:
                verdicts.append(verdict or None)
            if verdict.get("stable") is False:
                notes.append(f"{ident.label} {definition}: {'; '.join(verdict.get('reasons') or []) or 'unstable'}")
                text += f" !{len(notes)}" if unstable else " !"
            if window is not None and window.launch is not None:
                gpu_windows += 1
                if window.host_bound:
                    host_bound.append((f"{ident.label} {definition}", ident.backend))
                    text += " H"
            cells.append(Text(f"~{text}" if window is not None and latency_is_emulated(result) else text))
        status = Text("ok") if record.status == "ok" else Text((record.error or "")[:80], style="red")
        table.add_row(
            Text(ident.model), Text(pruning), Text(f"{ident.backend} {ident.precision}{variant}"),
            str(ident.batch_size), _fmt(percent(result.top1), ".2f"), *cells,
            _fmt(None if main is None else main.stats["p99_ms"], ".3f"),
            _fmt(None if main is None else main.throughput_ips, ".0f"),
            _fmt(megabytes(result.compressed_size_bytes), ".2f"), status,
        )
    console.print(table)
    summary = summarize(verdicts)
    if summary.windows:
        console.print(Text(summary.line), highlight=False)
    if host_bound:
        console.print(Text(host_bound_line(host_bound, gpu_windows)), highlight=False)
    if notes and not unstable:
        console.print("(! = unstable; each window's reasons: harness results show --unstable, or harness report)",
                      highlight=False)
    if notes and unstable:
        console.print(f"{len(notes)} unstable measurement(s) (! marks; compare them with care):", highlight=False)
        for i, note in enumerate(notes, 1):
            console.print(Text(f"  !{i} {note}"), highlight=False)


def host_bound_line(host_bound: list[tuple[str, str]], gpu_windows: int) -> str:
    """One line for the host-bound windows of a table: how many, what it means, the fix."""
    from harness.measure.launch import HOST_BOUND_MEANING, launch_fix

    backends = sorted({backend for _, backend in host_bound})
    return (f"H: {len(host_bound)} of {gpu_windows} GPU windows host-bound: {HOST_BOUND_MEANING}; a difference "
            f"between two host-bound cells compares the launch path, not precision or pruning; "
            + "; ".join(launch_fix(b) if len(backends) == 1 else f"{b}: {launch_fix(b)}" for b in backends))


def _latency(window: Any) -> str:  # a harness.store.outcome.TimingWindow or None
    """"12.345 ±0.400" (median and CI half-width), or just the median for results stored without a CI."""
    if window is None:
        return "-"
    ci = window.ci or {}
    low, high = ci.get("low_ms"), ci.get("high_ms")
    if low is None or high is None:
        return format(window.median_ms, ".3f")
    return f"{window.median_ms:.3f} ±{(high - low) / 2:.3f}"


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _choice(flag: str, values: list[str] | str | None, allowed: tuple[str, ...]) -> None:
    """A flag's bad value names the flag and the allowed values (not the config path it maps to)."""
    for value in [values] if isinstance(values, str) else values or []:
        if value not in allowed:
            raise HarnessError(f"{flag}: '{value}' is not one of {', '.join(allowed)}")


def _positive(flag: str, values: list[int] | int | None, minimum: int = 1) -> None:
    for value in [values] if isinstance(values, int) else values or []:
        if value < minimum:
            raise HarnessError(f"{flag}: {value} must be >= {minimum}")


@contextlib.contextmanager
def _rebuild_notes() -> Iterator[list[str]]:
    """Cache-rebuild warnings (harness.store.cache_files / calib.provenance ``CacheRebuiltWarning``) become one
    literal ``note:`` line each on stderr instead of Python's warning text; other warnings pass through."""
    caught: list[str] = []
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            from calib.provenance import CacheRebuiltWarning as CalibRebuilt
            from harness.store.cache_files import CacheRebuiltWarning

            if issubclass(category, (CacheRebuiltWarning, CalibRebuilt)):
                caught.append(str(message))
                err_console.print(Text.assemble(("note: ", "yellow"), str(message)), highlight=False,
                                  soft_wrap=True)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield caught


def _guard(fn: Callable[[], None]) -> None:
    try:
        with _rebuild_notes():
            fn()
    except HarnessError as exc:
        _fail(str(exc), code=getattr(exc, "exit_code", 2))
    except (OSError, sqlite3.Error) as exc:  # a fault of the machine outside a sweep: one line, traceback logged
        from harness.errors import describe_os_error

        log = _write_error_log(exc, None)
        _fail(f"{describe_os_error(exc)} ({f'full traceback in {log}' if log else 'no traceback log written'})")
    except KeyboardInterrupt:
        _fail("interrupted; every finished cell is saved: rerun with --resume to go on", code=130)


@app.command()
def run(
    config: Path = typer.Option(None, "--config", "-c", help="Sweep config (YAML)."),
    backend: str = typer.Option(None, "--backend", "-b", help=" | ".join(BACKEND_NAMES)),
    precision: list[str] = typer.Option(None, "--precision", "-p", help="fp32 | tf32 | fp16 | bf16 | int8 | fp8 "
                                        "(repeatable; tf32: FP32 with TF32 math, sm_80+; fp8: E4M3, sm_89+, or "
                                        "emulated on ort-cpu)"),
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
    wait: bool = typer.Option(False, "--wait", help="If another sweep is writing to --out, wait for it, then "
                                                   "skip the cells it finished (implies --resume)."),
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
        from backends.names import PRECISIONS

        # Names and precisions first: rejecting them needs no torch.
        _choice("--backend", backend, BACKEND_NAMES)
        _choice("--precision", precision, PRECISIONS)
        from harness.config import load_config
        from harness.models import WEIGHT_CHOICES

        _choice("--weights", weights, WEIGHT_CHOICES)
        _positive("--batch-size", batch_size)
        _positive("--iterations", iterations)
        _positive("--repeats", repeats)
        _positive("--warmup", warmup, minimum=0)
        _positive("--max-eval-samples", max_eval_samples)
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
        _run_sweep(config, overrides, resume, wait)

    _guard(go)


@app.command()
def demo(
    out: Path = typer.Option(None, "--out", "-o", help="Output directory (default results/demo)."),
    resume: bool = typer.Option(False, "--resume", help="Skip cells already finished."),
    wait: bool = typer.Option(False, "--wait", help="Wait for another sweep writing to --out (implies --resume)."),
) -> None:
    """The embedded offline default: tinycnn on `shapes`, on CPU (same as `harness run --config configs/demo.yaml`).

    Example: `harness demo --out results/demo && harness report --out results/demo`
    """
    def go() -> None:
        from harness.configs import demo_config

        # In the containers HARNESS_OUT_DIR names the results volume; the demo writes below it.
        default_out = Path(os.environ["HARNESS_OUT_DIR"]) / "demo" if os.environ.get("HARNESS_OUT_DIR") else None
        with demo_config() as path:
            _run_sweep(path, {"out_dir": out or default_out}, resume, wait)

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


@results_app.command("show")
def results_show(
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Directory holding results.db."),
    unstable: bool = typer.Option(False, "--unstable", help="List every unstable window with its reasons."),
) -> None:
    """Print the stored results as a table. Example: `harness results show --out results/demo --unstable`."""
    from harness.store.results import ResultStore

    def go() -> None:
        db = out / "results.db"
        if not db.exists():
            raise HarnessError(f"no results database at {db}; run a sweep first or pass --out")
        with ResultStore(db) as store:
            _print_table(store, unstable=unstable)

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
    from harness.store.results import ResultStore, export_csv, export_json

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
    from harness.analysis.report import write_report
    from harness.store.results import ResultStore

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
    from harness.store.fingerprint import model_content_hash
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
def compare(
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Directory holding results.db."),
    baseline: str = typer.Option(..., "--baseline", help="KEY=VALUE[,KEY=VALUE] selecting the baseline cells."),
    candidate: str = typer.Option(..., "--candidate", help="KEY=VALUE[,KEY=VALUE] selecting the candidates."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as a JSON list."),
    md: Path = typer.Option(None, "--md", help="Also write the comparison as Markdown to this file."),
    definition: str = typer.Option("compute", "--definition", help="compute | e2e"),
    allow_mixed_gpus: bool = typer.Option(False, "--allow-mixed-gpus",
                                          help="Compare latencies measured on different GPU models."),
) -> None:
    """Pair every baseline cell with the candidate identical in every field the selectors do not name:
    medians with 95 % CIs, speedup with its CI and significance, accuracy and top-1 agreement, sizes,
    build/calibration time, TensorRT layer precisions, top layers and op types.

    Examples: `harness compare --out results/demo --baseline backend=torch --candidate backend=ort-cpu`,
    `harness compare --baseline precision=fp16 --candidate precision=int8 --md int8.md`
    """
    from harness.analysis.compare import compare_store, detail_lines, rich_table, to_markdown
    from harness.store.results import ResultStore

    def go() -> None:
        db = out / "results.db"
        if not db.exists():
            raise HarnessError(f"no results database at {db}; run a sweep first or pass --out")
        with ResultStore(db) as store:
            result = compare_store(store, baseline, candidate, definition=definition,
                                   allow_mixed_gpus=allow_mixed_gpus)
        if md is not None:
            md.parent.mkdir(parents=True, exist_ok=True)
            md.write_text(to_markdown(result))
        if as_json:
            sys.stdout.write(json.dumps(result.to_list(), indent=2, default=str) + "\n")
            return
        console.print(rich_table(result))
        for line in detail_lines(result):
            console.print(line, markup=False, highlight=False)
        if md is not None:
            console.print(f"wrote {md}", markup=False, highlight=False)

    _guard(go)


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
    from harness.store.fingerprint import model_content_hash
    from harness.models import load_model
    from harness.onnx_export import export_onnx

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


@app.command()
def recommend(
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Directory holding results.db."),
    max_accuracy_drop: float = typer.Option(1.0, "--max-accuracy-drop",
                                            help="Points of top-1 a cell may lose against its uncompressed baseline."),
    objective: str = typer.Option("latency", "--objective", help="latency | throughput | size | energy"),
    batch_size: int = typer.Option(None, "--batch-size", help="Default: smallest (latency), else largest stored."),
    model: str = typer.Option(None, "--model", "-m", help="When the database holds several models."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="When the database holds several datasets."),
    definition: str = typer.Option("compute", "--timing", help="compute | e2e"),
    include_unstable: bool = typer.Option(False, "--include-unstable", help="Rank cells with unstable timings too."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The configuration to ship: the best on the objective within the accuracy budget, named only when
    significantly better than the runner-up (else the tie), with its CIs, the Pareto alternatives, what was
    excluded and why, and the hardware it was measured on.

    Example: `harness recommend --out results/demo --max-accuracy-drop 0.5 --json`
    """
    from harness.analysis.recommend import recommend as choose
    from harness.analysis.recommend import render_lines
    from harness.store.results import ResultStore

    def go() -> None:
        db = out / "results.db"
        if not db.exists():
            raise HarnessError(f"no results database at {db}; run a sweep first or pass --out")
        with ResultStore(db) as store:
            rec = choose(list(store.records()), max_accuracy_drop=max_accuracy_drop, objective=objective,
                         batch_size=batch_size, model=model, dataset=dataset, definition=definition,
                         include_unstable=include_unstable)
        if as_json:
            sys.stdout.write(json.dumps(rec.to_dict(), indent=2, default=str) + "\n")
            return
        for line in render_lines(rec):
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    _guard(go)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
