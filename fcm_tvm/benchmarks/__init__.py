"""Benchmark and GPU-check scripts: each prints a short table and saves JSON + Markdown."""
