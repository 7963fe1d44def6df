"""PQ Harness: benchmark pruning and quantization across inference backends."""

__version__ = "0.1.0"
