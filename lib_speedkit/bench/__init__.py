"""The benchmark: presets, statistics, telemetry, baselines, history and a host-agnostic runner.

Nothing here imports the WebUI; the adapter supplies a `generate()` callable (see runner.py).
"""
