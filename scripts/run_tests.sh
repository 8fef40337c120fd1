#!/usr/bin/env bash
# The CI test suite: everything except @pytest.mark.slow. A single-node SLURM is started by
# the SLURM tests themselves (scripts/slurm_local.sh) and stopped afterwards.
# Two pytest workers (pytest-xdist), one test file per worker at a time (--dist loadfile: a file's
# module fixtures, e.g. a collected LIBERO demo, are built once): the tests run torch on one
# thread, so the second core would otherwise sit idle. UWMBENCH_TEST_WORKERS=0 runs in one process.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
start=$(date +%s)
workers=${UWMBENCH_TEST_WORKERS:-2}
par=(); [ "$workers" != 0 ] && par=(-n "$workers" --dist loadfile)
"$VENV/bin/python" -m pytest -m "not slow" -q --timeout=900 --durations=25 "${par[@]}" "$@"
rc=$?
echo "[tests] wall time $(( $(date +%s) - start )) s"
[ $rc -eq 5 ] && { echo "[tests] no tests collected"; exit 1; }
exit $rc
