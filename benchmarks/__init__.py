"""Benchmarks run by hand (`python benchmarks/relay.py`, `python benchmarks/recorder.py`).

A package so that `benchmarks/recorder.py` is the module `benchmarks.recorder`, not a second
top-level `recorder` beside the project's package (mypy refuses duplicate module names). Each
script run by path first puts the repository root in front of `sys.path`: Python puts the
script's own directory there, where `recorder.py` would shadow the project's `recorder`
package for every import that follows (the server's included).
"""
