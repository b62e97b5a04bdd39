#!/usr/bin/env bash
# Multi-node GPU training under Slurm: one process per node, each owning all GPUs of its node. mixjax.main
# sees SLURM_NTASKS > 1 and calls jax.distributed.initialize(), which reads the coordinator, process count and
# process id from Slurm's environment; the global batch is sharded over all GPUs of all nodes.
#
#   sbatch --nodes=4 launch/slurm_gpu.sh --config=configs/deit.py:deit,model=deit_small \
#          --workdir=/shared/runs/deit/deit_small/deit_ep300
#
# The workdir must be on storage every node sees (checkpoints are written collectively). Resubmitting the same
# command resumes; the job checkpoints on SIGTERM (sent --signal seconds before the time limit).
#SBATCH --job-name=mixjax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=72:00:00
#SBATCH --signal=TERM@300
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
srun --kill-on-bad-exit=1 "${PYTHON:-python3}" -m mixjax.main --multihost=auto "$@"
