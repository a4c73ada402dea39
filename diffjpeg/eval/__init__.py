"""Evaluation: reports and benchmarks that users run (nothing in the library imports this package)."""
