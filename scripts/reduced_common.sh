# Sourced by scripts/reduced_scale.sh and scripts/reduced_reeval.sh: the `uwmbench run` flags every
# reduced-scale run shares (data, store, CPU training, the rollout budget), so a training run and
# the re-evaluation of its checkpoint are evaluated the same way.
#
#   reduced_run <method> <size> <run id> <variant or ""> <task,task> [more overrides ...]
#
# Reads UWM, OUT, ROLLOUTS, MAX_STEPS, REPLAN (set by the sourcing script).
reduced_run() {
  local m=$1 size=$2 rid=$3 variant=$4 tasks=$5
  shift 5
  local extra=()
  case $m in uwm|pad) extra+=("method.vae=$OUT/vae") ;; esac   # the latent encoder fitted on the demos
  [ -z "$variant" ] || extra+=("variant=$variant")
  $UWM run method="$m" method.size="$size" run_id="$rid" sweep_name=reduced seed=0 "tasks=[$tasks]" \
      runs_root="$OUT/runs" store="$OUT/results" pretrain.enabled=false \
      "finetune.sources=[{path:'$OUT/data/{task}.hdf5',kind:hdf5,weight:1.0}]" finetune.trainer.device=cpu \
      evaluate.n_rollouts="$ROLLOUTS" evaluate.workers=2 evaluate.max_steps="$MAX_STEPS" \
      evaluate.replan_every="$REPLAN" evaluate.videos=2 evaluate.video_select=outcome "${extra[@]}" "$@"
}
