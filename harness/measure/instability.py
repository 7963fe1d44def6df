"""One line that says how many timing windows are unstable and why, instead of one footnote per window.

A verdict that is "unstable" for every window is read by nobody; what a user needs from the run's
table is the count and the dominant cause ("118 of 120 windows unstable: host busy (another harness
process, pid 4242) 118, repeat medians disagree 3"), and where to look for the details
(``harness results show --unstable``, the report).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.measure.stats import instability_causes

CAUSE_LABELS: dict[str, str] = {
    "host": "host busy",
    "device": "device warnings",
    "repeats": "repeat medians disagree",
    "ci": "wide CI",
    "cv": "samples scatter",
    "host-bound": "host-bound (the host's launch jitter)",
}
_PROCESS = re.compile(r"([^\s,:;]+) \(pid (\d+)\)")


def _host_culprits(reasons: Iterable[str]) -> list[str]:
    out = []
    for reason in reasons:
        if not reason.startswith("host busy"):
            continue
        for name, pid in _PROCESS.findall(reason):
            out.append(f"another harness process, pid {pid}" if name == "harness" else f"{name}, pid {pid}")
        if "load average" in reason and not _PROCESS.search(reason):
            out.append("load average above the CPU count")
    return out


@dataclass(frozen=True)
class InstabilitySummary:
    windows: int
    unstable: int
    by_cause: dict[str, int] = field(default_factory=dict)  # cause code -> windows
    host_culprits: list[tuple[str, int]] = field(default_factory=list)  # most frequent first

    @property
    def line(self) -> str:
        """E.g. "118 of 120 windows unstable: host busy (another harness process, pid 42) 118; wide CI 3"."""
        if self.windows == 0:
            return "no timing windows"
        if self.unstable == 0:
            return f"all {self.windows} windows stable"
        parts = []
        order = list(CAUSE_LABELS)  # ties: the machine's causes first, then scatter
        for cause in sorted(self.by_cause, key=lambda c: (-self.by_cause[c], order.index(c) if c in order else 99)):
            label = CAUSE_LABELS.get(cause, cause)
            if cause == "host" and self.host_culprits:
                label += " (" + ", ".join(name for name, _ in self.host_culprits[:2]) + ")"
            parts.append(f"{label} {self.by_cause[cause]}")
        return f"{self.unstable} of {self.windows} windows unstable: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"windows": self.windows, "unstable": self.unstable, "by_cause": dict(self.by_cause),
                "host_culprits": [list(c) for c in self.host_culprits], "line": self.line}


def summarize(stabilities: Iterable[Mapping[str, Any] | None]) -> InstabilitySummary:
    """Count windows and unstable ones by cause (a window with several causes counts under each)."""
    windows = unstable = 0
    by_cause: Counter[str] = Counter()
    culprits: Counter[str] = Counter()
    for st in stabilities:
        if st is None:
            continue
        windows += 1
        if st.get("stable", True):
            continue
        unstable += 1
        by_cause.update(set(instability_causes(st)))
        culprits.update(set(_host_culprits(str(r) for r in st.get("reasons") or [])))
    return InstabilitySummary(windows, unstable, dict(by_cause), culprits.most_common())
