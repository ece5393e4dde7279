#!/bin/bash
# Builds .gpu/ (git-ignored via .git/info/exclude) for bench/gpu_check.sh: the pure-Python packages edgetune
# needs that the GPU host's image lacks, copied from .venv, and cp312 wheels of the two compiled ones.
# The host has Python 3.12 with torch, torchvision, numpy, scipy, onnx, typer, rich, pandas (no registry).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf .gpu && mkdir -p .gpu/site .gpu/whl
shopt -s nocaseglob  # with their metadata: pytest plugins there (jaxtyping) ask for typeguard's version
for p in nni optuna alembic mako colorlog json_tricks schema typeguard pydot torch_pruning platformdirs astor prettytable wcwidth; do
  cp -r "$site/$p" "$site/$p"-*.dist-info .gpu/site/
done
find .gpu/site -name __pycache__ -prune -exec rm -rf {} +
version() { .venv/bin/pip show "$1" | awk '/^Version/{print $2}'; }
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  "sqlalchemy==$(version sqlalchemy)" "moocore==$(version moocore)" cffi
du -sh .gpu
