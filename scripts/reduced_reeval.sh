#!/usr/bin/env bash
# Re-evaluate the finished reduced-scale runs' checkpoints with another replanning interval,
# through the normal `uwmbench run` path (pretrain.checkpoint=<the run's finetuned checkpoint>,
# finetune.enabled=false): one run per (source run, task), rows in the same store with the source
# run's variant + "-replan<R>" ("replan<R>" for the default variant), so the report shows
# both evaluations side by side. Training is
# not repeated; train steps and time stay those of the source run (its own rows). Resumable: a
# rerun skips finished runs and written rollouts.
#
#   bash scripts/reduced_reeval.sh                         # every finished run under $OUT/runs/reduced
#   RUNS="bc16k" TASKS="bowl_drawer" REPLAN=4 bash scripts/reduced_reeval.sh
#
# Knobs (environment): OUT, RUNS (source run names under reduced/), TASKS, REPLAN, ROLLOUTS,
# MAX_STEPS, CONDITIONS.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/reduced_common.sh
UWM=${UWM:-.venv/bin/uwmbench}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/reduced}
REPLAN=${REPLAN:-4}
ROLLOUTS=${ROLLOUTS:-20}
MAX_STEPS=${MAX_STEPS:-400}
CONDITIONS=${CONDITIONS:-"id,ood"}
RUNS=${RUNS:-$(ls "$OUT/runs/reduced")}

for r in $RUNS; do
  src="$OUT/runs/reduced/$r"
  case $r in *-replan*) continue ;; esac
  [ -f "$src/DONE" ] || { echo "skip $r: not finished ($src/DONE missing)"; continue; }
  # method, variant and the finetuned checkpoint of each task, read from the source run's own files
  mapfile -t info < <($PY - "$src" <<'EOF'
import json, sys, pathlib, yaml
src = pathlib.Path(sys.argv[1])
cfg = yaml.safe_load((src / "config.yaml").read_text())
print(cfg["method"]["name"]); print(cfg["method"].get("size") or "small"); print(cfg.get("variant") or "default")
for key, res in json.loads((src / "stages.json").read_text()).items():
    if key.startswith("finetune/") and res.get("checkpoint"):
        print(key.split("/", 1)[1] + " " + res["checkpoint"])
EOF
)
  method=${info[0]}; size=${info[1]}; variant=${info[2]}
  if [ "$variant" = default ]; then variant="replan$REPLAN"; else variant="$variant-replan$REPLAN"; fi
  for line in "${info[@]:3}"; do
    task=${line%% *}; ckpt=${line#* }
    if [ -n "${TASKS:-}" ] && [[ " $TASKS " != *" $task "* ]]; then continue; fi
    reduced_run "$method" "$size" "reduced/$r-replan$REPLAN-$task" "$variant" "$task" \
        pretrain.checkpoint="$ckpt" finetune.enabled=false "evaluate.conditions=[$CONDITIONS]"
  done
done
