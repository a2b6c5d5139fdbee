"""Capacity: load generation and planning; for now the machine facts benchmarks print."""
