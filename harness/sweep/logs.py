"""What libraries say while a unit runs: captured and stored with its cells, never printed between the
progress bar and the results table.

ONNX Runtime's quantizer logs through the root logger (``logging.warning``, which on an unconfigured root
installs a stderr handler of its own: forty ``WARNING:root:`` lines for a vit_b_16 int8 cell), torch and
onnx raise Python warnings, Ray has its loggers. While a unit's work runs, a handler on the root logger
collects every record of level WARNING and above, and Python warnings are collected instead of shown;
the lines are stored with each cell the work was for (``log`` in the cell result). The harness's own notes
(:class:`harness.errors.HarnessNote`) still reach the console, and ``echo`` (the CLI's ``--verbose``)
sees every captured line as it comes. Captures nest: the CLI captures the whole run (its ``run.log``), each
unit its own cells' lines. Both switches are set around the work and put back after it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessNote

#: At most this many lines are kept per cell (the first ones: a library repeating itself adds nothing).
MAX_LINES = 200
#: At most this many characters per line.
MAX_LINE_CHARS = 1000
#: Marks the warning display of a capture, so a capture inside another (a unit inside the run) hands the
#: warnings it records on to the enclosing one, and never to the console.
CAPTURE_MARK = "_pq_harness_capture"


class _Collector(logging.Handler):
    def __init__(self, add: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self._add = add

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a library's malformed record is still worth its text
            message = str(record.msg)
        self._add(f"{record.levelname}:{record.name}: {message}")


@contextlib.contextmanager
def captured_logs(lines: list[str], echo: Callable[[str], None] | None = None) -> Iterator[list[str]]:
    """Collect library log records (WARNING and above) and Python warnings into ``lines`` while the block
    runs; the harness's own notes pass through to whoever shows warnings."""

    def add(line: str) -> None:
        line = line.strip()
        if not line:
            return
        line = line[:MAX_LINE_CHARS]
        if echo is not None:
            echo(line)
        if len(lines) < MAX_LINES:
            lines.append(line)

    root = logging.getLogger()
    handler = _Collector(add)
    shown = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if not issubclass(category, HarnessNote):
            add(f"{category.__name__}: {message} ({Path(filename).name}:{lineno})")
            if not getattr(shown, CAPTURE_MARK, False):
                return  # never on to the console; an enclosing capture (the run's) records it too
        shown(message, category, filename, lineno, file, line)

    setattr(show, CAPTURE_MARK, True)
    root.addHandler(handler)
    warnings.showwarning = show
    try:
        yield lines
    finally:
        warnings.showwarning = shown
        root.removeHandler(handler)


__all__ = ["MAX_LINES", "captured_logs"]
