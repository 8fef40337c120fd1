#!/usr/bin/env bash
# Time to competence on a 2-core CPU: controlled arms trained at an equal step budget on one
# task's scripted demos, then rolled out ID and OOD, through the normal `uwmbench collect` ->
# `uwmbench fit-vae` -> `uwmbench run` path; the rows land in one results store that
# `uwmbench report` turns into the tables (Wilson CIs, paired UWM-vs-DP) and the learning curves
# (every run's metrics.csv: held-out open-loop action error, forward-dynamics error against the
# copy-last-frame baseline, inverse-dynamics error, written while it trains).
#
# Everything lives outside the work tree, under $UWMBENCH_RUNS (default ~/uwmbench), so a campaign
# survives the work tree being laid anew; every step resumes (collect appends to <out>.partial,
# training resumes from its latest checkpoint, the evaluator skips written rollouts): rerun the
# same command after an interruption.
#
#   bash scripts/competence.sh                                    # libero_90:0 (close the top drawer), arms "uwm dp"
#   TASK=book_caddy ARMS="uwm uwm_policyt dp" STEPS=6000 bash scripts/competence.sh
#
# Arms (ARMS, space separated; each is one `uwmbench run`; rows tagged with the variant in brackets):
#   uwm            [default]      UWM small as the paper trains it (independent uniform timesteps, video loss on)
#   uwm_policyt    [policy_t0.5]  UWM small, half the labelled samples trained in the policy setting (method.policy_t_prob=0.5)
#   uwm_novideo    [no_video]     UWM small with the video loss off: its transformer as a plain action-diffusion policy (objective=none)
#   dp, bc         [default]      Diffusion Policy small; the regression baseline
# Knobs (environment): UWMBENCH_RUNS, OUT, TASK, EPISODES, ARMS, STEPS, BATCH, LR, EMA, ROLLOUTS, MAX_STEPS,
# REPLAN, WEIGHTS (evaluate.weights: auto|raw|ema; a second evaluation with WEIGHTS=raw gives the
# EMA-vs-raw comparison of the same checkpoints: its rows get the variant <variant>-raw, or raw), REPORT, EXTRA
# (more `uwmbench run` overrides for every arm).
set -euo pipefail
cd "$(dirname "$0")/.."
UWM=${UWM:-.venv/bin/uwmbench}
ROOT=${UWMBENCH_RUNS:-$HOME/uwmbench}
OUT=${OUT:-$ROOT/competence}
TASK=${TASK:-libero_90:0}
EPISODES=${EPISODES:-50}
ARMS=${ARMS:-"uwm dp"}
STEPS=${STEPS:-2000}
BATCH=${BATCH:-32}
LR=${LR:-3e-4}
EMA=${EMA:-0.995}
ROLLOUTS=${ROLLOUTS:-20}
REPLAN=${REPLAN:-4}
WEIGHTS=${WEIGHTS:-auto}
REPORT=${REPORT:-$OUT/report}
EXTRA=${EXTRA:-}
case $TASK in
  libero_90:0) MAX_STEPS=${MAX_STEPS:-150} ;;   # the scripted demos take ~70 steps
  *) MAX_STEPS=${MAX_STEPS:-400} ;;             # ~1.6x the paper tasks' scripted demos (book_caddy ~250)
esac
export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
data="$OUT/data/$TASK.hdf5"
vae="$OUT/vae/$TASK"
log() { echo "[competence $(date +%H:%M:%S)] $*"; }

# 1. demonstrations from seeded random placements (LIBERO's samplers; never the evaluation init states)
# (up to 3 rounds: a round that keeps fewer than EPISODES demos leaves <data>.partial, the next one resumes it
# with new attempts for the failed demos)
for round in 1 2 3; do
  [ -f "$data" ] && break
  log "collect $TASK (round $round)"
  $UWM collect task="$TASK" condition=id episodes="$EPISODES" workers=2 out="$data" seed=0 max_steps=600 || true
