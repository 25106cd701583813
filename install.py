"""Run by the AUTOMATIC1111 WebUI (as a subprocess, at every launch) to install what Speedkit needs.

Installs only small, pure helpers when they are missing: `psutil` (CPU use during benchmarks) and
`nvidia-ml-py` (imported as `pynvml`: GPU utilisation, clocks, power). Never installs, upgrades or
downgrades torch; xformers is optional and only reported.
"""

import launch

REQUIREMENTS = {
    # import name: pip requirement
    "psutil": "psutil",
    "pynvml": "nvidia-ml-py",
}


def install_missing() -> None:
    for module, requirement in REQUIREMENTS.items():
        if not launch.is_installed(module):
            launch.run_pip(f"install {requirement}", f"{requirement} for sd-webui-speedkit")


def report_xformers() -> None:
    if launch.is_installed("xformers"):
        state = "installed"
    else:
        state = "not installed (optional; the WebUI offers it when started with --xformers)"
    print(f"sd-webui-speedkit: xformers {state}")


install_missing()
report_xformers()
