#!/usr/bin/env bash
# One host, all of its accelerators: JAX uses every local device, the global batch is split over them.
#
#   launch/local.sh --config=configs/rsb_a3.py:cutmix,model=resnet50 --workdir=runs/rsb_a3/resnet50/cutmix_ep100
#
# Extra flags go to mixjax.main (e.g. --config.data.data_dir=/data/tfds). Rerunning the same command resumes
# from the workdir's latest checkpoint. PYTHON selects the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m mixjax.main "$@"
