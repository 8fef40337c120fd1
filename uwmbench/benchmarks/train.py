"""Trainer: one loop for every method (it only knows the method contract).

AdamW; constant or cosine-with-warmup LR; gradient clipping; bf16 autocast on CUDA; optional
EMA; multi-GPU data parallel (DDP) under ``torchrun`` or a submitit job with N tasks
(:func:`uwmbench.sweeps.launch.submit_training`); tqdm progress; metrics appended to
``<run_dir>/metrics.csv`` (optional TensorBoard / wandb); atomic checkpoints every N steps
(safetensors weights + optimizer, scheduler, RNG state and the resolved config). Rerunning with
the same ``run_dir`` resumes from the latest checkpoint, and on CPU with a fixed seed the
resumed loss curve is identical to an uninterrupted run: batches are a pure function of
(seed, step) and every RNG state is restored; validation runs under a forked RNG so it never
shifts the training stream.

Data parallel: ``trainer.batch_size`` is the batch of ONE process; the global batch is
``WORLD_SIZE x trainer.batch_size`` (the paper: 4 x 36). Each step every process takes its slice
of the same global batch (the sampler draws ``WORLD_SIZE x batch_size`` samples per step), DDP
averages the gradients, and the logged loss (and loss terms) are averaged over the processes, so
an N-process run with batch B logs the curve of a 1-process run with batch N x B (to float
tolerance) whenever the loss is a per-sample mean and draws no random numbers. Random
augmentation and noise are drawn per process from a stream seeded by (seed, step, rank): the
processes get independent draws (not a copy of rank 0's), and a resumed run repeats them.

CLI: ``uwmbench train method=uwm method.size=tiny data.sources=[{path:demos.hdf5}] trainer.steps=500``
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from uwmbench.config import ConfigError, ConfigPathError, build_method_from_config, dump_yaml, load_config, to_container, typed
from uwmbench.methods.base import Method, config_to_dict
from uwmbench.run_dir import CheckpointDir, RunDir
from uwmbench.lease import run_lease
from .checkpoint import atomic_write_text, load_weights_into, save_checkpoint
from .data import build_datasets, data_config_from, make_loader
from .data_sources import check_source_paths

log = logging.getLogger(__name__)


from uwmbench.schemas import TrainerConfig  # noqa: E402  (the trainer section's schema, uwmbench/configs/train.yaml)


# ----------------------------------------------------------------------------- helpers
def lr_lambda(cfg: TrainerConfig):
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            span = max(1, cfg.steps - cfg.warmup_steps)
            prog = min(1.0, (step - cfg.warmup_steps) / span)
            return 0.5 * (1 + math.cos(math.pi * prog))
        return 1.0
    return f


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


class MetricsWriter:
    """Appends rows to a CSV; when a row brings new columns the file is rewritten (atomically)
    with the wider header. On resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.is_file():
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f)]
            if resume_step is not None:
                self.rows = [r for r in self.rows if int(float(r["step"])) <= resume_step]
            else:
                self.rows = []
        self.columns: list[str] = []
        for r in self.rows:
            self._extend(r)
        self._rewrite()

    def _extend(self, row) -> bool:
        new = [k for k in row if k not in self.columns]
        self.columns += new
        return bool(new)

    def _rewrite(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns or ["step"])
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self._extend(row) or not self.path.is_file():
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerow(row)


class _LossModule(torch.nn.Module):
    """DDP needs a forward(); this forwards to the method's compute_loss."""

    def __init__(self, method: Method):
        super().__init__()
        self.method = method

    def forward(self, batch):
        return self.method.compute_loss(batch)


