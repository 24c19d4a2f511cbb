"""Drivers that both the tests and the benchmarks run, and that the product never does.

* :mod:`harness.netlab`: real agents on Linux network namespaces, with fault injection;
* :mod:`harness.chaos`: the chaos run on such a lab (tests/test_chaos.py asserts a short one,
  bench/bench_chaos.py measures a long one);
* :mod:`harness.chromium`: how headless Chromium is started for the browser node;
* :mod:`harness.links`: a loopback node that keeps exactly one link, and a node's neighbours;
* :mod:`harness.zygote`: ``python -m p2pkube ...`` processes forked from one that has
  imported p2pkube already (the tests' clusters start theirs this way).

Why a package of its own: ``bench/`` and ``p2pkube/`` never import ``tests/`` (an import-linter
contract in pyproject.toml), yet the benchmarks need the same lab and the same chaos run as
the tests, so one copy lives here. It is not product code either: it drives the product from
outside the way a user or an operator would (the lab needs root, ``ip netns`` and nftables),
and is not installed with p2pkube (pyproject.toml's package list names only ``p2pkube`` and
``signaling``). ``tests/`` and ``bench/`` import it; it imports neither of them.
"""
