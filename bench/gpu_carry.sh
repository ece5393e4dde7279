#!/bin/bash
# Builds .gpu/ (git-ignored via .git/info/exclude) for bench/gpu_check.sh: the pure-Python packages edgetune
# needs that the GPU host's image lacks, copied from .venv, cp312 wheels of the two compiled ones, and as
# much of ../shared/data/cifar10-12k as the device tool's 64 MiB carry leaves room for beside the tree.
# The host has Python 3.12 with torch, torchvision, numpy, scipy, onnx, typer, rich, pandas (no registry).
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)  # a worktree's .git is a file
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf .gpu && mkdir -p .gpu/site .gpu/whl
shopt -s nocaseglob  # with their metadata: pytest plugins there (jaxtyping) ask for typeguard's version
for p in nni optuna alembic mako colorlog json_tricks schema typeguard pydot torch_pruning platformdirs astor prettytable wcwidth; do
  cp -r "$site/$p" "$site/$p"-*.dist-info .gpu/site/
done
cp "$site/pynvml.py" -r "$site"/nvidia_ml_py-*.dist-info .gpu/site/  # NVML's energy counter: one module
find .gpu/site -name __pycache__ -prune -exec rm -rf {} +
version() { .venv/bin/pip show "$1" | awk '/^Version/{print $2}'; }
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  "sqlalchemy==$(version sqlalchemy)" "moocore==$(version moocore)" cffi
# The carry holds the tree, .gpu/ and the data: val/ whole, then the first N training images of every class,
# N as large as the 64 MiB limit allows (the whole subset, about 11.4 MB of JPEGs, has fitted so far).
limit=$((60 * 1024 * 1024))
tree=$(git ls-files -z | xargs -0 du -cb --apparent-size | tail -1 | cut -f1)
data=../shared/data/cifar10-12k
mkdir -p .gpu/cifar10-12k && cp -r $data/val .gpu/cifar10-12k/
used=$((tree + $(du -sb --apparent-size .gpu | cut -f1)))
train=$(du -sb --apparent-size $data/train | cut -f1)
images=$(find $data/train -name '*.jpg' | wc -l)
classes=$(ls $data/train | wc -l)
per_class=$(( (limit - used) * images / train / classes ))
(( per_class > images / classes )) && per_class=$((images / classes))
for folder in $data/train/*/; do
  mkdir -p .gpu/cifar10-12k/train/$(basename $folder)
  ls $folder | sort | sed -n "1,${per_class}p" | sed "s|^|$folder|" | xargs cp -t .gpu/cifar10-12k/train/$(basename $folder)
done
used=$((tree + $(du -sb --apparent-size .gpu | cut -f1)))
echo "cifar10-12k: $per_class training images a class carried"
echo "tree + .gpu: $((used / 1024 / 1024)) MiB of the 64 MiB carry"
du -sh .gpu
