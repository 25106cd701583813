#!/usr/bin/env bash
# Rebuild .whl/ (gitignored): what benchmarks/gpu_machine.sh carries to a GPU machine that cannot
# reach a package index, so that A1111 v1.10.1 runs there with `--nowebui --api`.
#
# The machine (the device tool's image: Python 3.12.3, x86-64, manylinux) already has torch 2.11,
# torchvision, numpy, Pillow, safetensors, opencv, timm, torchmetrics, accelerate, requests, PyYAML,
# einops, psutil, regex, ... but lacks most of A1111's own packages, and has versions A1111 cannot
# use of others (transformers 5, tokenizers 0.23, huggingface_hub 1.x, pytorch-lightning 2,
# httpx 0.28 / httpcore 1 / anyio 4). gpu_machine.sh installs every .whl/*.whl with
# `pip install --no-index --no-deps --target /tmp/site` and puts /tmp/site first on PYTHONPATH,
# so the pins below win over the machine's copies. Hence:
#   - exactly one version of each package (two versions break that --no-deps install);
#   - cp312 or pure-Python wheels only (pip download --only-binary for Python 3.12, manylinux);
#   - a package's own dependencies come too unless the machine has a usable version (check with
#     `unzip -p .whl/NAME-*.whl '*/METADATA' | grep ^Requires-Dist`);
#   - four packages have no wheel on PyPI and are built here from their sdists (pip wheel);
#   - gradio's wheel is rebuilt without gradio/templates/ (its ~19 MB web frontend, unused with
#     --nowebui), since the device tool carries at most 64 MiB with the repository;
#   - the A1111 1.10.1 tarball (with its repositories/) is copied to .whl/a1111.tar.gz.
# Versions: A1111's requirements_versions.txt where a cp312 wheel exists, else the version the
# test WebUI venv (tests/README.md) uses; transformers 4.44.2 / tokenizers 0.19.1 because
# A1111's transformers 4.30.2 needs tokenizers 0.13, which has no cp312 wheel.
#
# Usage, from the repository root (needs python3 with pip, network access to PyPI):
#   bash benchmarks/gpu_wheels.sh [A1111_TARBALL]
# A1111_TARBALL defaults to ../shared/a1111/stable-diffusion-webui-v1.10.1.tar.gz.
set -euo pipefail

# NAME==VERSION, one a line; "sdist" after it: built locally from the sdist (no wheel on PyPI).
PINS='
fastapi==0.94.0
starlette==0.26.1
pydantic==1.10.27
uvicorn==0.55.0
anyio==3.7.1
sniffio==1.3.1
h11==0.12.0
httpx==0.24.1
httpcore==0.15.0
gradio==3.41.2
gradio_client==0.5.0
aiofiles==23.2.1
altair==5.5.0
importlib_resources==6.5.2
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
referencing==0.37.0
rpds-py==2026.9.1
ffmpy==1.0.0
pydub==0.25.1
semantic-version==2.10.0
websockets==11.0.3
orjson==3.13.0
python-multipart==0.0.34
GitPython==3.1.32
gitdb==4.0.12
smmap==5.0.3
blendmodes==2022
aenum==3.1.17
deprecation==2.1.0
clean-fid==0.1.35
diskcache==5.6.3
inflection==0.5.1
kornia==0.6.7
lark==1.1.2
omegaconf==2.2.3
open-clip-torch==2.20.0
ftfy==6.3.1
wcwidth==0.9.4
piexif==1.1.3
resize-right==0.0.2
spandrel==0.3.4
spandrel-extra-arches==0.1.1
tomesd==0.1.3
torchsde==0.2.6
trampoline==0.1.2
pytz==2026.6
transformers==4.44.2
tokenizers==0.19.1
huggingface_hub==0.36.2
pytorch_lightning==1.9.4
pillow-avif-plugin==1.4.3
facexlib==0.3.0
jsonmerge==1.8.0 sdist
antlr4-python3-runtime==4.9.3 sdist
openai-clip==1.0.1 sdist
filterpy==1.4.5 sdist
'

cd "$(dirname "$0")/.."
tarball=${1:-../shared/a1111/stable-diffusion-webui-v1.10.1.tar.gz}
[ -f "$tarball" ] || { echo "no A1111 tarball at $tarball" >&2; exit 1; }
# The pristine tarball of ../shared/a1111/README.md (A1111 at v1.10.1 plus its repositories/).
sha=088848dc78f10ba1e38d4e2d9dec464d47ab48f32dd9e1dacc213e0141ee8a02
echo "$sha  $tarball" | sha256sum -c --quiet - || { echo "$tarball is not the v1.10.1 tarball" >&2; exit 1; }
py=${PYTHON:-python3}
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done

# Build in a scratch folder outside the repository, then swap it in.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/whl"
binary=()
sdist=()
while read -r pin kind; do
  [ -n "$pin" ] || continue
  if [ "$kind" = sdist ]; then sdist+=("$pin"); else binary+=("$pin"); fi
done <<<"$PINS"

"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$work/whl" "${binary[@]}"
sdist_names=$(printf '%s\n' "${sdist[@]}" | sed 's/==.*//' | paste -sd,)
"$py" -m pip wheel -q --no-deps --no-binary="$sdist_names" -w "$work/whl" "${sdist[@]}"

# gradio without gradio/templates/ (frontend + cdn assets); RECORD loses their lines.
"$py" - "$work"/whl/gradio-*.whl <<'EOF'
import os, sys, zipfile
path = sys.argv[1]
drop = "gradio/templates/"
tmp = path + ".tmp"
with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        if info.filename.startswith(drop):
            continue
        data = src.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines(keepends=True)
            data = "".join(line for line in lines if not line.startswith(drop)).encode()
        dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
os.replace(tmp, path)
EOF

# One version of each package.
dupes=$(ls "$work/whl" | sed -E 's/-[0-9].*//' | tr 'A-Z-' 'a-z_' | sort | uniq -d)
[ -z "$dupes" ] || { echo "more than one wheel of: $dupes" >&2; exit 1; }
n=$(ls "$work/whl" | wc -l)
want=$(grep -c '==' <<<"$PINS")
[ "$n" -eq "$want" ] || { echo "got $n wheels, expected $want" >&2; exit 1; }

cp "$tarball" "$work/whl/a1111.tar.gz"
chmod 644 "$work/whl/a1111.tar.gz"
rm -rf .whl
mv "$work/whl" .whl
echo "$n wheels + a1111.tar.gz in .whl/, $(du -sh .whl | cut -f1)"
