"""Benchmark harness: a fast mock upstream, load generators, scenarios and reports."""
