"""Benchmarks of what the operator renders, run as local processes (`make bench`); not part of the test suite."""
