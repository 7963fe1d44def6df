"""``harness hw``: what this machine has, and which backend x precision combinations can run on it.

- :mod:`harness.hw.collect` probes (through :mod:`harness.machine` and NVML) and builds the report;
- :mod:`harness.hw.availability` asks each backend's ``unavailable_reason(precision, facts)``;
- :mod:`harness.hw.render` draws it; :mod:`harness.hw.records` holds the types.
"""

from __future__ import annotations

from harness.hw.availability import availability_matrix, installed_rules
from harness.hw.collect import PACKAGE_DISTS, collect_host, collect_hw_report, package_versions
from harness.hw.records import Availability, GpuReport, HostInfo, HwReport, to_json
from harness.hw.render import render_hw_report

__all__ = [
    "PACKAGE_DISTS",
    "Availability",
    "GpuReport",
    "HostInfo",
    "HwReport",
    "availability_matrix",
    "collect_host",
    "collect_hw_report",
    "installed_rules",
    "package_versions",
    "render_hw_report",
    "to_json",
]
