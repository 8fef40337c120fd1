"""The typed schemas of every config that travels, defined once.

Each command's yaml (``uwmbench/configs/<name>.yaml``) starts its defaults list with the schema stored
here in hydra's ConfigStore (``<name>_schema``), so that composition itself is strict: a
misspelt key, an ill-typed value or an out-of-range number fails when the config is composed -
in ``uwmbench <cmd>``, in ``--dry-run``, in ``--print-config``, under ``hydra -m`` and in
``uwmbench tune`` alike - naming the key (``uwmbench.config.load_config`` turns hydra's message
into one line with the valid keys).

Method configs are generated from each registered method's config dataclass
(:func:`method_schema`): every field is optional (``null`` = the size preset's value, else the
class default), so ``method.size=small method.depth=2`` means "the small preset with depth 2",
and the same strict merge checks ``build_method(...)`` from Python.

Schemas here: ``SourceConfig``/``DataConfig`` (``data``), ``TrainerConfig`` (``trainer``),
``TrainConfig`` (``uwmbench train``), ``EvalOptions`` (the rollout settings shared by
``uwmbench evaluate`` and ``uwmbench run``'s ``evaluate`` section: one set of names and
defaults), ``EvaluateConfig``, ``StageConfig``, ``RunEvalConfig``, ``RunConfig`` (``uwmbench
run``), ``SweepSpec`` (``uwmbench/configs/sweep/*.yaml``). This module imports no torch.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from .errors import ConfigError



def default_workers() -> int:
    """Simulator processes when ``workers`` is not set: the cores this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (macOS)
        n = os.cpu_count() or 1
    return max(1, min(8, n))


# ----------------------------------------------------------------------------- data
@dataclass
class SourceConfig:
    path: str = MISSING                # file, folder, or glob (each match is one file of this source)
    kind: str = "hdf5"                 # hdf5 | hdf5_action_free | video_folder
    weight: float = 1.0                # sampling ratio between sources (normalised over sources)
    max_episodes: Optional[int] = None  # first N episodes (per file)
    demos: Optional[List[str]] = None  # explicit episode names, or "mask/<filter_key>" (robomimic filter keys)


@dataclass
class DataConfig:
    # list of {path, kind, weight, max_episodes, demos} (or plain paths); checked entry by entry
    # against SourceConfig by benchmarks.data.data_config_from (at composition too)
    sources: List[Any] = field(default_factory=list)
    flip_vertical: bool = True         # LIBERO stores frames upside down: flip HDF5 frames on load
    val_fraction: float = 0.05         # fraction of episodes (per file) held out for validation
    split_seed: int = 0
    latent_cache: bool = True          # precomputed VAE latents (False: images, encoded on the fly)
    latent_crops: int = 5              # crops cached per frame (centre first, nets.crop_offsets); 1: centre only
    cache_dir: str = "~/.cache/uwmbench/latents"
    num_workers: int = 0
    cache_batch_size: int = 64         # frames per VAE call when building the latent cache
    frame_size: Optional[int] = None   # video frames are resized to this (default: the HDF5 frame size, else 128)
    episode_memory_mb: int = 4096      # decoded episodes kept in memory, per process (per DataLoader worker)

    def __post_init__(self) -> None:
        if not (0.0 <= self.val_fraction < 1.0):
            raise ConfigError(f"data.val_fraction={self.val_fraction} must be in [0, 1)")
        if self.latent_crops < 1:
            raise ConfigError(f"data.latent_crops={self.latent_crops} must be >= 1 (1: centre crop only)")
        if self.cache_batch_size < 1 or self.num_workers < 0 or self.episode_memory_mb < 0:
            raise ConfigError("data.cache_batch_size must be >= 1, data.num_workers and data.episode_memory_mb >= 0")
        if self.frame_size is not None and self.frame_size < 8:
            raise ConfigError(f"data.frame_size={self.frame_size} must be >= 8")


