#!/usr/bin/env python3
"""Developer commands for sd-webui-speedkit; each sets up what it needs on a fresh machine.

    python3 dev.py test [PYTEST ARGS]    lint, then every test (tier 1; tier 2 too when an A1111 is given)
    python3 dev.py bench [BENCH ARGS]    the standalone UNet bench on this machine (GPU: SD1.5 size; CPU: tiny)

`test` makes `.venv` (CPU torch, the test group of pyproject.toml) and runs ruff and pytest in it.
With an A1111 v1.10.1 (`SPEEDKIT_A1111_DIR`: a checkout; or `SPEEDKIT_A1111_TARBALL`: the release
tarball with its repositories, unpacked into the temp folder), it instead builds the WebUI's own venv as
tests/README.md describes and runs both tiers there (tier 2 starts that WebUI on the CPU).
`bench` makes `.venv-bench` (torch: the CUDA build when `nvidia-smi` finds a GPU, else the CPU
build) and runs `python -m lib_speedkit bench --standalone`.

Only the standard library is used here: this file runs before anything is installed. Nothing is
installed outside the repository's own `.venv*` folders and the WebUI checkout's `venv`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# Not inside the repository: Gradio refuses to serve files from a path with a hidden folder in it
# (403), and the WebUI serves its own JavaScript that way.
A1111_CACHE = Path(tempfile.gettempdir())
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TIER1_TORCH = "2.13.0"
# The WebUI venv needs torchvision, which PyPI ships only as CUDA builds (they run on the CPU too).
# `===` asks for exactly this version string: a `+cpu` wheel a local pip configuration offers
# (find-links, a config file) cannot satisfy it, unlike `==`.
WEBUI_TORCH = ("torch===2.14.1", "torchvision===0.29.1")
SDKIT = "stable-diffusion-sdkit==2.1.5"  # the `ldm` package; installed without its old pins
BENCH_PACKAGES = ("numpy>=1.26", "pillow>=9.5", "einops>=0.4.1", "omegaconf>=2.2.3", "tomesd==0.1.3")
# A1111's requirements_versions.txt, adjusted (tests/README.md says why): CRLF endings, torch
# installed separately, setuptools 69.5.1 conflicts with torch >= 2.13 and >= 81 lacks pkg_resources.
SETUPTOOLS = "setuptools==80.9.0"


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def run(*command: object, env: dict | None = None, cwd: Path | None = None) -> None:
    say(" ".join(str(part) for part in command))
    subprocess.run([str(part) for part in command], check=True, env=env, cwd=cwd)


# --------------------------------------------------------------------------- virtual environments


def make_venv(path: Path) -> Path:
    """A venv at `path` with pip >= 25.1 (for `--group`); returns its python."""
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        say(f"creating {path}")
        venv.EnvBuilder(with_pip=True).create(path)
        run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip>=25.1")
    return python


def ready(path: Path, spec: str) -> bool:
    marker = path / ".speedkit-ready"
    return marker.exists() and marker.read_text() == spec


def mark_ready(path: Path, spec: str) -> None:
    (path / ".speedkit-ready").write_text(spec)


def reachable(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except OSError:
        return False


def cpu_torch_source() -> list[str]:
    """pip arguments that give the CPU build of torch: PyTorch's CPU index where it answers;
    otherwise pip's own configuration (which may offer a local CPU wheel, or only the CUDA build)."""
    if reachable(TORCH_CPU_INDEX + "/torch/"):
        return ["--index-url", TORCH_CPU_INDEX]
    say(f"{TORCH_CPU_INDEX} does not answer: torch comes from pip's configured index (a CUDA build is several GB)")
    return []


def tier1_venv() -> Path:
    path = ROOT / ".venv"
    python = make_venv(path)
    spec = f"torch {TIER1_TORCH}; {SDKIT}; {pyproject_hash()}"
    if not ready(path, spec):
        run(python, "-m", "pip", "install", "--quiet", f"torch=={TIER1_TORCH}", *cpu_torch_source())
        run(python, "-m", "pip", "install", "--quiet", "--group", "test", cwd=ROOT)
        run(python, "-m", "pip", "install", "--quiet", "--no-deps", SDKIT)
        mark_ready(path, spec)
    return python


def pyproject_hash() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]


# --------------------------------------------------------------------------- the WebUI for tier 2


