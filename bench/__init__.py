"""eventmig's benchmarks: reproducible runs of migrate, verify and rebuild against two baselines.

Run them with ``python -m bench`` (``make bench``); see ``bench/README.md``.
"""