# ----------------------------------------------------------------------------- training
@dataclass
class TrainerConfig:
    steps: int = 1000
    batch_size: int = 36
    lr: float = 1e-4
    weight_decay: float = 1e-6
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "constant"          # constant | cosine (with linear warmup)
    warmup_steps: int = 0
    grad_clip: float = 0.0              # 0 = no clipping
    precision: str = "auto"             # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    ema: float = 0.0                    # EMA decay; 0 = off
    ckpt_every: int = 1000
    keep_checkpoints: int = 2
    val_every: int = 500                # 0 = never (a final validation still runs if data allows)
    val_batches: int = 2
    log_every: int = 10
    init_from: Optional[str] = None     # checkpoint/run folder to initialise weights from (finetune)
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    tf32: bool = True
    compile: bool = False               # torch.compile the loss (CUDA, or CPU with a C++ compiler)
    fused_optimizer: bool = False       # AdamW's fused kernel (one pass over the parameters; CPU and CUDA): the
                                        # same update to float rounding, ~13% less step time for UWM small on 2 cores
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "uwmbench"
    progress: bool = True
    stop_after: int = 0                 # testing aid: stop (as if interrupted) after this many steps this call

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"trainer.schedule={self.schedule!r} must be 'constant' or 'cosine'")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"trainer.precision={self.precision!r} must be auto, fp32 or bf16")
        if self.steps < 0:
            raise ConfigError(f"trainer.steps={self.steps} must be >= 0")
        if self.batch_size < 1:
            raise ConfigError(f"trainer.batch_size={self.batch_size} must be >= 1")
        for k in ("warmup_steps", "ckpt_every", "val_every", "val_batches", "stop_after", "keep_checkpoints"):
            if getattr(self, k) < 0:
                raise ConfigError(f"trainer.{k}={getattr(self, k)} must be >= 0")
        if self.lr <= 0:
            raise ConfigError(f"trainer.lr={self.lr} must be > 0")
        if not (0.0 <= self.ema < 1.0):
            raise ConfigError(f"trainer.ema={self.ema} must be in [0, 1)")


@dataclass
class TrainConfig:
    """``uwmbench train``."""
    method: Any = MISSING               # a method group entry: method=uwm method.size=tiny ...
    seed: int = 0
    run_dir: Optional[str] = None       # default runs/train/<method>-<time>; rerun with the same folder to resume
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


# ----------------------------------------------------------------------------- evaluation
EVAL_MODES = ("policy", "inverse_dynamics")


