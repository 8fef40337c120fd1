#!/usr/bin/env bash
# Reduced-scale main table on a 2-core CPU (no pretraining): 50 scripted demos per task from random
# placements, `small` presets, ID and OOD rollouts, then the report. Every step is resumable: rerun
# the script after an interruption and it continues (collect appends to <out>.partial, runs skip
# finished stages and resume training from their latest checkpoint, the evaluator skips written
# rollouts).
#
#   bash scripts/reduced_scale.sh                       # everything (hours on 2 cores)
#   METHODS="bc" TASKS="book_caddy" bash scripts/reduced_scale.sh
#
# Knobs (environment): OUT, TASKS, METHODS, EPISODES, ROLLOUTS, MAX_STEPS, REPLAN, VARIANT, REPORT, and per method
# STEPS_<method> / LR_<method> (train steps and learning rate; defaults below).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/reduced_common.sh
UWM=${UWM:-.venv/bin/uwmbench}
OUT=${OUT:-runs/reduced}
TASKS=${TASKS:-"book_caddy bowl_drawer"}
METHODS=${METHODS:-"bc dp uwm"}
EPISODES=${EPISODES:-50}
ROLLOUTS=${ROLLOUTS:-20}
MAX_STEPS=${MAX_STEPS:-400}         # ~1.6x the scripted demos' length (book_caddy ~250 steps)
REPLAN=${REPLAN:-4}                 # actions executed per policy call: 16 open loop fails at this scale
                                    # (BC bowl_drawer 1/20 ID at 16, 9/20 at 8, 15/20 at 4; README)
REPORT=${REPORT:-docs/results/reduced}
VARIANT=${VARIANT:-}                # names a run that differs from the defaults (e.g. steps8k with STEPS_dp=8000)
declare -A STEPS=([bc]=${STEPS_bc:-4000} [dp]=${STEPS_dp:-3000} [uwm]=${STEPS_uwm:-3000} [pad]=${STEPS_pad:-3000} [gr1]=${STEPS_gr1:-1500})
declare -A LR=([bc]=${LR_bc:-1e-3} [dp]=${LR_dp:-3e-4} [uwm]=${LR_uwm:-3e-4} [pad]=${LR_pad:-3e-4} [gr1]=${LR_gr1:-3e-4})

# 1. demonstrations (ID placements drawn by LIBERO's samplers; never the evaluation init states)
for t in $TASKS; do
  [ -f "$OUT/data/$t.hdf5" ] || $UWM collect task="$t" condition=id episodes="$EPISODES" workers=2 \
      out="$OUT/data/$t.hdf5" seed=0
done

# 2. the latent encoder of UWM/PAD: a "small" AutoencoderKL fitted on the demos' frames (64 px crops)
need_vae=0
for m in $METHODS; do case $m in uwm|pad) need_vae=1 ;; esac; done
if [ $need_vae = 1 ] && [ ! -f "$OUT/vae/config.json" ]; then
  srcs=$(for t in $TASKS; do printf "{path:'%s'}," "$OUT/data/$t.hdf5"; done)
  $UWM fit-vae "data.sources=[${srcs%,}]" out="$OUT/vae" preset=small image_size=64 resize=72 steps=1500 batch_size=32
fi

# 3. one protocol run per method: finetune on each task's demos, evaluate ID and OOD
tasks_list=$(echo $TASKS | tr ' ' ',')
# REPLAN=16 without VARIANT is how the first reduced runs were made (run ids reduced/<method>);
# otherwise the run is reduced/<method>-<tag>, its rows tagged with variant <tag>, where tag is
# VARIANT and/or replan<R> (e.g. VARIANT=steps8k REPLAN=4: steps8k-replan4, as the re-evaluations'
# rows of scripts/reduced_reeval.sh are named)
tag=$VARIANT
[ "$REPLAN" = 16 ] || tag="${tag:+$tag-}replan$REPLAN"
for m in $METHODS; do
  reduced_run "$m" small "reduced/$m${tag:+-$tag}" "$tag" "$tasks_list" \
      finetune.trainer.steps="${STEPS[$m]}" finetune.trainer.batch_size=32 finetune.trainer.lr="${LR[$m]}" \
      finetune.trainer.warmup_steps=200 finetune.trainer.ckpt_every=500 finetune.trainer.val_every=1000
done

# 4. tables with CIs, figures, diagnostics and videos
$UWM report "$OUT/results" --out "$REPORT" --as-main reduced
