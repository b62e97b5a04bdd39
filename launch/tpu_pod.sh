#!/usr/bin/env bash
# TPU VM pod: the same command on every worker (one process per host). jax.distributed.initialize() discovers
# the pod topology itself; the workdir should be a GCS path all workers can write (gs://bucket/runs/...).
#
#   TPU_NAME=my-v4-64 ZONE=us-central2-b launch/tpu_pod.sh \
#       --config=configs/rsb_a2.py:rsb,model=resnet50 --workdir=gs://my-bucket/runs/rsb_a2/resnet50/rsb_ep300
#
# REMOTE_DIR is the checkout of this repository on the workers (default: ~/mixjax); PYTHON the interpreter there.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU zone}"
REMOTE_DIR="${REMOTE_DIR:-~/mixjax}"
ARGS=$(printf '%q ' "$@")
exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"} --worker=all \
  --command="cd $REMOTE_DIR && ${PYTHON:-python3} -m mixjax.main --multihost=on $ARGS"
