"""``harness run`` and ``harness demo``: a sweep under the output directory's lock, its progress, its table."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from backends import BACKEND_NAMES
from harness.cli.common import _choice, _guard, _positive, _write_error_log, app, console, err_console
from harness.cli.table import print_table
from harness.errors import HarnessError


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


def _run_sweep(config_path: Path | None, overrides: dict[str, Any], resume: bool, wait: bool = False,
               verbose: bool = False) -> None:
    """One sweep into one output directory: the directory's lock is held throughout, so a second
    sweep into it is refused (or, with ``wait``, queued and then skips what the first finished)."""
    from harness.config import load_config
    from harness.sweep.logs import captured_logs

    config = load_config(config_path, overrides)
    run_log: list[str] = []  # what libraries log during the whole run (each cell also stores its own)
    echo = (lambda line: err_console.print(Text.assemble(("log: ", "dim"), line), highlight=False)) if verbose \
        else None
    try:
        with captured_logs(run_log, echo=echo):
            _sweep(config, resume, wait)
    finally:
        if run_log:
            _write_run_log(Path(config.out_dir), run_log)


#: Where a run appends what libraries logged during it (ONNX Runtime, torch, Ray), beside results.db.
RUN_LOG = "run.log"


def _write_run_log(out: Path, lines: list[str]) -> None:
    """Append the run's library log lines to ``out/run.log`` (best effort: the results are what matter)."""
    try:
        with (out / RUN_LOG).open("a", encoding="utf-8") as log:
            log.write("\n".join(lines) + "\n")
    except OSError:
        pass


def _sweep(config: Any, resume: bool, wait: bool) -> None:
    from harness.errors import describe_os_error
    from harness.machine import probe_machine
    from harness.measure.locks import OutDirLock
    from harness.store.results import ResultStore, ResultStoreError, export_csv, export_json
    from harness.sweep.driver import preflight, run_sweep
    from harness.sweep.plan import plan_cells

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
            print_table(store)
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
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show what libraries log (ONNX Runtime, torch, "
                                                                 "Ray) as it comes; it is stored with each cell anyway."),
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
        _run_sweep(config, overrides, resume, wait, verbose)

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
