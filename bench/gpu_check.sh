#!/bin/bash
# GPU check for the CUDA adapter, run on the lent GPU host over a copy of the tree with .gpu/ carried
# (bench/gpu_carry.sh builds it): its tests, then a 4-trial study on cuda:0 that targets memory too.
# Results land in $OUT (the device tool). Here: run(command="bash bench/gpu_check.sh", carry=[".gpu"]).
set -u
export PYTHONUNBUFFERED=1
nvidia-smi -L; python3 --version
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
mkdir -p /tmp/p && ln -sfn "$PWD" /tmp/p/edgetune
export PYTHONPATH=/tmp/p:/tmp/site:$PWD/.gpu/site
python3 -c "import torch, edgetune.devices.cuda, edgetune.searcher.cli; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1
tune() { python3 -c 'import sys; from edgetune.searcher.cli import main; sys.argv[0]="tune"; main()' "$@"; }
tune devices 2>&1 | tee $OUT/devices.txt
timeout 180 python3 -m pytest tests/test_cuda.py tests/test_nni_compat.py -v -p no:warnings -p no:cacheprovider 2>&1 | tee $OUT/pytest.txt
export EDGETUNE_CACHE=/tmp/cache
timeout 300 bash -c "$(declare -f tune); tune start --model resnet20 --device cuda:0 --trials 4 --target latency,memory,top1 \
  --storage sqlite:////tmp/gpu.db --study-name gpu --set baseline.epochs=3 --set finetune.epochs=1 --set device.latency_max_seconds=1" 2>&1 | tee $OUT/study.txt
tune pareto gpu --storage sqlite:////tmp/gpu.db 2>&1 | tee $OUT/pareto.txt
cp /tmp/gpu.db $OUT/ 2>/dev/null
true
