"""Benchmarks (`make bench`): figures printed as `BENCH <name> <value> <unit>`, each taken
against a baseline measured in the same run, and collected in build/bench.json.

bench/run.py is the entry point; bench/mp_garden.py is MicroPython code (run on the emulated
board, never imported by CPython).
"""
