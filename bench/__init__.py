"""Benchmarks that write BENCHMARKS.md: `python -m bench.<script>` from the repository root (see each docstring)."""
