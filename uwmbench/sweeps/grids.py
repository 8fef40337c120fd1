"""Sweep definitions: ``uwmbench/configs/sweep/<name>.yaml`` -> a list of :class:`Cell` (one run each).

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
import os
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


from uwmbench.schemas import EvalOptions, Resources, ScaleSpec, SweepSpec, default_workers  # noqa: E402  (uwmbench/configs/sweep/*.yaml's schema)


def runs_home() -> str:
    """Where long campaigns keep runs, data and stores outside the work tree: $UWMBENCH_RUNS, default ~/uwmbench."""
    return os.path.expanduser(os.environ.get("UWMBENCH_RUNS") or "~/uwmbench")


def _fill(text: str) -> str:
    return text.replace("{runs_home}", runs_home())


def scale_names() -> list[str]:
    d = ires.files("uwmbench.configs").joinpath("scale")
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".yaml"))


def load_scale(name: str) -> ScaleSpec:
    """``uwmbench/configs/scale/<name>.yaml`` with ``{runs_home}`` filled in."""
    f = ires.files("uwmbench.configs").joinpath("scale", f"{name}.yaml")
    if not f.is_file():
        raise ConfigError(f"scale={name}: no uwmbench/configs/scale/{name}.yaml; scales: {', '.join(scale_names())}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ScaleSpec), OmegaConf.create(f.read_text()))
        spec = OmegaConf.to_object(merged)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"uwmbench/configs/scale/{name}.yaml: {msg}; valid keys: "
                          f"{sorted(f.name for f in dataclasses.fields(ScaleSpec))}") from None
    spec.base = [_fill(o) for o in spec.base]
    spec.store, spec.runs = (_fill(spec.store) if spec.store else None), (_fill(spec.runs) if spec.runs else None)
    return spec


def scale_of(overrides: list[str] | tuple[str, ...]) -> str | None:
    """The ``scale=<name>`` among a sweep's overrides (the last one), or None."""
    found = [o.split("=", 1)[1] for o in overrides if o.startswith("scale=")]
    return found[-1] if found else None


_RATES: dict[str, dict[str, Any]] = {}


def load_rates(name: str = "cpu") -> dict[str, Any]:
    """``uwmbench/configs/rates/<name>.yaml``: the per-step rates measured on this project's CPU machine."""
    if name not in _RATES:
        f = ires.files("uwmbench.configs").joinpath("rates", f"{name}.yaml")
        if not f.is_file():
            raise ConfigError(f"cost={name}: no uwmbench/configs/rates/{name}.yaml")
        _RATES[name] = OmegaConf.to_container(OmegaConf.create(f.read_text()), resolve=True)
    return _RATES[name]


def rates_cpu(key: str, method: str | None = None, name: str = "cpu") -> float:
    """One measured CPU rate (``key``, per ``method`` where it is a table); nan where unmeasured."""
    v = load_rates(name).get(key)
    if isinstance(v, dict):
        v = v.get(method) if method else None
    return float(v) if v is not None else float("nan")


