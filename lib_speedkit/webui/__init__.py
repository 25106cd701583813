"""The adapter package: the only part of lib_speedkit that imports the AUTOMATIC1111 WebUI.

switches.py  per-generation switches (attention, cutoff, ToMe, channels-last), status route
bench.py     the benchmark: real generations with timing, the Speedkit tab, the bench route
"""