@dataclass
class EvalOptions:
    """How rollouts are made: the same keys and defaults in ``uwmbench evaluate`` and in
    ``uwmbench run``'s ``evaluate`` section."""
    n_rollouts: int = 50                # per task and condition; episode i starts from init state i
    conditions: List[str] = field(default_factory=lambda: ["id", "ood"])
    modes: List[str] = field(default_factory=lambda: ["policy"])  # policy | inverse_dynamics (tracks `reference` demos)
    seed: int = 0                       # evaluation seed: rollout seeds derive from (seed, task, condition, episode)
    workers: Optional[int] = None       # env processes (2+ GB RAM each); null: usable cores, at most 8; 0: serial
    max_steps: Optional[int] = 1000     # step budget per rollout (the paper: up to 1000); null: the benchmark's episode length
    replan_every: int = 16              # actions of each chunk executed open loop (public UWM code: 16)
    obs_frames: Optional[int] = None    # default: the method's obs_frames
    camera_size: Optional[int] = None   # null: the checkpoint's training frame size (its meta.json), else 128
    resize_frames: bool = False         # camera_size != the checkpoint's frame size: resize frames (else refused)
    render: str = "lazy"                # lazy (only the frames the policy reads) | every_step
    engine: str = "fast"                # fast (robosuite's states and frames bit for bit, computed faster) | robosuite
    settle_steps: int = 5               # no-op steps after loading an init state (objects settle)
    ood_margin: float = 0.03            # OOD: placement ranges widened by this much per side
    ood_seed: int = 0
    videos: int = 0                     # rollouts per (task, condition) saved as MP4 (episodes 0..videos-1); -1: all
    video_select: str = "first"         # first: episodes 0..videos-1 | outcome: re-run up to `videos` successes and failures
    flip_vertical: Optional[bool] = None  # default: the checkpoint's data.flip_vertical, else true
    device: str = "auto"
    weights: str = "auto"               # auto (EMA weights when trained with trainer.ema > 0) | ema | raw
    reference: Optional[str] = None     # inverse_dynamics: LIBERO-layout HDF5 of expert demos ({task}, {condition} replaced)
    runner: Optional[str] = None        # the benchmark: null = LIBERO; "module:Class" = a Runner subclass built without arguments

    def __post_init__(self) -> None:
        for k in ("n_rollouts", "settle_steps"):
            if getattr(self, k) < 0:
                raise ConfigError(f"evaluate.{k}={getattr(self, k)} must be >= 0")
        if (self.max_steps is not None and self.max_steps < 1) or self.replan_every < 1:
            raise ConfigError(f"evaluate.max_steps={self.max_steps} and evaluate.replan_every={self.replan_every} must be >= 1")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"evaluate.workers={self.workers} must be >= 0 (0: serial)")
        bad = [c for c in self.conditions if c not in ("id", "ood")]
        if bad or not self.conditions:
            raise ConfigError(f"evaluate.conditions={list(self.conditions)}: each must be id or ood")
        bad = [m for m in self.modes if m not in EVAL_MODES]
        if bad or not self.modes:
            raise ConfigError(f"evaluate.modes={list(self.modes)}: each must be one of {EVAL_MODES}")
        if self.render not in ("lazy", "every_step"):
            raise ConfigError(f"evaluate.render={self.render!r} must be lazy or every_step")
        if self.engine not in ("fast", "robosuite"):
            raise ConfigError(f"evaluate.engine={self.engine!r} must be fast or robosuite")
        if self.weights not in ("auto", "ema", "raw"):
            raise ConfigError(f"evaluate.weights={self.weights!r} must be auto, ema or raw")
        if self.videos < -1:
            raise ConfigError(f"evaluate.videos={self.videos} must be >= 0, or -1 for every rollout")
        if self.video_select not in ("first", "outcome"):
            raise ConfigError(f"evaluate.video_select={self.video_select!r} must be first or outcome")

    @property
    def n_workers(self) -> int:
        return default_workers() if self.workers is None else int(self.workers)

    def make_runner(self) -> Any:
        """The evaluator's runner: None (evaluate() builds LIBERO's) or an instance of ``runner``."""
        if not self.runner:
            return None
        from importlib import import_module

        mod, _, cls = self.runner.partition(":")
        try:
            return getattr(import_module(mod), cls)()
        except (ImportError, AttributeError, ValueError, TypeError) as e:
            raise ConfigError(f"evaluate.runner={self.runner!r}: cannot build it ({type(e).__name__}: {e}); "
                              "give module:Class of a uwmbench.benchmarks.evaluation.runner.Runner") from None


@dataclass
class EvaluateConfig(EvalOptions):
    """``uwmbench evaluate``: the rollout settings plus what to evaluate and where rows go."""
    checkpoint: Optional[str] = None    # checkpoint folder or run folder (its latest checkpoint)
    method: Any = None                  # instead of a checkpoint: an untrained method (smoke runs): method=bc method.size=tiny
    tasks: List[str] = field(default_factory=lambda: ["book_caddy"])  # short names, <suite>/<task_name>, <suite>:<index>
    out: Optional[str] = None           # default runs/eval/<time>; rollouts.jsonl is appended, reruns skip done rollouts
    resume: bool = True
    init_from: Optional[str] = None     # policy mode: start episode i from data/demo_i of this demo file (memorisation check)
    # copied into every result row
    run_id: str = ""
    sweep_name: str = ""                # the row's `sweep` column (as `uwmbench run`): sweep_name=main joins the main table
    cell: str = ""
    variant: str = ""
    train_seed: Optional[int] = None    # the row's `seed` column (training seed); default: seed


