"""edgetune's benchmarks: the scripts behind every figure in BENCHMARKS.md (bench/README.md lists them).

Run each from the repository root as ``python -m bench.NAME``; shared helpers live in ``bench.common``.
"""
