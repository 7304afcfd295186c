"""Benchmarks for `make bench`: numbers printed beside peers measured in the same run."""
