"""The benchmarks: each ``bench_*.py`` measures one thing against a baseline measured in the same
run, runs alone (``python -m bench.bench_latency --help``, from the repository root) and renders
its own section of docs/benchmarks.md; ``run_all.py`` (``make bench``) runs them all and writes
the document. A package, so that import-linter can check that it never imports ``tests/``
(what it shares with the tests lives in ``harness/``). bench/README.md says more.
"""
