"""The sweep: from a config to committed cells.

Planning units and cells (``plan``), running one unit (``unit``: load, prune, recover, build sessions, time their
cells interleaved), measuring and assembling one cell (``cell``, ``cell_timing``), recovery after pruning
(``recovery_step``), the driver that commits outcomes (``driver``), executors (``executors``: local, Ray), the
observer and progress (``observer``, ``progress``) and the capture of library logs during a run (``logs``).

May import: ``harness.store`` and ``harness.measure`` (and the shared rooms: config, data, models, compression,
backends); never ``harness.analysis``.
"""