# ----------------------------------------------------------------------------- main loop
def train(cfg: Any, run_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train (or resume) a run. ``cfg``: the composed ``train`` config (DictConfig or dict)."""
    full = to_container(cfg)
    tcfg = typed(full.get("trainer", {}), TrainerConfig, "trainer")
    mcfg = dict(full["method"])
    seed = int(full.get("seed", 0))
    run_dir = Path(run_dir or full.get("run_dir") or f"runs/train/{mcfg.get('name')}-{time.strftime('%Y%m%d-%H%M%S')}")
    data_cfg = data_config_from(full.get("data", {}))
    check_source_paths(data_cfg.sources)  # a misspelt path fails before a model is built

    world, rank, device, use_bf16 = _process_facts(tcfg)
    is_main = rank == 0

    seed_everything(seed)
    name = mcfg.get("name")
    method, data = _method_and_data(mcfg, data_cfg, device)
    frame_size = [int(x) for x in data.frame_shape] if data.frame_shape else None
    run_dir.mkdir(parents=True, exist_ok=True)  # after the data checks: bad input leaves no empty run folder

    rd = RunDir(run_dir)
    resume = rd.latest_checkpoint()
    prev = (rd.read_summary() or {}) if resume is not None and rd.summary.is_file() else {}
    if prev.get("completed") and int(prev.get("steps", -1)) >= tcfg.steps:
        if is_main:
            log.info("%s already finished (%d steps): nothing to do", run_dir, prev["steps"])
        return prev
    if resume is None and tcfg.init_from:
        _init_from(method, tcfg.init_from, data.action_stats)

    params, opt, sched, ema = _optimizer(method, tcfg)
    start_step = 0
    if resume is not None:
        start_step, ema = _restore(resume, method, opt, sched, ema, device)
        if is_main:
            log.info("resuming %s from %s (step %d)", run_dir, resume, start_step)

    config_yaml = dump_yaml({**full, "run_dir": str(run_dir), "method": config_to_dict(method.cfg)})
    if is_main:
        atomic_write_text(rd.config, config_yaml)
    model = _wrap(method, world, device, tcfg.compile)

    metrics = MetricsWriter(rd.metrics, start_step if resume else None) if is_main else None
    tb = _tensorboard(run_dir) if (is_main and tcfg.tensorboard) else None
    wb = _wandb(tcfg, run_dir, full) if (is_main and tcfg.wandb) else None
    # every process draws the same global batch (world x batch_size) and keeps its slice
    loader = make_loader(data.train, tcfg.batch_size, seed=seed * 1000, start_step=start_step,
                         num_workers=data_cfg.num_workers, rank=rank, world=world)

    bar = tqdm(total=tcfg.steps, initial=start_step, desc=f"train {name}", disable=not (is_main and tcfg.progress),
               dynamic_ncols=True)
    method.train()
    step, last_loss, t0 = start_step, float("nan"), time.time()
    val: dict[str, float] = {}
    stopped_early = False
    for batch in loader:
        if step >= tcfg.steps:
            break
        batch = to_device(batch, device)
        if world > 1:  # per-process draws (augmentation, noise) as a function of (seed, step, rank)
            torch.manual_seed(_step_seed(seed, step, rank))
        loss, terms, gnorm, cur_lr = _step(model, batch, step, opt, sched, params, method, ema, tcfg, device, use_bf16)
        step += 1
        last_loss = float(loss.detach())
        if world > 1:  # log the global batch's loss: the mean over the processes (equal batches)
            last_loss, terms = _mean_over_processes(last_loss, terms, world, device)
        bar.update(1)
        if is_main and (step % tcfg.log_every == 0 or step == tcfg.steps):
            row = {"step": step, "loss": last_loss, "lr": cur_lr,
                   **{k: float(v) for k, v in terms.items() if k != "loss"},
                   **({} if gnorm is None else {"grad_norm": float(gnorm)}),
                   "samples_per_s": tcfg.batch_size * world * (step - start_step) / max(1e-9, time.time() - t0)}
            metrics.write(row)
            _log_external(tb, wb, row, step)
            bar.set_postfix(loss=f"{last_loss:.4f}")
        if is_main and data.val is not None and tcfg.val_every and step % tcfg.val_every == 0:
            val = validate(method, data.val, tcfg, device, seed, use_bf16, ema)
            metrics.write({"step": step, **val})
            _log_external(tb, wb, val, step)
        if is_main and (step % tcfg.ckpt_every == 0 or step == tcfg.steps):
            _checkpoint(run_dir, step, method, opt, sched, ema, config_yaml, tcfg, frame_size)
        if world > 1:
            torch.distributed.barrier()
        if tcfg.stop_after and step - start_step >= tcfg.stop_after and step < tcfg.steps:
            stopped_early = True
            break
    bar.close()
    ckpt = rd.latest_checkpoint()
    summary = {"run_dir": str(run_dir), "steps": step, "final_loss": last_loss,
               "checkpoint": str(ckpt) if ckpt else None, "val": val, "completed": step >= tcfg.steps,
               "interrupted": stopped_early, "frame_size": frame_size}
    if is_main and not stopped_early:
        if data.val is not None and not val:  # a run shorter than val_every: validate once at the end
            summary["val"] = validate(method, data.val, tcfg, device, seed, use_bf16, ema)
            metrics.write({"step": step, **summary["val"]})
        atomic_write_text(rd.summary, json.dumps(summary, indent=2, default=str))
    for closer in (getattr(tb, "close", None), getattr(wb, "finish", None)):
        if closer is not None:
            closer()
    return summary


def _step(model, batch, step: int, opt, sched, params, method: Method, ema: dict | None, tcfg: TrainerConfig,
          device, use_bf16: bool):
    """One optimisation step: loss (bf16 autocast when asked), backward, clipping, optimizer and
    schedule, EMA update. -> (loss, loss terms, grad norm or None, the LR this step used)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        loss, terms = model(batch)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss.item()} at step {step} ({terms})")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip) if tcfg.grad_clip > 0 else None
    opt.step()
    cur_lr = sched.get_last_lr()[0]
    sched.step()
    if ema is not None:
        with torch.no_grad():
            for k, p in method.named_parameters():
                if k in ema:
                    ema[k].lerp_(p.detach(), 1 - tcfg.ema)
    return loss, terms, gnorm, cur_lr


