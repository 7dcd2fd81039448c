#!/usr/bin/env bash
# Download into .whl/ (ignored by git) the wheels that benchmarks/gpu_session.sh installs on the GPU machine (the
# `device` tool's H200 image has torch, torchvision, huggingface_hub, safetensors, OpenCV, pytest and NVML's
# nvidia-ml-py, but not these): open_clip_torch and its ftfy and wcwidth, PyAV, and timm, each at the version
# installed here (the one the test suite ran with), built for that machine's CPython 3.12 on x86_64. About 40 MB;
# the device tool carries at most 64 MiB with the working tree. Run from the repository root, where pip works:
#
#   bash benchmarks/gpu_wheels.sh            # then run(command="bash benchmarks/gpu_session.sh", carry=[".whl"])
set -euo pipefail
DEST=${DEST:-.whl}
mkdir -p "$DEST"
PACKAGES=(open_clip_torch ftfy wcwidth av timm)
PINS=$(python3 - "${PACKAGES[@]}" <<'PY'
import sys
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))
PY
)
rm -f "$DEST"/*.whl  # one version of each: two stop the install there
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
    -d "$DEST" $PINS
ls -l "$DEST"
du -sh "$DEST"
