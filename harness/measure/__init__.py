"""Measurement: how a window is timed and judged, apart from what is measured.

The timing engine (``timing``: warm-up, duration-based repeats, CUDA events, the issue-time probe), interleaved
blocks (``interleave``), the statistics of a window and of a pair (``stats``), host-bound windows (``launch``),
energy per window (``energy``), the exclusive device locks (``locks``), host load (``hostload``), device identity
(``device_identity``), the one-line instability summary (``instability``) and interval helpers (``proportions``).

May import: nothing of the other wings (store, sweep, analysis); only ``harness.errors`` and third-party code.
"""
