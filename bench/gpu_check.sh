#!/bin/bash
# GPU check, run on the lent GPU host over a copy of the tree with .gpu/ carried (bench/gpu_carry.sh builds it).
# Results land in $OUT (the device tool). Parts, run in the order given (default: tests default cifar):
#   nvidia   issue 31: bench/cuda_runtime.py (recorded ResNet-56 latency vs a hand-written CUDA graph vs eager,
#            energy x3), then the default study measured AND trained on cuda:0 with --target latency,energy,top1
#            (8 trials, seed 0) and its front (about 5 min)
#   adapter  the CUDA adapter's tests and a 4-trial study measured on cuda:0 (about 2 min; a call of 420 s)
#   tests    [train]'s GPU tests: plumbing on cuda, QAT there, two studies training on one GPU at once (about 2 min)
#   default  the default study (ResNet-56 on digits, seed 0, 8 trials) trained on cuda:0, then its first 5 trials
#            (the recipe seeds) trained on the host's CPU from the same baseline; phase table and comparison (about 3 min)
#   cifar    the CIFAR task (ResNet-20 on .gpu/cifar10-12k): 20 trials trained on cuda:0, then its 5 recipe seeds
#            trained on the host's CPU from the same baseline; phase table and comparison (about 5 min)
# The host has no OpenVINO: models are deployed and timed on the host CPU in plain PyTorch (device "cpu"),
# 8 threads, 1 s per measurement at most after 0.25 s of warm-up (the default's 1..16-thread sweep would make
# timing most of a trial).
# Each part's inner timeouts sum to less than its call's timeout_s below, so a slow step loses only itself.
# 15 minutes of device time a session, the machine's start (minutes) included: one call a session, a second
# only while status says budget_left_s >= its timeout_s + 240 (no machine starts with under 4 minutes left).
# In order of what they settle:
#   run(command="bash bench/gpu_check.sh cifar", carry=[".gpu"], timeout_s=480)          # issue 30: 1/4, 1 pt, half
#   run(command="bash bench/gpu_check.sh nvidia", carry=[".gpu"], timeout_s=420)         # issue 31, all of it
#   run(command="bash bench/gpu_check.sh tests default", carry=[".gpu"], timeout_s=420)  # issue 30: gpu tests, table
set -u
export PYTHONUNBUFFERED=1
nvidia-smi -L; python3 --version; nproc
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
mkdir -p /tmp/p && ln -sfn "$PWD" /tmp/p/edgetune
export PYTHONPATH=/tmp/p:/tmp/site:$PWD/.gpu/site
python3 -c "import torch, edgetune.devices.cuda, edgetune.searcher.cli; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1
python3 -c "import pynvml; pynvml.nvmlInit(); print('NVML', pynvml.nvmlSystemGetDriverVersion())" 2>&1 | tail -1  # or why not
tune() { python3 -c 'import sys; from edgetune.searcher.cli import main; sys.argv[0]="tune"; main()' "$@"; }
export EDGETUNE_CACHE=/tmp/cache
# Warm-up 0.25 s, not 1: the same paired ratios within 1.4% at a fixed thread count, and measurement is most
# of a trial's fixed cost once training is fast (docs/benchmarks/trial-cost.md, bench/warmup.py).
MEASURE=(--set device.name=cpu --set device.threads=8 --set device.latency_max_seconds=1 --set device.latency_warmup_seconds=0.25)
cost() { python3 -m bench.trial_cost "$@"; }
# costed NAME SECONDS ARGS...: bench.trial_cost with its study kept in /tmp/NAME, figures to $OUT/NAME.json; cut
# off by the timeout, the trials that completed are read back from that database
costed() {
  local name=$1 seconds=$2; shift 2
  time timeout "$seconds" python3 -m bench.trial_cost "$@" --folder /tmp/$name --json $OUT/$name.json
  [ -s $OUT/$name.json ] || { echo "$name: cut off at ${seconds} s; its completed trials:";
    cost --study cost --storage sqlite:////tmp/$name/cost.db --json $OUT/$name.json; }
}
baseline_of() { ls -t /tmp/cache/baselines/"$1"-*.pt 2>/dev/null | head -1; }

parts="${*:-tests default cifar}"
for part in $parts; do
case $part in
nvidia)
  nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv | tee $OUT/nvidia.txt
  timeout 120 python3 -m bench.cuda_runtime --json $OUT/cuda_runtime.json 2>&1 | tee -a $OUT/nvidia.txt
  timeout 250 bash -c "$(declare -f tune); tune start --device cuda:0 --target latency,energy,top1 --trials 8 --seed 0 \
    --storage sqlite:////tmp/energy.db --study-name energy --set train.device=cuda:0" 2>&1 | tee $OUT/energy-study.txt
  tune pareto energy --storage sqlite:////tmp/energy.db 2>&1 | tee $OUT/energy-pareto.txt
  ;;
adapter)
  tune devices 2>&1 | tee $OUT/devices.txt
  timeout 120 python3 -m pytest tests/test_cuda.py tests/test_nni_compat.py -v -p no:warnings -p no:cacheprovider 2>&1 | tee $OUT/pytest.txt
  timeout 240 bash -c "$(declare -f tune); tune start --model resnet20 --device cuda:0 --trials 4 --target latency,memory,top1 \
    --storage sqlite:////tmp/gpu.db --study-name gpu --set baseline.epochs=3 --set finetune.epochs=1 --set device.latency_max_seconds=1" 2>&1 | tee $OUT/study.txt
  tune pareto gpu --storage sqlite:////tmp/gpu.db 2>&1 | tee $OUT/pareto.txt
  ;;
tests)
  timeout 130 python3 -m pytest tests/test_accelerator.py tests/test_data_stream.py -m gpu -v -p no:warnings -p no:cacheprovider 2>&1 | tee $OUT/pytest-train.txt
  ;;
default)
  costed default-gpu 100 --trials 8 "${MEASURE[@]}" --set train.device=cuda:0 2>&1 | tee $OUT/default.txt
  base=$(baseline_of resnet56-digits)
  costed default-cpu 150 --trials 5 "${MEASURE[@]}" --set train.device=cpu --set model.checkpoint=$base 2>&1 | tee -a $OUT/default.txt
  cost --compare $OUT/default-cpu.json $OUT/default-gpu.json 2>&1 | tee -a $OUT/default.txt
  ;;
cifar)
  CIFAR=(--set model.name=resnet20 --set data.name=imagefolder --set data.dir=$PWD/.gpu/cifar10-12k --set baseline.epochs=15
         --set baseline.lr=0.05 --set finetune.epochs=2 "${MEASURE[@]}")  # bench/search_efficiency.py's cifar task
  ls .gpu/cifar10-12k/train/*/ | grep -c jpg | sed 's/^/training images carried: /' | tee $OUT/cifar.txt
  costed cifar-gpu 260 --trials 20 "${CIFAR[@]}" --set train.device=cuda:0 2>&1 | tee -a $OUT/cifar.txt
  base=$(baseline_of resnet20-imagefolder)
  costed cifar-cpu 180 --trials 5 "${CIFAR[@]}" --set train.device=cpu --set model.checkpoint=$base 2>&1 | tee -a $OUT/cifar.txt
  cost --compare $OUT/cifar-cpu.json $OUT/cifar-gpu.json 2>&1 | tee -a $OUT/cifar.txt
  ;;
*) echo "unknown part $part (nvidia, adapter, tests, default, cifar)"; exit 2 ;;
esac
done
true
