"""What the tests and the benchmarks share: the stand-in model server, the test catalog, the stack's
real parts as processes and the chaos run. Not part of the `fusion` package, so it never ships; it is
found from the repository's root (pytest's `pythonpath`, `python -m bench.…`, mypy's current directory).
"""