def demo_steps(tasks, name: str = "cpu") -> float:
    """Mean scripted-demo length (env steps) over ``tasks``: the measured length of each task, else
    the rates file's default. The data stage and the latent cache are priced per env step / frame."""
    table = load_rates(name).get("demo_steps") or {}
    lengths = [float(table.get(str(t), table.get("default", 250))) for t in tasks]
    return sum(lengths) / len(lengths) if lengths else float(table.get("default", 250))


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
    scale: str | None = None                   # scale=<name> it was expanded at (uwmbench/configs/scale/)

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
        raise ConfigError(f"unknown sweep {name!r} (no uwmbench/configs/sweep/{name}.yaml); sweeps: {', '.join(sweep_names())}")
    try:
        raw = OmegaConf.create(f.read_text())
        spec = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(SweepSpec), raw), resolve=True)
    except ConfigError as e:
        raise ConfigError(f"uwmbench/configs/sweep/{name}.yaml: {e}") from None
    except Exception as e:  # an unknown key or an ill-typed value, named by omegaconf
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        valid = sorted(f.name for f in dataclasses.fields(SweepSpec))
        raise ConfigError(f"uwmbench/configs/sweep/{name}.yaml: {msg}; valid keys: {valid}") from None
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
                raise ConfigError(f"uwmbench/configs/sweep/{sweep}.yaml: axis {axis.get('name')!r} value {v} has no label")
            out.append({"label": str(v["label"]), "overrides": list(v.get("overrides") or [])})
    if not out:
        raise ConfigError(f"uwmbench/configs/sweep/{sweep}.yaml: axis {axis.get('name')!r} has no values")
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
    scale = scale_of(extra)
    seeds, tasks = list(spec.get("seeds") or [0]), list(spec.get("tasks") or [])
    methods: list[str] | None = None
    scale_base: list[str] = []
    keep: dict[str, list[str]] = {}
    if scale:  # uwmbench/configs/scale/<scale>.yaml, then what this sweep changes at that scale
        sc = load_scale(scale)
        own = (spec.get("scales") or {}).get(scale) or {}
        unknown = sorted(set(own) - {"tasks", "seeds", "base", "methods", "values", "notes"})
        if unknown:
            raise ConfigError(f"uwmbench/configs/sweep/{name}.yaml: scales.{scale} has unknown keys {unknown} "
                              "(valid: tasks, seeds, base, methods, values, notes)")
        keep = own.get("values") or {}  # {axis: [labels kept at this scale]}
        seeds = [int(x) for x in own.get("seeds") or sc.seeds]
        tasks = list(own.get("tasks") or tasks)
        methods = list(own["methods"]) if own.get("methods") else None
        scale_base = list(sc.base) + [_fill(str(o)) for o in own.get("base") or []]
        spec = dict(spec, resources=dataclasses.asdict(sc.resources))
    rest = []
    for o in extra:
        if o.startswith("scale="):
            continue
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
        raise ConfigError(f"uwmbench/configs/sweep/{name}.yaml: no tasks")
    resources = Resources(**(spec.get("resources") or {}))
    axes = spec.get("axes") or []
    if methods is not None:  # methods=[uwm,dp,mine]: the method axis' values (a registered method each)
        unknown = [m for m in methods if m not in registered_methods()]
        if unknown:
            raise ConfigError(f"methods={methods}: {unknown} not registered; registered: {', '.join(registered_methods())}")
        if not any(a.get("name") == "method" for a in axes):
            raise ConfigError(f"uwmbench/configs/sweep/{name}.yaml has no `method` axis for methods= to replace "
                              f"(its axes: {[a.get('name') for a in axes]}); use method=NAME to change its one method")
        axes = [dict(a, values=[{"label": m, "overrides": [f"method={m}"]} for m in methods])
                if a.get("name") == "method" else a for a in axes]
    values = [_axis_values(name, a) for a in axes]
    if scale and keep:
        names = [a.get("name") for a in axes]
        bad = sorted(set(keep) - set(names))
        if bad:
            raise ConfigError(f"uwmbench/configs/sweep/{name}.yaml: scales.{scale}.values names axes {bad}; axes: {names}")
        values = [[v for v in vals if a.get("name") not in keep or v["label"] in keep[a.get("name")]]
                  for a, vals in zip(axes, values)]
    task_groups = [[t] for t in tasks] if spec.get("per_task") else [tasks]
    cells = []
    for combo in itertools.product(*values) if values else [()]:
        ov = list(spec.get("base") or []) + scale_base  # the scale over the sweep's base, the axes over both
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
                                  tasks=list(tg), overrides=ov, resources=dataclasses.replace(resources), scale=scale))
    names = [c.cell for c in cells]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"uwmbench/configs/sweep/{name}.yaml: duplicate cell names {dup} (give axis values distinct labels)")
    if estimate:
        estimate_cells(cells)
    return cells


def estimate_cells(cells: list[Cell]) -> None:
    """Fill each cell's ``estimate`` (seed and names do not change the cost: computed once per config)."""
    cache: dict[tuple, dict[str, float]] = {}
    for c in cells:
        key = (tuple(c.overrides), tuple(c.tasks), dataclasses.astuple(c.resources))
        if key not in cache:
            cache[key] = estimate_cell(c)
        c.estimate = dict(cache[key])


def compose_cell(cell: Cell, store: str | None = None, runs_root: str | None = None):
    return load_config("run", cell.run_overrides(store, runs_root))