@dataclass
class RunEvalConfig(EvalOptions):
    """``uwmbench run``'s ``evaluate`` section: the rollout settings plus the run's own checks."""
    forward_dynamics_error: bool = False  # offline forward-dynamics prediction error on the validation split
    diagnose_windows: int = 64          # uwmbench diagnose after finetuning (open-loop action error); 0: off
    diagnose_first_obs: int = 2         # demos whose first training frame is compared with the evaluator's


# ----------------------------------------------------------------------------- protocol run
@dataclass
class StageConfig:
    enabled: bool = True
    checkpoint: Optional[str] = None    # an existing checkpoint/run folder: skip this stage's training
    # data-parallel processes (one per GPU) of this stage; trainer.batch_size is per process, so the
    # global batch = gpus x trainer.batch_size when `distributed` is set (paper: 4 x 36); without
    # `distributed` the stage trains in the run's own process (global batch = trainer.batch_size)
    # and gpus only feeds the estimate
    gpus: int = 1
    distributed: Optional[str] = None   # null | local | slurm: train the stage as ONE job with `gpus` tasks (DDP)
    launcher: Dict[str, Any] = field(default_factory=dict)  # keys over uwmbench/configs/launcher/<distributed>.yaml for it
    sources: List[Any] = field(default_factory=list)  # {path, kind, weight}; "{task}" / "{task_name}" (LIBERO name) per task
    cotrain: List[Any] = field(default_factory=list)  # extra action-free sources mixed in
    cotrain_video: str = "none"         # none | a key of video_sets
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # pretrain only: train in this folder instead of <run>/pretrain. A sweep points every cell whose
    # pretrain config is the same (method, seed, pretrain and data sections) at one folder
    # (<runs_root>/<sweep>/_pretrain/<method>-s<seed>-<hash>): trained once, reused by all of them
    run_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ConfigError(f"gpus={self.gpus} must be >= 0")
        if self.distributed not in (None, "local", "slurm"):
            raise ConfigError(f"distributed={self.distributed!r} must be null, local or slurm")


@dataclass
class PrepareConfig:
    """``uwmbench run``'s ``prepare`` section: the data stage, which makes missing inputs before
    anything trains (off by default; the reduced scale turns it on). Scripted demos are collected
    for every finetune source whose path holds ``{task}`` and matches no file (the run's tasks,
    LIBERO's samplers, never the evaluation init states); ``fit_vae`` fits a small AutoencoderKL
    on the run's finetune demos and makes it the method's ``vae`` (methods with a latent VAE)."""
    collect_missing: bool = False
    episodes: int = 50                  # successful demos per task
    max_steps: int = 600                # expert step budget per episode
    seed: int = 0                       # placements seed (the same files for every cell that needs them)
    workers: int = 2                    # simulator processes of the collection
    collect_rounds: int = 3             # resumed collection rounds (new attempts for the demos the expert missed)
    fit_vae: Optional[str] = None       # a folder ("{tasks}" = the run's tasks joined by "+"); null: off
    vae_preset: str = "small"
    vae_steps: int = 800
    vae_image_size: int = 64            # = the small presets' crop and resize
    vae_resize: int = 72

    def __post_init__(self) -> None:
        if min(self.episodes, self.workers, self.max_steps, self.vae_steps, self.collect_rounds) < 1:
            raise ConfigError(f"prepare: episodes, workers, max_steps, vae_steps and collect_rounds must be >= 1 (got "
                              f"{self.episodes}, {self.workers}, {self.max_steps}, {self.vae_steps}, {self.collect_rounds})")


@dataclass
class RunConfig:
    """``uwmbench run`` (and each cell of a sweep, and ``hydra -m``)."""
    method: Any = MISSING
    run_id: Optional[str] = None        # default <method>-s<seed>; sweeps set <sweep>/<cell>
    sweep_name: Optional[str] = None    # the sweep this run belongs to (the `sweep` column of its rows)
    cell: Optional[str] = None
    variant: str = "default"
    seed: int = 0
    tasks: List[str] = field(default_factory=list)
    runs_root: str = "runs"
    store: str = "results"
    data_root: str = "data/libero"
    data: DataConfig = field(default_factory=DataConfig)  # shared data options (sources come from the stages)
    pretrain: StageConfig = field(default_factory=StageConfig)
    finetune: StageConfig = field(default_factory=StageConfig)
    video_sets: Dict[str, List[Any]] = field(default_factory=dict)
    evaluate: RunEvalConfig = field(default_factory=RunEvalConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)


