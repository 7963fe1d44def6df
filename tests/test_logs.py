"""The console is the CLI's: what libraries log during a run (the root logger, named loggers, Python
warnings) is captured with the cells it was for, never printed between the progress bar and the table;
``--verbose`` shows it; the harness's own notes still print."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from harness.errors import HarnessNote
from harness.sweep.logs import MAX_LINES, captured_logs
from tests.helpers import REPO, repo_env

NOISY_MODEL = '''
import logging, warnings
from torch import nn


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

    def forward(self, x):
        # as onnxruntime's quantizer does: the root logger, which configures a stderr handler of its own
        logging.warning("a library warning from forward")
        return self.net(x)


def build():
    warnings.warn("a library UserWarning while building the model")
    logging.getLogger("somelib").error("a named library logger's error")
    model = Noisy().eval()
    model.input_size = 32
    return model
'''


def test_records_and_warnings_are_collected_and_the_switches_put_back() -> None:
    root = logging.getLogger()
    lines: list[str] = []
    echoed: list[str] = []
    shown: list[str] = []  # what reaches whoever shows warnings (the CLI prints notes as ``note:`` lines)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
        handlers, show = list(root.handlers), warnings.showwarning
        with captured_logs(lines, echo=echoed.append):
            logging.getLogger("onnxruntime").warning("quantizer: %d nodes skipped", 3)
            logging.getLogger("lib").info("below WARNING: not kept")
            warnings.warn("torch says so", UserWarning)
            warnings.warn("a cache was rebuilt", HarnessNote)
        assert root.handlers == handlers and warnings.showwarning is show
    assert lines[0] == "WARNING:onnxruntime: quantizer: 3 nodes skipped" and len(lines) == 2
    assert lines[1].startswith(f"UserWarning: torch says so ({Path(__file__).name}:")
    assert echoed == lines
    assert shown == ["a cache was rebuilt"], "the harness's own notes are never swallowed"


def test_a_library_repeating_itself_is_kept_to_its_first_lines() -> None:
    lines: list[str] = []
    with captured_logs(lines):
        for i in range(MAX_LINES + 50):
            logging.getLogger("chatty").warning("line %d", i)
    assert len(lines) == MAX_LINES and lines[0].endswith("line 0")


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    model = tmp_path / "noisy.py"
    model.write_text(NOISY_MODEL)
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--model", f"{model}:build", "--weights", "random",
         "--dataset", "shapes", "--backend", "torch", "--batch-size", "2", "--max-eval-samples", "16",
         "--repeats", "1", "--iterations", "3", "--data-root", str(tmp_path / "data"),
         "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), *extra],
        cwd=REPO, env=repo_env(PQ_HARNESS_LOCK_DIR=str(tmp_path / "locks")), capture_output=True, text=True,
        timeout=600)


@pytest.mark.slow
def test_a_run_prints_no_library_lines_and_stores_them_with_the_cell(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    for text in ("a library warning from forward", "UserWarning", "named library logger"):
        assert text not in output, output
    (cell,) = json.loads((tmp_path / "out" / "results.json").read_text())
    log = cell["result"]["log"]
    run_log = (tmp_path / "out" / "run.log").read_text()  # the whole run's, the checks before any cell included
    assert "a library UserWarning while building the model" in run_log
    assert "WARNING:root: a library warning from forward" in log
    assert any(line.startswith("UserWarning: a library UserWarning while building the model") for line in log)
    assert "ERROR:somelib: a named library logger's error" in log


@pytest.mark.slow
def test_verbose_shows_library_lines_as_they_come(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--verbose")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "log: WARNING:root: a library warning from forward" in proc.stderr


def test_a_capture_inside_another_hands_warnings_on_and_never_to_the_console() -> None:
    run: list[str] = []
    unit: list[str] = []
    shown: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
        with captured_logs(run), captured_logs(unit):
            warnings.warn("onnx says so", UserWarning)
            logging.getLogger("onnxruntime").warning("calibrating")
    assert [line.split(" (")[0] for line in unit] == ["UserWarning: onnx says so", "WARNING:onnxruntime: calibrating"]
    assert run == unit, "the run's log holds what each unit's capture saw"
    assert shown == []
