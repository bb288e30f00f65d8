#!/usr/bin/env bash
# Start this node's share of a multi-node run: one `accelerate launch` per node, which
# starts one process per GPU. Called by launch/slurm.sbatch via srun; by hand:
#   NODE_RANK=0 NUM_NODES=2 MAIN_ADDR=node0 launch/node.sh --config configs/ade20k.yaml
# Environment (SLURM's names are used when set):
#   NODE_RANK (SLURM_NODEID), NUM_NODES (SLURM_NNODES), MAIN_ADDR (first host of the job),
#   MAIN_PORT (29500), GPUS_PER_NODE (GPUs visible here). USE_CPU=1 runs processes on CPU
#   with gloo: only for testing the launch on a machine without GPUs.
set -euo pipefail
NODE_RANK=${NODE_RANK:-${SLURM_NODEID:?set NODE_RANK or run under SLURM}}
NUM_NODES=${NUM_NODES:-${SLURM_NNODES:?set NUM_NODES or run under SLURM}}
MAIN_ADDR=${MAIN_ADDR:?set MAIN_ADDR (the first node of the job)}
MAIN_PORT=${MAIN_PORT:-29500}
if [ "${USE_CPU:-0}" = 1 ]; then
  export ACCELERATE_USE_CPU=1
  GPUS_PER_NODE=${GPUS_PER_NODE:-1}
else
  GPUS_PER_NODE=${GPUS_PER_NODE:-$(nvidia-smi -L | wc -l)}
fi
exec accelerate launch --multi_gpu \
  --num_machines "$NUM_NODES" --machine_rank "$NODE_RANK" \
  --num_processes $((NUM_NODES * GPUS_PER_NODE)) \
  --main_process_ip "$MAIN_ADDR" --main_process_port "$MAIN_PORT" \
  --rdzv_backend static --same_network \
  --mixed_precision no --dynamo_backend no \
  -m cyclegan.train "$@"
