"""Sweep definitions: ``configs/sweep/<name>.yaml`` -> a list of :class:`Cell` (one run each).

A sweep yaml::

    description: one line
    seeds: [0, 1, 2]
    tasks: [book_caddy, ...]       # the tasks of each run (finetune + evaluate per task)
    per_task: false                # true: one cell per task (the run then has one task)
    base: [key=value, ...]         # `run` config overrides applied to every cell
    resources: {gpus: 1, cpus: 8, mem_gb: 64, time_h: 48}
    axes:                          # the grid: product of the axes, in order
      - name: method
        values:
          - {label: uwm, overrides: [method=uwm]}
          - {capability: action_free_data, among: [uwm, dp, pad, gr1]}   # expands to the
            # registered methods whose class declares that capability

A cell's name is its labels joined by ``-`` plus ``-s<seed>`` (and ``-<task>``); its run id
is ``<sweep>/<cell>``. Cost estimates use the public UWM code's speeds measured on an H100 (bf16).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from dataclasses import dataclass, field
from importlib import resources as ires
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from uwmbench.config import ConfigError, load_config
from uwmbench.methods import get_method_class, registered_methods

log = logging.getLogger(__name__)

# H100 throughput (training samples/s, bf16 autocast, batch 36) and batch-1 policy latency (s,
# 10 DDIM steps where diffusion) of the paper-size models, public code measured on an H100.
TRAIN_SAMPLES_PER_S = {"uwm": 118.0, "dp": 425.0, "pad": 74.0, "gr1": 301.0}
POLICY_LATENCY_S = {"uwm": 0.080, "dp": 0.094, "pad": 0.127, "gr1": 0.022}
SIM_STEP_S = 0.15  # LIBERO env step with two 128x128 cameras on one CPU core (measured here)
# batch-1 policy latency (s per 16-action chunk, 10 DDIM steps where diffusion) of the paper-size
# models on ONE CPU thread of this 2-core VM (`uwmbench perf train --size paper --device cpu`, fp32,
# docs/results/perf_cpu_policy): what a CPU-only rollout job pays per policy call
POLICY_LATENCY_CPU_S: dict[str, float] = {"uwm": 9.3, "dp": 3.3, "pad": 27.5, "gr1": 1.8}


from uwmbench.schemas import Resources, SweepSpec, default_workers  # noqa: E402  (configs/sweep/*.yaml's schema)


@dataclass
class Cell:
    sweep: str
    cell: str
    method: str
    variant: str
    seed: int
    tasks: list[str]
    overrides: list[str]                       # `run` config overrides for this cell
    resources: Resources = field(default_factory=Resources)
    estimate: dict[str, float] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return f"{self.sweep}/{self.cell}"

    def run_overrides(self, store: str | None = None, runs_root: str | None = None) -> list[str]:
        out = list(self.overrides) + [f"sweep_name={self.sweep}", f"cell={self.cell}", f"run_id={self.run_id}",
                                      f"variant={self.variant}", f"seed={self.seed}",
                                      "tasks=[" + ",".join(self.tasks) + "]"]
        if store:
            out.append(f"store={store}")
        if runs_root:
            out.append(f"runs_root={runs_root}")
        return out


def sweep_names() -> list[str]:
    d = ires.files("uwmbench.configs").joinpath("sweep")
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".yaml"))


def load_sweep_spec(name: str) -> dict[str, Any]:
    f = ires.files("uwmbench.configs").joinpath("sweep", f"{name}.yaml")
    if not f.is_file():
        raise ConfigError(f"unknown sweep {name!r} (no configs/sweep/{name}.yaml); sweeps: {', '.join(sweep_names())}")
    try:
        raw = OmegaConf.create(f.read_text())
        spec = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(SweepSpec), raw), resolve=True)
    except ConfigError as e:
        raise ConfigError(f"configs/sweep/{name}.yaml: {e}") from None
    except Exception as e:  # an unknown key or an ill-typed value, named by omegaconf
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        valid = sorted(f.name for f in dataclasses.fields(SweepSpec))
        raise ConfigError(f"configs/sweep/{name}.yaml: {msg}; valid keys: {valid}") from None
    return spec


def _axis_values(sweep: str, axis: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for v in axis.get("values") or []:
        if "capability" in v:
            have = registered_methods()
            for m in v.get("among") or sorted(have):
                if m not in have:
                    log.warning("sweep %s: method %r is not registered; left out of axis %r", sweep, m, axis["name"])
                    continue
                if v["capability"] in get_method_class(m).capabilities:
                    out.append({"label": m, "overrides": [f"method={m}"] + list(v.get("overrides") or [])})
        else:
            if "label" not in v:
                raise ConfigError(f"configs/sweep/{sweep}.yaml: axis {axis.get('name')!r} value {v} has no label")
            out.append({"label": str(v["label"]), "overrides": list(v.get("overrides") or [])})
    if not out:
        raise ConfigError(f"configs/sweep/{sweep}.yaml: axis {axis.get('name')!r} has no values")
    return out


def _method_of(overrides: list[str], default: str = "uwm") -> str:
    m = default
    for o in overrides:
        k, _, v = o.partition("=")
        if k.lstrip("+") == "method":
            m = v
    return m


def expand_sweep(name: str, extra_overrides: list[str] | tuple[str, ...] = (), estimate: bool = True) -> list[Cell]:
    """All cells of sweep ``name``; ``extra_overrides`` (``key=value``) apply to every cell;
    ``seeds=[..]`` / ``tasks=[..]`` among them replace the sweep's lists and ``methods=[..]`` the
    values of its ``method`` axis (e.g. ``methods=[uwm,dp,mymethod]`` adds a method to the main table)."""
    spec = load_sweep_spec(name)
    extra = list(extra_overrides)
    seeds, tasks = list(spec.get("seeds") or [0]), list(spec.get("tasks") or [])
    methods: list[str] | None = None
    rest = []
    for o in extra:
        k, _, v = o.partition("=")
        if k in ("seeds", "tasks", "methods"):
            vals = [x.strip() for x in v.strip("[]").split(",") if x.strip()]
            if k == "seeds":
                seeds = [int(x) for x in vals]
            elif k == "tasks":
                tasks = vals
            else:
                methods = vals
        else:
            rest.append(o)
    if not tasks:
        raise ConfigError(f"configs/sweep/{name}.yaml: no tasks")
    resources = Resources(**(spec.get("resources") or {}))
    axes = spec.get("axes") or []
    if methods is not None:  # methods=[uwm,dp,mine]: the method axis' values (a registered method each)
        unknown = [m for m in methods if m not in registered_methods()]
        if unknown:
            raise ConfigError(f"methods={methods}: {unknown} not registered; registered: {', '.join(registered_methods())}")
        if not any(a.get("name") == "method" for a in axes):
            raise ConfigError(f"configs/sweep/{name}.yaml has no `method` axis for methods= to replace "
                              f"(its axes: {[a.get('name') for a in axes]}); use method=NAME to change its one method")
        axes = [dict(a, values=[{"label": m, "overrides": [f"method={m}"]} for m in methods])
                if a.get("name") == "method" else a for a in axes]
    values = [_axis_values(name, a) for a in axes]
    task_groups = [[t] for t in tasks] if spec.get("per_task") else [tasks]
    cells = []
    for combo in itertools.product(*values) if values else [()]:
        ov = list(spec.get("base") or [])
        for v in combo:
            ov += v["overrides"]
        ov += rest
        method = _method_of(ov)
        labels = [v["label"] for v in combo]
        axis_names = [a["name"] for a in axes]
        variant = "+".join(l for a, l in zip(axis_names, labels) if a != "method") or "default"
        for tg in task_groups:
            for seed in seeds:
                parts = labels + ([tg[0]] if spec.get("per_task") else []) + [f"s{seed}"]
                cells.append(Cell(sweep=name, cell="-".join(parts), method=method, variant=variant, seed=int(seed),
                                  tasks=list(tg), overrides=ov, resources=dataclasses.replace(resources)))
    names = [c.cell for c in cells]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"configs/sweep/{name}.yaml: duplicate cell names {dup} (give axis values distinct labels)")
    if estimate:
        cache: dict[tuple, dict[str, float]] = {}  # seed and names do not change the cost
        for c in cells:
            key = (tuple(c.overrides), tuple(c.tasks), dataclasses.astuple(c.resources))
            if key not in cache:
                cache[key] = estimate_cell(c)
            c.estimate = dict(cache[key])
    return cells


def compose_cell(cell: Cell, store: str | None = None, runs_root: str | None = None):
    return load_config("run", cell.run_overrides(store, runs_root))


def estimate_cell(cell: Cell) -> dict[str, float]:
    """GPU-hours (H100, bf16) of a cell from its composed run config; ``nan`` where the
    method or size has no anchor (tiny sizes, methods without a measurement)."""
    cfg = OmegaConf.to_container(compose_cell(cell), resolve=True)
    m = cfg["method"]["name"]
    paper = (cfg["method"].get("size") or get_method_class(m).config_class.size) == "paper"
    sps = TRAIN_SAMPLES_PER_S.get(m) if paper else None
    lat = POLICY_LATENCY_S.get(m) if paper else None
    pre, fin, ev = cfg.get("pretrain", {}), cfg.get("finetune", {}), cfg.get("evaluate", {})
    n_tasks = len(cell.tasks)
    nan = float("nan")

    def train_h(stage: dict, n: int) -> float:
        t = stage.get("trainer", {})
        samples = float(t.get("steps", 0)) * float(t.get("batch_size", 36)) * int(stage.get("gpus", 1))
        return n * samples / sps / 3600 if sps else nan

    pre_h = train_h(pre, 1) if pre.get("enabled") and not pre.get("checkpoint") else 0.0
    fin_h = train_h(fin, n_tasks) if fin.get("enabled", True) else 0.0
    n_roll = int(ev.get("n_rollouts", 0)) * len(ev.get("conditions", [])) * n_tasks * len(ev.get("modes") or ["policy"])
    max_steps = int(ev.get("max_steps") or 1000)
    calls = n_roll * math.ceil(max_steps / int(ev.get("replan_every") or 16))
    ev_gpu_h = calls * lat / 3600 if lat else (0.0 if n_roll == 0 else nan)
    ev_cpu_h = n_roll * max_steps * SIM_STEP_S / 3600
    total = pre_h + fin_h + ev_gpu_h
    workers = max(1, int(ev.get("workers") or default_workers()))
    # in-process the protocol trains on the cell's GPUs: pretraining spreads over min(pretrain.gpus, cell gpus);
    # with pretrain.distributed it is its own job with pretrain.gpus tasks (DDP)
    pre_gpus = max(1, int(pre.get("gpus", 1)) if pre.get("distributed") else
                   min(int(pre.get("gpus", 1)), int(cell.resources.gpus or 1)))
    wall = pre_h / pre_gpus + fin_h + max(ev_gpu_h, ev_cpu_h / workers)
    return {"pretrain_gpu_h": pre_h, "finetune_gpu_h": fin_h, "eval_gpu_h": ev_gpu_h, "eval_cpu_h": ev_cpu_h,
            "gpu_h": total, "wall_h": wall, "rollouts": n_roll}


def job_table(cells: list[Cell]):
    """DataFrame: one row per cell with resources and estimated GPU-hours."""
    rows = []
    for c in cells:
        e = c.estimate
        rows.append({"cell": c.cell, "method": c.method, "variant": c.variant, "seed": c.seed,
                     "tasks": len(c.tasks), "gpus": c.resources.gpus, "cpus": c.resources.cpus,
                     "mem_gb": c.resources.mem_gb, "time_h": c.resources.time_h,
                     "rollouts": e.get("rollouts", 0),
                     "pretrain_gpu_h": e.get("pretrain_gpu_h"), "finetune_gpu_h": e.get("finetune_gpu_h"),
                     "eval_gpu_h": e.get("eval_gpu_h"), "eval_cpu_h": e.get("eval_cpu_h"),
                     "gpu_h": e.get("gpu_h"), "wall_h": e.get("wall_h")})
    return pd.DataFrame(rows)


def format_job_table(name: str, cells: list[Cell]) -> str:
    spec = load_sweep_spec(name)
    df = job_table(cells)
    with_nan = df["gpu_h"].isna().sum()
    lines = [f"sweep {name}: {spec.get('description', '')}".rstrip(),
             f"{len(cells)} cells, {df['rollouts'].sum()} evaluation rollouts; tasks: "
             + ", ".join(sorted({t for c in cells for t in c.tasks}))]
    pd_opts = dict(index=False, float_format=lambda x: f"{x:.1f}")
    lines.append(df.to_string(**pd_opts))
    lines.append(f"total: {df['gpu_h'].sum():.0f} GPU-hours (H100 bf16 estimate: pretrain {df['pretrain_gpu_h'].sum():.0f}, "
                 f"finetune {df['finetune_gpu_h'].sum():.0f}, eval policy {df['eval_gpu_h'].sum():.0f}) "
                 f"+ {df['eval_cpu_h'].sum():.0f} CPU-hours of simulation")
    if with_nan:
        lines.append(f"({with_nan} cells have no speed anchor (non-paper size or unmeasured method): not counted)")
    lines.append("estimates: public UWM code on an H100 (train samples/s bf16 UWM 118, DP 425, PAD 74, GR1 301; policy "
                 "latency UWM 80 ms, DP 94, PAD 127, GR1 22 per 16-action chunk); sim 0.15 s/step/core")
    if spec.get("notes"):
        lines.append(f"note: {spec['notes']}")
    return "\n".join(lines)
