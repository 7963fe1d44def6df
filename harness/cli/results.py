"""What a user reads from stored results: ``harness results show|export``, ``report``, ``compare``,
``recommend``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from harness.cli.common import _guard, app, console, results_app
from harness.cli.table import print_table
from harness.errors import HarnessError


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
            print_table(store, unstable=unstable)

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
    from harness.analysis.compare import compare_store
    from harness.analysis.compare_render import detail_lines, rich_table, to_markdown
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
    from harness.analysis.recommend_render import render_lines
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
