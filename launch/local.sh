#!/usr/bin/env bash
# Train on every GPU of this machine (one process per GPU, DDP over NCCL):
#   launch/local.sh --config configs/ade20k.yaml [--section.key value ...]
# NUM_GPUS=4 launch/local.sh ... uses the first four.
set -euo pipefail
NUM_GPUS=${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
if [ "$NUM_GPUS" -lt 1 ]; then
  echo "launch/local.sh: no GPU found (set NUM_GPUS, or run cyclegan-train directly on CPU)" >&2
  exit 2
fi
exec accelerate launch --multi_gpu --num_machines 1 --num_processes "$NUM_GPUS" \
  --mixed_precision no --dynamo_backend no -m cyclegan.train "$@"