# ----------------------------------------------------------------------------- sweeps
@dataclass
class Resources:
    gpus: int = 1
    cpus: int = 8
    mem_gb: int = 64
    time_h: float = 48.0


@dataclass
class SweepSpec:
    """``uwmbench/configs/sweep/<name>.yaml``."""
    description: str = ""
    notes: Optional[str] = None
    seeds: List[int] = field(default_factory=lambda: [0])
    tasks: List[str] = field(default_factory=list)
    per_task: bool = False              # true: one cell per task
    base: List[str] = field(default_factory=list)  # run overrides applied to every cell
    resources: Resources = field(default_factory=Resources)
    axes: List[Any] = field(default_factory=list)  # {name, values: [{label, overrides} | {capability, among}]}
    # per scale (``uwmbench sweep <name> scale=<scale>``): what this sweep changes at that scale over
    # uwmbench/configs/scale/<scale>.yaml: {tasks, seeds, base, methods}
    scales: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ScaleSpec:
    """``uwmbench/configs/scale/<name>.yaml``: one way to run every sweep smaller (``scale=reduced``): its
    run overrides go after each sweep's own, its seeds, resources and defaults for the launcher,
    the store and the run folders replace the sweep's; ``cost`` names the measured rates the dry
    run estimates with (uwmbench/configs/rates/<cost>.yaml)."""
    description: str = ""
    seeds: List[int] = field(default_factory=lambda: [0, 1])
    base: List[str] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    launcher: str = "local"             # the default --launcher
    launcher_overrides: List[str] = field(default_factory=list)  # launcher.<key>=value defaults
    store: Optional[str] = None         # the default --store ("{runs_home}": $UWMBENCH_RUNS or ~/uwmbench)
    runs: Optional[str] = None          # the default --runs
    cost: Optional[str] = None          # uwmbench/configs/rates/<cost>.yaml: what a cell without GPUs costs here


# ----------------------------------------------------------------------------- diagnose
@dataclass
class DiagnoseConfig:
    """``uwmbench diagnose key=value ...``."""
    checkpoint: str = MISSING           # checkpoint or run folder
    data: Optional[str] = None          # held-out LIBERO-layout HDF5 file(s), comma-separated (default: the run's val episodes)
    windows: int = 64                   # train and held-out windows for the open-loop error
    first_obs: int = 2                  # demos whose first training frame is compared with the evaluator's
    out: Optional[str] = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.windows < 0 or self.first_obs < 0:
            raise ConfigError(f"diagnose: windows={self.windows} and first_obs={self.first_obs} must be >= 0")


# ----------------------------------------------------------------------------- launchers
@dataclass
class LocalLauncherConfig:
    """``uwmbench/configs/launcher/local.yaml``: submitit LocalExecutor."""
    name: str = "local"
    folder: Optional[str] = None        # submitit logs and pickles; default <store>/submitit/<sweep>
    timeout_min: int = 10080
    gpus_per_node: int = 0
    max_requeues: int = 3               # timeouts / preemptions a job may survive
    signal_delay_s: int = 30
    max_parallel: Optional[int] = None  # cells running at once; null: the usable cores; 0: no cap
    stage_jobs: bool = False            # true: each stage its own job (a job waits for the stages it needs)
    rollouts_per_job: int = 25          # stage jobs: rollouts of one evaluation job
    rollout_cpus: Optional[int] = None  # stage jobs: CPUs of an evaluation job (null: evaluate.workers + 1)


