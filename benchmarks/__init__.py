"""Throughput benchmarks; each appends JSON lines to benchmarks/results.jsonl."""