def _method_and_data(mcfg: dict, data_cfg, device):
    """The method from its config section and the datasets it reads (their checks run here), the
    action statistics set from the training data, the method on ``device``."""
    method = build_method_from_config(mcfg)
    data = build_datasets(data_cfg, method)
    method.action_normalizer.set_stats(data.action_stats)
    return method.to(device), data


def _init_from(method: Method, source: str, action_stats) -> None:
    """Finetuning: weights from ``trainer.init_from``; the finetune data defines the action range."""
    try:
        load_weights_into(method, source)
    except ConfigPathError as e:
        raise ConfigPathError(f"trainer.init_from={source}: {e}") from None
    method.action_normalizer.set_stats(action_stats)


def _optimizer(method: Method, tcfg: TrainerConfig):
    """AdamW over the trainable parameters, the LR schedule, and the EMA weights (None without EMA)."""
    params = method.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay, betas=tuple(tcfg.betas),
                            fused=True if tcfg.fused_optimizer else None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tcfg))
    ema = ({k: p.detach().clone() for k, p in method.named_parameters() if p.requires_grad}
           if tcfg.ema > 0 else None)
    return params, opt, sched, ema


def _wrap(method: Method, world: int, device, compile_: bool):
    """The module the loop calls: the method's loss, under DDP with several processes, compiled if asked."""
    model: Any = _LossModule(method)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                          find_unused_parameters=True)
    if not compile_:
        return model
    # random ops (timesteps, noise, crops) drawn from torch's own generator, as in eager mode: a compiled
    # run trains on the same noise as an eager one and resumes the same way (inductor's default RNG differs)
    import torch._inductor.config as inductor_config
    inductor_config.fallback_random = True
    return torch.compile(model)


def compiled_loss(method: Method):
    """The method's loss as ``trainer.compile=true`` runs it in one process (``perf train``'s compiled path)."""
    return _wrap(method, 1, method.device, True)


def _process_facts(tcfg: TrainerConfig) -> tuple[int, int, Any, bool]:
    """(world size, rank, device, bf16 autocast) of this training process; joins the process group
    when launched data-parallel (torchrun, or a submitit job with N tasks: uwmbench/sweeps/launch.py)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if tcfg.device == "auto":
        # LOCAL_RANK modulo the visible GPUs: also right when the scheduler binds one GPU per task
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % max(1, torch.cuda.device_count())}"
                              if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(tcfg.device)
        except RuntimeError as e:
            raise ConfigError(f"trainer.device={tcfg.device!r}: {e}") from None
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = tcfg.tf32
        torch.backends.cudnn.allow_tf32 = tcfg.tf32
    use_bf16 = tcfg.precision == "bf16" or (tcfg.precision == "auto" and device.type == "cuda")
    return world, rank, device, use_bf16


def _restore(resume: Path, method: Method, opt, sched, ema: dict | None, device) -> tuple[int, dict | None]:
    """Weights, optimizer, schedule, RNG state and EMA weights of checkpoint ``resume``; -> (step, ema)."""
    from safetensors.torch import load_file, load_model

    files = CheckpointDir(resume)
    load_model(method, str(files.model), strict=True, device=str(device))
    st = torch.load(files.trainer_state, map_location="cpu", weights_only=False)
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    set_rng_state(st["rng"])
    if ema is not None and files.has_ema:
        ema = {k: v.to(device) for k, v in load_file(str(files.ema)).items()}
    return int(st["step"]), ema


def _step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of (seed, step, rank) in a data-parallel run (independent per process)."""
    s = np.random.SeedSequence([int(seed) % 2**32, int(step), int(rank), 0xD15]).generate_state(2, np.uint32)
    return int(s[0]) << 32 | int(s[1])


