"""zsl-bench: one honest protocol for zero-shot learning benchmarks.

Keep this module import-free: `zsl-bench --help` must answer in well under a second.
"""

__version__ = "0.1.0"