def estimate_cell(cell: Cell, gpus: int | None = None) -> dict[str, float]:
    """What a cell costs, from its composed run config: with GPUs (``gpus``, default the cell's
    resources) GPU-hours at the H100 anchors of the paper-size models; without, hours on this
    project's 2-core CPU machine from the rates measured there (uwmbench/configs/rates/cpu.yaml: the
    ``small`` presets). ``nan`` where the method or size has no anchor."""
    cfg = OmegaConf.to_container(compose_cell(cell), resolve=True)
    m = cfg["method"]["name"]
    size = cfg["method"].get("size") or get_method_class(m).config_class.size
    gpus = int(cell.resources.gpus if gpus is None else gpus)
    pre, fin, ev = cfg.get("pretrain", {}), cfg.get("finetune", {}), cfg.get("evaluate", {})
    n_tasks = len(cell.tasks)
    nan = float("nan")
    on_gpu = gpus > 0
    sps = TRAIN_SAMPLES_PER_S.get(m) if (on_gpu and size == "paper") else None
    cpu_rates = load_rates("cpu")
    cpu_train = rates_cpu("train_s_per_step", m) if (not on_gpu and size == cpu_rates.get("size")) else nan

    def train_h(stage: dict, n: int) -> float:
        t = stage.get("trainer", {})
        steps, batch = float(t.get("steps", 0)), float(t.get("batch_size", 36))
        if on_gpu:
            return n * steps * batch * int(stage.get("gpus", 1)) / sps / 3600 if sps else nan
        per_step = cpu_train * batch / float(cpu_rates.get("batch_size", 32))
        extra = 0.0
        if (cfg.get("data") or {}).get("latent_cache", True) and "vae" in {f.name for f in dataclasses.fields(
                get_method_class(m).config_class)}:
            extra += (float((cfg.get("prepare") or {}).get("episodes", 50)) * demo_steps(cell.tasks)
                      * rates_cpu("latent_cache_s_per_frame"))
        if int(ev.get("diagnose_windows") or 0) > 0 and int(ev.get("n_rollouts") or 0) > 0:
            extra += rates_cpu("diagnose_s")
        return n * (steps * per_step + extra) / 3600

    pre_h = train_h(pre, 1) if pre.get("enabled") and not pre.get("checkpoint") else 0.0
    fin_h = train_h(fin, n_tasks) if fin.get("enabled", True) else 0.0
    n_roll = int(ev.get("n_rollouts", 0)) * len(ev.get("conditions", [])) * n_tasks * len(ev.get("modes") or ["policy"])
    max_steps = int(ev.get("max_steps") or EvalOptions.max_steps)   # null (the benchmark's length): priced at the default
    workers = max(1, int(ev.get("workers") or default_workers()))
    if on_gpu or size == "paper":
        lat = (POLICY_LATENCY_S if on_gpu else POLICY_LATENCY_CPU_S).get(m) if size == "paper" else None
        calls = n_roll * math.ceil(max_steps / int(ev.get("replan_every") or EvalOptions.replan_every))
        pol_h = calls * lat / 3600 if lat else (0.0 if n_roll == 0 else nan)
        ev_cpu_h = n_roll * max_steps * SIM_STEP_S / 3600 + (0.0 if on_gpu else pol_h)
        ev_gpu_h = pol_h if on_gpu else 0.0
        ev_wall = max(ev_gpu_h, ev_cpu_h / workers) if on_gpu else ev_cpu_h / workers
    else:  # small presets on this CPU: measured seconds per env step of one worker, the policy included
        r = rates_cpu("rollout_s_per_step", m)
        if r != r:  # unmeasured method: the slowest measured small policy (an upper bound)
            r = max(v for v in (cpu_rates.get("rollout_s_per_step") or {"": nan}).values())
        steps = n_roll * max_steps * float(cpu_rates.get("rollout_length", 1.0))
        ev_cpu_h = steps * r / 3600  # worker-hours: one core each
        ev_gpu_h = 0.0
        ev_wall = ev_cpu_h / workers
    if on_gpu:
        total = pre_h + fin_h + ev_gpu_h
        pre_gpus = max(1, int(pre.get("gpus", 1)) if pre.get("distributed") else min(int(pre.get("gpus", 1)), gpus))
        wall = pre_h / pre_gpus + fin_h + ev_wall
        train_cpu_h = 0.0
        return {"pretrain_gpu_h": pre_h, "finetune_gpu_h": fin_h, "eval_gpu_h": ev_gpu_h, "eval_cpu_h": ev_cpu_h,
                "train_cpu_h": train_cpu_h, "gpu_h": total, "wall_h": wall, "rollouts": n_roll}
    threads = max(1, int(cell.resources.cpus or 1))
    return {"pretrain_gpu_h": 0.0, "finetune_gpu_h": 0.0, "eval_gpu_h": 0.0, "eval_cpu_h": ev_cpu_h,
            "train_cpu_h": (pre_h + fin_h) * threads, "train_wall_h": pre_h + fin_h, "eval_wall_h": ev_wall,
            "pretrain_wall_h": pre_h, "finetune_wall_h": fin_h, "eval_s_per_rollout": (ev_wall * workers * 3600 / n_roll
                                                                                      if n_roll else 0.0),
            "gpu_h": 0.0, "wall_h": pre_h + fin_h + ev_wall, "rollouts": n_roll}


