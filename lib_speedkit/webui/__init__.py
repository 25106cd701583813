"""The adapter package: the only part of lib_speedkit that imports the AUTOMATIC1111 WebUI.

lifecycle.py    everything registered with the WebUI (patches, callbacks, routes), and unload
generation.py   one generation: the plan through the engine with WebUI appliers, and its record
hooks.py        the generations in progress (per p) and the hooks the script, bench and patches call
attention.py    the host's attention optimizers: titles, switching, the kernel variants
cutoff.py       the guidance cutoff inside the host's CFG denoiser
fast_path.py    when a pass may use CUDA graphs / the lean step; graph keys; the graph cache
options.py      host options remembered and restored exactly; per-call views of them
host_patches.py the patches on the WebUI's own functions (restore, CFG denoiser, API 422)
api.py          the REST routes (status, bench, slim)
access.py       the routes' authentication (--api-auth, the login) and the --api rule
xyz.py          the XYZ-plot axes, one per setting
bench.py        the benchmark's generations, history, REST endpoint
tab.py          the Speedkit tab's handlers
slim.py         checkpoint slimming: REST endpoint, tab handler, load test
model_files.py  which files slimming may read and where it writes
"""
