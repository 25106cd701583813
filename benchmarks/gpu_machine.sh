#!/usr/bin/env bash
# Run a whole-WebUI benchmark on a GPU machine that cannot reach a package index (the device tool
# of this workplace): A1111's packages that the machine lacks travel as wheels in .whl/ beside the
# A1111 1.10.1 tarball (.whl/a1111.tar.gz); docs/BENCHMARKS.md lists them. Usage, from the
# repository root:
#
#   bash benchmarks/gpu_machine.sh OUT_DIR benchmarks/webui_workloads.py --model sd15 [...]
#
# The script is put after --a1111/--out; its output goes to OUT_DIR.
set -euo pipefail
out=$1
shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/a1111
tar xzf .whl/a1111.tar.gz -C /tmp/a1111
webui=/tmp/a1111/stable-diffusion-webui
export PYTHONPATH=/tmp/site:$webui/repositories/stable-diffusion-stability-ai:$webui/repositories/generative-models
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.backends.cudnn.version())'
script=$1
shift
python3 "$script" --a1111 "$webui" --out "$out" "$@"
