"""Latency and memory benchmarks; results are recorded in RESULTS.md, never asserted in tests."""