def job_table(cells: list[Cell]):
    """DataFrame: one row per cell with resources and estimates: GPU-hours for cells with GPUs;
    hours on this CPU machine (train, eval, wall) and core-hours for cells without."""
    rows = []
    for c in cells:
        e = c.estimate
        row = {"cell": c.cell, "method": c.method, "variant": c.variant, "seed": c.seed,
               "tasks": len(c.tasks), "gpus": c.resources.gpus, "cpus": c.resources.cpus,
               "mem_gb": c.resources.mem_gb, "time_h": c.resources.time_h, "rollouts": e.get("rollouts", 0)}
        if c.resources.gpus > 0:
            row.update({"pretrain_gpu_h": e.get("pretrain_gpu_h"), "finetune_gpu_h": e.get("finetune_gpu_h"),
                        "eval_gpu_h": e.get("eval_gpu_h"), "eval_cpu_h": e.get("eval_cpu_h"),
                        "gpu_h": e.get("gpu_h"), "wall_h": e.get("wall_h")})
        else:
            row.update({"train_h": e.get("train_wall_h"), "eval_h": e.get("eval_wall_h"), "wall_h": e.get("wall_h"),
                        "cpu_h": (e.get("train_cpu_h") or 0.0) + (e.get("eval_cpu_h") or 0.0), "gpu_h": 0.0})
        rows.append(row)
    return pd.DataFrame(rows)


def format_job_table(name: str, cells: list[Cell], data_h: float = 0.0, parallel: int | None = None) -> str:
    """The dry run's top table. ``data_h``: hours of the shared data stage (collection, VAE) on this
    machine; ``parallel``: cells running at once (launcher.max_parallel) for the CPU wall-clock total."""
    spec = load_sweep_spec(name)
    df = job_table(cells)
    lines = [f"sweep {name}: {spec.get('description', '')}".rstrip()
             + (f" [scale={cells[0].scale}]" if cells and cells[0].scale else ""),
             f"{len(cells)} cells, {df['rollouts'].sum()} evaluation rollouts; tasks: "
             + ", ".join(sorted({t for c in cells for t in c.tasks}))]
    pd_opts = dict(index=False, float_format=lambda x: f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}", na_rep="-")
    lines.append(df.to_string(**pd_opts))
    gpu = df[df["gpus"] > 0]
    cpu = df[df["gpus"] == 0]
    if len(gpu):
        lines.append(f"total (cells with GPUs): {gpu['gpu_h'].sum():.0f} GPU-hours (H100 bf16 estimate: pretrain "
                     f"{gpu['pretrain_gpu_h'].sum():.0f}, finetune {gpu['finetune_gpu_h'].sum():.0f}, eval policy "
                     f"{gpu['eval_gpu_h'].sum():.0f}) + {gpu['eval_cpu_h'].sum():.0f} CPU-hours of simulation")
        n_nan = int(gpu["gpu_h"].isna().sum())
        if n_nan:
            lines.append(f"({n_nan} cells have no GPU speed anchor (non-paper size or unmeasured method): not counted)")
        lines.append("GPU estimates: public UWM code on an H100 (train samples/s bf16 UWM 118, DP 425, PAD 74, GR1 301; "
                     "policy latency UWM 80 ms, DP 94, PAD 127, GR1 22 per 16-action chunk); sim 0.15 s/step/core")
    if len(cpu):
        rates = load_rates("cpu")
        n_nan = int(cpu["wall_h"].isna().sum())
        par = max(1, parallel or 1)
        wall = cpu["wall_h"].sum() / par + data_h
        lines.append(f"total (cells without GPUs, on {rates.get('machine', 'this machine')}): {wall:.1f} h wall-clock "
                     f"({cpu['train_h'].sum():.1f} h training + {cpu['eval_h'].sum():.1f} h rollouts"
                     + (f" + {data_h:.1f} h data stage" if data_h else "")
                     + (f", {par} cells at a time" if par > 1 else ", one cell at a time")
                     + f"), {cpu['cpu_h'].sum():.1f} core-hours; GPU-hours 0")
        if n_nan:
            lines.append(f"({n_nan} cells have no CPU rate (a size other than {rates.get('size')!r} or an unmeasured "
                         "method): not counted; with GPUs: --launcher slurm, or launcher.gpus_per_node=N on a local "
                         "GPU machine)")
        lines.append(f"CPU estimates: uwmbench/configs/rates/cpu.yaml, measured {rates.get('measured', '?')}: train s/step at batch "
                     f"{rates.get('batch_size')} " + ", ".join(f"{k} {v}" for k, v in (rates.get('train_s_per_step') or {}).items())
                     + "; rollout s/env step per worker " + ", ".join(f"{k} {v}" for k, v in
                                                                   (rates.get('rollout_s_per_step') or {}).items())
                     + f"; rollouts last {rates.get('rollout_length')} x max_steps on average")
    scale = cells[0].scale if cells else None  # a scale's own note replaces the sweep's (its rollouts, pretraining)
    note = (((spec.get("scales") or {}).get(scale) or {}).get("notes") if scale else None) or spec.get("notes")
    if note:
        lines.append(f"note: {note}")
    return "\n".join(lines)
