"""The benchmark suite of eventworker: ``python -m benchmarks`` (see docs/performance.md).

Nothing is imported here: the consumer programs in ``benchmarks.clients`` import
``benchmarks.probe`` and ``benchmarks.wire`` inside the peers' virtualenvs, where neither
eventworker nor the harness's dependencies are installed.
"""
