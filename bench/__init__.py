"""Benchmarks: shared pieces (corpus, runners, delay proxy) and one script per bench."""
