"""Benchmarks that write BENCHMARKS.md: `python -m bench.NAME` from the repository root (see each docstring).

Every script follows one convention, written down in bench/common.py: `measure(args) -> dict` saved to
bench/NAME.json, `render(dict) -> str` for its section, `main()` publishing both; `python -m bench --render-all`
rebuilds BENCHMARKS.md from the committed JSON.
"""
