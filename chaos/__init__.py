"""Chaos run of the whole streaming platform against the simulator with faults on: ``python -m chaos --duration 600``."""