def _mean_over_processes(loss: float, terms: dict[str, Any], world: int, device) -> tuple[float, dict[str, Any]]:
    """(loss, terms) averaged over the data-parallel processes (one all-reduce)."""
    keys = sorted(terms)
    t = torch.tensor([loss] + [float(terms[k]) for k in keys], dtype=torch.float64,
                     device=device if device.type == "cuda" else "cpu")
    torch.distributed.all_reduce(t)
    v = (t / world).tolist()
    return v[0], {**terms, **dict(zip(keys, v[1:]))}


def _checkpoint(run_dir, step, method, opt, sched, ema, config_yaml, tcfg, frame_size=None):
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(), "step": step}
    # frame_size: [H, W] of the training frames; the evaluator refuses a different camera size
    save_checkpoint(run_dir, step, method, state, config_yaml, ema_state=ema, keep=tcfg.keep_checkpoints,
                    meta={"frame_size": frame_size})


@torch.no_grad()
def validate(method: Method, dataset, tcfg: TrainerConfig, device, seed: int, use_bf16: bool,
             ema: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Mean of ``method.validation_metrics`` plus the policy's open-loop action error
    (:func:`policy_metrics`) over ``val_batches`` fixed batches of held-out windows; runs under a
    forked RNG so the training stream is unchanged. With ``ema`` (the EMA weights) the open-loop
    error is also measured with those weights (``*_ema`` columns), so raw and EMA curves of one
    run can be compared."""
    devices = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + 12345)
        was_training = method.training
        method.eval()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        loader = make_loader(dataset, tcfg.batch_size, seed=seed + 777, start_step=0, num_workers=0)
        batches = []
        for i, batch in enumerate(loader):
            if i >= tcfg.val_batches:
                break
            batches.append(to_device(batch, device))

        def add(m: dict[str, float]) -> None:
            for k, v in m.items():
                if v == v:  # NaN: not measurable on this batch
                    sums[k] = sums.get(k, 0.0) + float(v)
                    counts[k] = counts.get(k, 0) + 1

        for batch in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                add(method.validation_metrics(batch))
                add(policy_metrics(method, batch))
        if ema:
            raw = {k: p.detach().clone() for k, p in method.named_parameters() if k in ema}
            try:
                _load_params(method, ema)
                for batch in batches:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        add({f"{k}_ema": v for k, v in policy_metrics(method, batch).items()})
            finally:
                _load_params(method, raw)
        method.train(was_training)
    return {k: v / counts[k] for k, v in sums.items()}


def _load_params(method: Method, values: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for k, p in method.named_parameters():
            if k in values:
                p.copy_(values[k])


@torch.no_grad()
def policy_metrics(method: Method, batch: dict[str, Any], seed: int = 0) -> dict[str, float]:
    """The policy's open-loop action error on one batch of windows, in env units (the numbers of
    ``uwmbench diagnose``, :func:`~.diagnose.action_error_summary`): ``val/open_loop_rel_err_pos``
    (mean |error| of the position dims over the whole chunk / mean |action|: 1.0 = no better than
    predicting no motion), ``val/open_loop_rel_err_rot``, ``val/open_loop_err_pos`` and
    ``val/open_loop_grip_agree``. Sampling noise is drawn from per-window generators seeded
    ``seed + i``, so the numbers are deterministic. Methods without a policy, and batches without
    real actions, give ``{}``."""
    from uwmbench.methods.base import POLICY
    from .diagnose import action_error_summary
    from .evaluation.policy import _takes_generator

    if POLICY not in getattr(method, "capabilities", ()) or "action" not in batch:
        return {}
    mask = batch.get("action_mask")
    idx = torch.arange(batch["obs"].shape[0]) if mask is None else mask.cpu().nonzero().squeeze(1)
    if len(idx) == 0:
        return {}
    obs = batch["obs"][idx.to(batch["obs"].device)]
    kw = {}
    if _takes_generator(method.predict_action):
        kw["generator"] = [torch.Generator().manual_seed(seed + i) for i in range(len(idx))]
    pred = method.predict_action({"obs": obs}, **kw)
    s = action_error_summary(pred, batch["action"][idx.to(batch["action"].device)])
    return {"val/open_loop_rel_err_pos": s["rel_err_pos"], "val/open_loop_rel_err_rot": s["rel_err_rot"],
            "val/open_loop_err_pos": s["err_pos"], "val/open_loop_grip_agree": s["grip_sign_agree"]}


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError(f"trainer.tensorboard=true needs the tensorboard package: {e}") from None
    return SummaryWriter(str(run_dir / "tb"))


def _wandb(tcfg: TrainerConfig, run_dir: Path, full: dict):
    try:
        import wandb
    except ImportError as e:
        raise ConfigError(f"trainer.wandb=true needs the wandb package: {e}") from None
    return wandb.init(project=tcfg.wandb_project, dir=str(run_dir), config=full, name=run_dir.name, resume="allow")


def _log_external(tb, wb, row: dict[str, Any], step: int) -> None:
    if tb is not None:
        for k, v in row.items():
            if k != "step":
                tb.add_scalar(k, v, step)
    if wb is not None:
        wb.log({k: v for k, v in row.items() if k != "step"}, step=step)


# ----------------------------------------------------------------------------- submitit job with N tasks
def train_in_job(cfg: Any, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Train inside a submitit job (SLURM or local) with N tasks, one process per GPU (or per CPU
    slot): with N > 1, submitit's ``TorchDistributedEnvironment`` exports RANK, LOCAL_RANK,
    WORLD_SIZE, MASTER_ADDR and MASTER_PORT as ``torchrun`` would, the process group starts from
    the environment (NCCL on CUDA, gloo on CPU) and :func:`train` runs data-parallel (rank 0
    alone holds the run folder's lease and writes checkpoints, metrics and the summary). Every
    task returns the summary (submitit's ``job.result()`` is rank 0's)."""
    from contextlib import ExitStack

    import submitit

    from uwmbench.lease import run_lease
    env = submitit.JobEnvironment()
    world = env.num_tasks
    if world > 1:
        # CUDA_VISIBLE_DEVICES stays as the scheduler set it: the trainer picks cuda:LOCAL_RANK
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = int(os.environ.get("RANK", "0"))
    with ExitStack() as stack:
        err = None
        if rank == 0:  # one job per run folder; the other tasks share rank 0's lease
            try:
                stack.enter_context(run_lease(run_dir, "uwmbench train (distributed job)"))
            except Exception as e:  # noqa: BLE001 - every task must learn it, not hang in a collective
                err = e
        if world > 1:
            flag = [None if err is None else f"{type(err).__name__}: {err}"]
            torch.distributed.broadcast_object_list(flag, src=0)
            if flag[0] is not None and err is None:
                err = RuntimeError(f"rank 0 could not start: {flag[0]}")
        if err is not None:
            if world > 1:
                torch.distributed.destroy_process_group()
            raise err
        try:
            summary = train(cfg, run_dir)
        finally:
            if world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    log.info("rank %d/%d: trained %s steps in %s", rank, world, summary.get("steps"), run_dir)
    return summary


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uwmbench train", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", help="run folder (default: run_dir from the config, else runs/train/<method>-<time>)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="hydra overrides key=value (config: uwmbench/configs/train.yaml)")
    a = p.parse_args(argv)
    cfg = load_config("train", a.overrides)
    if a.print_config:
        print(dump_yaml(cfg))
        return 0
    run_dir = a.run_dir or to_container(cfg).get("run_dir")  # the default folder is new (named by time)
    # one process per run folder; torchrun's other ranks share rank 0's lease
    with run_lease(run_dir, "uwmbench train") if run_dir and os.environ.get("RANK", "0") == "0" else nullcontext():
        summary = train(cfg, run_dir)
    print(f"trained {summary['steps']} steps, final loss {summary['final_loss']:.4f}; checkpoint: {summary['checkpoint']}")
    return 0
