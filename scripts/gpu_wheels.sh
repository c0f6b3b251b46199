#!/usr/bin/env bash
# Prepares HERE, on a machine with a package index, what scripts/gpu_check.sh needs on a GPU machine that
# has none: the wheels of the packages kd-sweep imports that the GPU image lacks, built for its Python
# (CPython 3.12, manylinux x86_64), and shared/bench/plain_loop.py (the bench's reference loop, which lives
# beside the repository and so does not travel). All of it goes to build/gpu-wheels/, which .gitignore's
# /build/ already ignores, so that the device tool's `carry` takes it along:
#
#   bash scripts/gpu_wheels.sh
#   run(command="bash scripts/gpu_check.sh", carry=["build/gpu-wheels"], timeout_s=540)
#
# What it takes: pydantic, faiss-cpu and mlflow with every dependency of theirs that the image
# (scripts/gpu_image_packages.txt) does not hold, ~55 MB; the device tool carries 64 MiB with the working
# tree. What it cannot take: Ray (its wheel alone is ~75 MB), so on the GPU machine `kd-sweep run` does not
# run (its GPU test skips, and `kd-sweep bench` stops at its orchestration section); faiss-gpu (a CUDA 12
# build, beside CUDA 12 runtime libraries of hundreds of MB; the image's CUDA is 13): the GPU k-NN there is
# kd-sweep's exact matmul fallback.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${GPU_WHEELS:-build/gpu-wheels}
PYV=${GPU_PYTHON_VERSION:-3.12}
LIMIT_MB=${GPU_WHEELS_LIMIT_MB:-60}  # the working tree (~1.3 MB) travels in the same 64 MiB
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

# The versions this checkout is tested with (its environment), else pyproject's lower bounds.
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo "$2"; }
WANT=("pydantic==$(version pydantic 2.14.4)" "faiss-cpu==$(version faiss-cpu 1.15.1)" "mlflow==$(version mlflow 3.17.2)")

ALL=$(mktemp -d)
trap 'rm -rf "$ALL"' EXIT
echo "gpu_wheels: downloading ${WANT[*]} and their dependencies for CPython $PYV, manylinux x86_64"
"$PY" -m pip download -q --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$ALL" "${WANT[@]}"

rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" - "$ALL" "$DEST" scripts/gpu_image_packages.txt <<'PYEOF'
"""Keep the wheels of the packages the image lacks (names compared as PEP 503 normalises them)."""
import re
import shutil
import sys
from pathlib import Path

src, dest, listing = (Path(a) for a in sys.argv[1:])
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
have = {norm(w) for line in listing.read_text().splitlines() if not line.startswith("#") for w in line.split()}
for whl in sorted(src.glob("*.whl")):
    name = norm(whl.name.split("-")[0])
    if name in have:
        continue
    shutil.copy2(whl, dest / whl.name)
    print(f"  {whl.stat().st_size / 1e6:6.2f} MB  {whl.name}")
PYEOF

PLAIN=$(dirname "$PWD")/shared/bench/plain_loop.py
if [ -f "$PLAIN" ]; then
    cp "$PLAIN" "$DEST/plain_loop.py"
    echo "gpu_wheels: copied $PLAIN"
else
    echo "gpu_wheels: $PLAIN not found: the bench's plain-loop ratio will not be measured there"
fi
MB=$(du -sm "$DEST" | cut -f1)
echo "gpu_wheels: $DEST holds $(ls "$DEST" | wc -l) files, $MB MB"
if [ "$MB" -gt "$LIMIT_MB" ]; then
    echo "gpu_wheels: over $LIMIT_MB MB: the device tool would refuse the working tree (64 MiB in all)" >&2
    exit 1
fi
echo "gpu_wheels: carry it: run(command=\"bash scripts/gpu_check.sh\", carry=[\"$DEST\"], timeout_s=540)"
