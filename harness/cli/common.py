"""The command's shared pieces: the Typer apps, the consoles (the CLI owns them: library code never prints),
one-line errors, flag checks, and the guard every command runs under."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

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


ERROR_LOG = "harness-error.log"


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
