"""Benchmarks that print figures (docs/benchmarks.md, docs/gpu.md); a package so its modules import one another
as `benchmarks.*` whatever else an interpreter has installed."""
