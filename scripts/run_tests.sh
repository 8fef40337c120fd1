#!/usr/bin/env bash
# The CI test suite: everything except @pytest.mark.slow. A single-node SLURM is started by
# the SLURM tests themselves (scripts/slurm_local.sh) and stopped afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
start=$(date +%s)
"$VENV/bin/python" -m pytest -m "not slow" -q --timeout=900 --durations=20 "$@"
rc=$?
echo "[tests] wall time $(( $(date +%s) - start )) s"
[ $rc -eq 5 ] && { echo "[tests] no tests collected"; exit 1; }
exit $rc