@dataclass
class SlurmLauncherConfig:
    """``uwmbench/configs/launcher/slurm.yaml``: submitit AutoExecutor(cluster="slurm")."""
    name: str = "slurm"
    folder: Optional[str] = None
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    gpus_per_node: Optional[int] = None  # null: the sweep's per-cell value
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[int] = None
    timeout_min: Optional[int] = None
    array_parallelism: int = 64
    max_requeues: int = 3
    signal_delay_s: int = 120
    setup: List[str] = field(default_factory=list)   # shell lines run before the job
    additional: Dict[str, Any] = field(default_factory=dict)  # extra sbatch parameters
    # the protocol as a stage graph: pretrain (shared) -> finetune per task -> rollout job arrays ->
    # the run row, chained with afterok dependencies (false: one job per cell runs every stage)
    stage_jobs: bool = True
    rollouts_per_job: int = 25          # rollouts of one evaluation job (array task)
    rollout_partition: Optional[str] = None  # CPU partition of the evaluation jobs (null: `partition`)
    rollout_account: Optional[str] = None    # (null: `account`)
    rollout_gpus: int = 0               # GPUs of an evaluation job (0: CPU-only; the policy runs on CPU)
    rollout_cpus: Optional[int] = None  # CPUs of an evaluation job (null: evaluate.workers + 1)
    rollout_mem_gb: Optional[int] = None  # (null: 3 GB per env worker + 8)
    rollout_time_h: Optional[float] = None  # (null: 1.5 x the estimate, at least 1 h)


LAUNCHER_SCHEMAS = {"local": LocalLauncherConfig, "slurm": SlurmLauncherConfig}


# ----------------------------------------------------------------------------- tune
@dataclass
class TuneTrainConfig(TrainConfig):
    method: Any = field(default_factory=lambda: {"name": "uwm", "size": "tiny"})


@dataclass
class TuneConfig:
    """``uwmbench tune``: an optuna study over the keys of a train config."""
    study: Optional[str] = None         # default tune-<method>
    storage: Optional[str] = None       # any SQLAlchemy URL; default sqlite:///<out>/optuna.db
    out: str = "runs/tune"
    direction: str = "minimize"         # minimize | maximize
    metric: str = "val/loss"
    n_trials: int = 20
    workers: int = 2
    launch_with: str = "local"          # local | slurm | inline
    sampler: str = "tpe"                # tpe | random
    seed: Optional[int] = None          # null: fresh sampler seeds per invocation (logged)
    heartbeat_interval: Optional[int] = 60
    grace_period: Optional[int] = None
    failed_trial_retries: int = 2
    allow_budget_change: bool = False
    pruner: Dict[str, Any] = field(default_factory=lambda: {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0})
    report_every: int = 100
    space: Dict[str, Any] = field(default_factory=dict)  # dotted key of the train config -> distribution
    train: TuneTrainConfig = field(default_factory=TuneTrainConfig)

    def __post_init__(self) -> None:
        if self.direction not in ("minimize", "maximize"):
            raise ConfigError(f"tune direction={self.direction!r} must be minimize or maximize")
        if self.sampler not in ("tpe", "random"):
            raise ConfigError(f"tune sampler={self.sampler!r} must be tpe or random")
        if self.launch_with not in ("local", "slurm", "inline"):
            raise ConfigError(f"tune launch_with={self.launch_with!r} must be local, slurm or inline")
        if self.n_trials < 0 or self.workers < 1 or self.report_every < 1:
            raise ConfigError("tune: n_trials must be >= 0, workers and report_every >= 1")


# ----------------------------------------------------------------------------- methods
# owned by the methods package (which imports nothing of the harness); re-exported here
from uwmbench.methods.base import method_preset_values, method_schema  # noqa: E402


__all__ = ["SourceConfig", "DataConfig", "TrainerConfig", "TrainConfig", "EvalOptions", "EvaluateConfig",
           "RunEvalConfig", "StageConfig", "RunConfig", "Resources", "SweepSpec", "TuneConfig", "DiagnoseConfig", "LocalLauncherConfig",
           "SlurmLauncherConfig", "LAUNCHER_SCHEMAS", "method_schema",
           "method_preset_values", "default_workers", "EVAL_MODES"]