def a1111_checkout() -> Path | None:
    """SPEEDKIT_A1111_DIR, or SPEEDKIT_A1111_TARBALL unpacked once into the temp folder; None: neither set."""
    directory = os.environ.get("SPEEDKIT_A1111_DIR", "").strip()
    if directory:
        return Path(directory).expanduser().resolve()
    tarball = os.environ.get("SPEEDKIT_A1111_TARBALL", "").strip()
    if not tarball:
        return None
    tarball_path = Path(tarball).expanduser().resolve()
    digest = hashlib.sha256(tarball_path.read_bytes()).hexdigest()[:12]
    target = A1111_CACHE / f"speedkit-a1111-{digest}"
    checkout = target / "stable-diffusion-webui"
    if not (checkout / "launch.py").exists():
        say(f"unpacking {tarball_path} into {target}")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        with tarfile.open(tarball_path) as archive:
            archive.extractall(target, filter="data")
    return checkout


def webui_requirements(checkout: Path) -> Path:
    """requirements_versions.txt with the adjustments of tests/README.md."""
    lines = (checkout / "requirements_versions.txt").read_text().replace("\r", "").splitlines()
    adjusted = [SETUPTOOLS if line.startswith("setuptools==") else line for line in lines if line.strip() != "torch"]
    path = checkout / "speedkit-test-requirements.txt"
    path.write_text("\n".join(adjusted) + "\n")
    return path


def webui_venv(checkout: Path) -> Path:
    path = checkout / "venv"
    python = make_venv(path)
    requirements = webui_requirements(checkout)
    spec = f"{WEBUI_TORCH}; {requirements.read_text()}; {pyproject_hash()}"
    if not ready(path, spec):
        pip = (python, "-m", "pip", "install", "--quiet")
        run(*pip, *WEBUI_TORCH)
        run(*pip, "-r", requirements, *WEBUI_TORCH)
        run(*pip, "--no-deps", "openai-clip==1.0.1")  # `import clip` for k-diffusion; sources only
        # The test tools; A1111's pins stay as they are (constraints).
        run(*pip, "--group", "test", "--group", "webui", "-c", requirements, *WEBUI_TORCH, cwd=ROOT)
        check_torch_is_not_a_cpu_build(python)
        mark_ready(path, spec)
    return python


def check_torch_is_not_a_cpu_build(python: Path) -> None:
    version = subprocess.run(
        [str(python), "-c", "import torch, torchvision; print(torch.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if "+cpu" in version:
        sys.exit(f"[dev] the WebUI venv got torch {version}: torchvision needs PyPI's default build")


def chromium_note() -> None:
    if not (shutil.which("chromium") or Path("/usr/bin/chromium").exists()):
        say("no chromium: the browser tests will be skipped (Debian: apt-get update && apt-get install -y chromium)")


# --------------------------------------------------------------------------- commands


def test(pytest_args: list[str]) -> None:
    checkout = a1111_checkout()
    env = dict(os.environ)
    if checkout is None:
        python = tier1_venv()
        say("tier 2 is skipped: set SPEEDKIT_A1111_DIR (a checkout) or SPEEDKIT_A1111_TARBALL (tests/README.md)")
    else:
        python = webui_venv(checkout)
        chromium_note()
        repositories = checkout / "repositories"
        models = [repositories / "stable-diffusion-stability-ai", repositories / "generative-models"]  # ldm, sgm
        env |= {"SPEEDKIT_A1111_DIR": str(checkout), "PYTHONPATH": os.pathsep.join(map(str, models))}
    run(python, "-m", "ruff", "check", ".", cwd=ROOT)
    run(python, "-m", "ruff", "format", "--check", ".", cwd=ROOT)
    run(python, "-m", "pytest", *pytest_args, env=env, cwd=ROOT)


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return smi is not None and subprocess.run([smi, "-L"], capture_output=True, check=False).returncode == 0


def bench(bench_args: list[str]) -> None:
    path = ROOT / ".venv-bench"
    python = make_venv(path)
    gpu = has_nvidia_gpu()
    spec = f"torch {'cuda' if gpu else 'cpu'}; {SDKIT}; {BENCH_PACKAGES}"
    if not ready(path, spec):
        torch = ["torch"] if gpu else [f"torch=={TIER1_TORCH}", *cpu_torch_source()]
        run(python, "-m", "pip", "install", "--quiet", *torch)
        run(python, "-m", "pip", "install", "--quiet", *BENCH_PACKAGES)
        run(python, "-m", "pip", "install", "--quiet", "--no-deps", SDKIT)
        mark_ready(path, spec)
    run(python, "-m", "lib_speedkit", "bench", "--standalone", *bench_args, cwd=ROOT)


COMMANDS = {"test": test, "bench": bench}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in COMMANDS:
        sys.exit(__doc__)
    try:
        COMMANDS[argv[0]](argv[1:])
    except subprocess.CalledProcessError as error:
        sys.exit(f"[dev] failed ({error.returncode}): {' '.join(map(str, error.cmd))}")


if __name__ == "__main__":
    main(sys.argv[1:])
