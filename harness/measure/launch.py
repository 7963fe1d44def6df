"""Host-bound GPU windows: the device waited for the host to launch the work.

CUDA events around a call time the device from the moment the host enqueues the start event to the
end of the call's last kernel. When the host issues kernels more slowly than the GPU runs them (eager
PyTorch at small batches: one Python dispatch per operator), the GPU idles between kernels and that
interval is the host's launch time, not the GPU's: fp16 "equals" fp32 and a model with a quarter of the
MACs is "as fast". Such a window says nothing about precision or pruning.

Each repeat of a GPU window measures the host's *issue time* of a few calls (the wall time until the
call returns, each call on an idle stream, so launches never wait for a full queue: untimed, in the
warm-up). A window is **host-bound** when the median issue time exceeds
:data:`HOST_BOUND_RATIO` of the median device interval: trtexec's rule ("Throughput may be bound by
Enqueue Time rather than GPU Compute and the GPU may be under-utilized" when the enqueue time exceeds
0.8 of the GPU compute time).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: trtexec's threshold: enqueue (issue) time above this share of the device time is host-bound.
HOST_BOUND_RATIO = 0.8
#: Calls whose issue time each repeat measures (untimed, after the warm-up).
LAUNCH_PROBE_CALLS = 5

HOST_BOUND = "host-bound"
HOST_BOUND_MEANING = ("the GPU waited for the host (Python) to launch kernels, so this latency is launch "
                      "overhead, not the GPU's time")


def launch_fix(backend: str | None) -> str:
    """What makes a host-bound cell measure the GPU, for ``backend``."""
    if backend == "trt-native":
        return "try backend_options.trt-native.cuda_graph: true, or a larger batch"
    if backend in ("ort-cuda", "ort-trt"):
        return "try a larger batch, or trt-native with backend_options.trt-native.cuda_graph: true"
    return ("try backend_options.torch.cuda_graphs: true (or torch.compile with compile_mode: reduce-overhead), "
            "or a larger batch")


@dataclass(frozen=True)
class LaunchCheck:
    """How long the host takes to issue one call against how long the device takes to run it."""

    issue_ms: float  # median host issue time of one call (on an idle stream)
    device_ms: float  # median CUDA-event interval of one call in the timed window
    probe_calls: int
    ratio_limit: float = HOST_BOUND_RATIO

    @property
    def ratio(self) -> float:
        return self.issue_ms / self.device_ms if self.device_ms > 0 else float("inf")

    @property
    def host_bound(self) -> bool:
        return self.ratio > self.ratio_limit

    def reason(self, backend: str | None = None) -> str:
        """The user's words for a host-bound window (issue and device times, what it means, the fix)."""
        return (f"{HOST_BOUND}: the host takes {self.issue_ms:.3f} ms to issue a call the device runs in "
                f"{self.device_ms:.3f} ms ({100 * self.ratio:.0f} % > {100 * self.ratio_limit:.0f} %): "
                f"{HOST_BOUND_MEANING}; {launch_fix(backend)}")

    def to_dict(self) -> dict[str, Any]:
        """The ``launch`` entry stored with a GPU window."""
        return {"issue_ms": round(self.issue_ms, 6), "device_ms": round(self.device_ms, 6),
                "ratio": round(self.ratio, 4), "ratio_limit": self.ratio_limit, "probe_calls": self.probe_calls,
                "verdict": HOST_BOUND if self.host_bound else "device-bound",
                "rule": "trtexec: issue (enqueue) time above 0.8 x device time"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LaunchCheck | None:
        if not isinstance(data, Mapping) or data.get("issue_ms") is None or data.get("device_ms") is None:
            return None
        return cls(float(data["issue_ms"]), float(data["device_ms"]), int(data.get("probe_calls") or 0),
                   float(data.get("ratio_limit") or HOST_BOUND_RATIO))


def launch_check(issue_ns: Sequence[Sequence[int]], device_ns: Sequence[Sequence[int]]) -> LaunchCheck | None:
    """The check of one window from its repeats' issue-time probes and timed device samples; None when
    the window has no probe (a CPU window, or one timed by the host clock)."""
    issues = [s for rep in issue_ns for s in rep]
    device = [s for rep in device_ns for s in rep]
    if not issues or not device:
        return None
    return LaunchCheck(statistics.median(issues) / 1e6, statistics.median(device) / 1e6, len(issues))


__all__ = ["HOST_BOUND", "HOST_BOUND_MEANING", "HOST_BOUND_RATIO", "LAUNCH_PROBE_CALLS", "LaunchCheck",
           "launch_check", "launch_fix"]
