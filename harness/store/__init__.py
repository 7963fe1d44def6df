"""What lasts: typed cell records and where they are kept.

The typed outcome of a cell and its timing windows (``outcome``), the SQLite result store and its exports
(``results``), atomic writes (``atomic``), cache files with checksum sidecars (``cache_files``), TensorRT engine
and timing caches (``engine_cache``) and content fingerprints (``fingerprint``).

May import: ``harness.measure`` (a stored window carries its CI, stability and host-bound check); never the
sweep or analysis wings.
"""
