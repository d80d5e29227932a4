"""Benchmarks: each ``bench_*.py`` writes JSON with ratios against a baseline measured in the same run."""
