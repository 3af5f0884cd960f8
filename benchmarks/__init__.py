"""chaos_shims benchmarks: what the library costs a bot, against the goals of issue 6.

Run every benchmark, side by side, with one command from the repository root (the project's
virtualenv active, installed as ``scripts/test.sh`` does)::

    python -m benchmarks            # the full run: about 5 minutes on 2 cores
    python -m benchmarks --quick    # a smoke run: about a minute, same rows, fewer repetitions

It prints one table (goal, measured median, comparison, verdict) and writes every number to
``benchmarks/results/latest.json``. Method and published numbers: docs/PERFORMANCE.md.
Benchmarks are not timed tests: none of them runs in CI's pass/fail path.
"""
