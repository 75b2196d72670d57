"""duratask benchmarks: reproducible workloads measured beside the storage limit.

Run with ``make bench`` (or ``python -m benchmarks.run --help``); see ``benchmarks/README.md``.
"""