done
[ -f "$data" ] || { echo "competence.sh: the expert kept fewer than $EPISODES demos of $TASK in 3 rounds ($data.partial)" >&2; exit 1; }

# 2. UWM's latent encoder: a small AutoencoderKL fitted on the demos' frames (64 px crops of 72 px frames)
if [[ " $ARMS " == *" uwm"* ]] && [ ! -f "$vae/config.json" ]; then
  log "fit-vae $TASK"
  $UWM fit-vae "data.sources=[{path:'$data'}]" out="$vae" preset=small image_size=64 resize=72 steps=800 batch_size=32
fi

# 3. one protocol run per arm: train STEPS on the demos, diagnostics, ID and OOD rollouts
for arm in $ARMS; do
  over=()
  case $arm in
    uwm)          m=uwm; variant=default ;;
    uwm_policyt)  m=uwm; variant=policy_t0.5; over+=(method.policy_t_prob=0.5) ;;
    uwm_novideo)  m=uwm; variant=no_video; over+=(method.objective=none) ;;
    dp|bc|pad|gr1) m=$arm; variant=default ;;
    *) echo "competence.sh: unknown arm '$arm'" >&2; exit 2 ;;
  esac
  case $m in uwm|pad) over+=("method.vae=$vae") ;; esac
  # the first campaign trained 2000 steps under the plain variant names; other budgets are their own
  # variants (e.g. 6000steps, no_video-6000steps), so the report keeps them apart
  if [ "$STEPS" != 2000 ]; then variant="${variant#default}"; variant="${variant:+$variant-}${STEPS}steps"; fi
  rid="competence/$TASK/$arm-$STEPS"
  if [ "$WEIGHTS" != auto ]; then
    # re-evaluate the trained run's checkpoint with other weights (no training)
    src="$OUT/runs/$rid"
    [ -f "$src/DONE" ] || { log "skip $arm weights=$WEIGHTS: $src not finished"; continue; }
    over+=(pretrain.checkpoint="$src/finetune/$TASK" finetune.enabled=false evaluate.diagnose_windows=0)
    variant="${variant#default}"; variant="${variant:+$variant-}$WEIGHTS"; rid="$rid-$WEIGHTS"
  fi
  log "run $rid ($m, ${over[*]:-defaults})"
  # shellcheck disable=SC2086
  $UWM run method="$m" method.size=small run_id="$rid" sweep_name=competence variant="$variant" seed=0 \
      "tasks=[$TASK]" runs_root="$OUT/runs" store="$OUT/results" pretrain.enabled=false \
      "finetune.sources=[{path:'$OUT/data/{task}.hdf5',kind:hdf5,weight:1.0}]" finetune.trainer.device=cpu \
      finetune.trainer.steps="$STEPS" finetune.trainer.batch_size="$BATCH" finetune.trainer.lr="$LR" \
      finetune.trainer.warmup_steps=200 finetune.trainer.ema="$EMA" finetune.trainer.ckpt_every=500 \
      finetune.trainer.val_every=250 finetune.trainer.val_batches=2 \
      evaluate.n_rollouts="$ROLLOUTS" evaluate.workers=2 evaluate.max_steps="$MAX_STEPS" \
      evaluate.replan_every="$REPLAN" evaluate.weights="$WEIGHTS" evaluate.videos=1 evaluate.video_select=outcome \
      "${over[@]}" $EXTRA

  # the run's training curves beside its rows, so the store alone rebuilds the report
  if [ "$WEIGHTS" = auto ]; then
    for f in "$OUT/runs/$rid/finetune/$TASK/metrics.csv"; do
      [ -f "$f" ] || continue
      rel=${f#"$OUT/runs/"}; mkdir -p "$OUT/results/curves/$(dirname "$rel")"; cp "$f" "$OUT/results/curves/$rel"
    done
  fi
done

# 4. tables with CIs, learning curves, diagnostics and videos (rebuilt from the store folder alone)
log "report -> $REPORT"
$UWM report "$OUT/results" --out "$REPORT" --as-main competence
