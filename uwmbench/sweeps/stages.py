"""The protocol as a graph of jobs (``launcher.stage_jobs``: the SLURM default).

A sweep's cells become stage nodes, each its own submitit job with its own resources:

    data (where ``prepare`` makes missing inputs: scripted demos, the VAE; one per set of files, shared)
    -> pretrain (one per method, seed and pretrain config: shared by every cell that trains the same)
      -> finetune/<task> per cell (GPU; its diagnostics too)
        -> eval/<task>/<mode>/<condition>/<first>-<last>: rollout chunks of ``launcher.rollouts_per_job``
           episodes, one job array per (cell, task), CPU-only unless ``launcher.rollout_gpus``
          -> row per cell: gathers the chunks, writes the run row and DONE (CPU, minutes)

On SLURM the nodes are chained with ``--dependency=afterok:<jobs>`` and
``--kill-on-invalid-dep=yes``: ``uwmbench sweep main launcher=slurm`` submits the whole grid at
once and returns; a failed or cancelled stage cancels its dependents, and the next ``uwmbench
sweep`` re-queues what is not done (a finished stage is never rerun: its result is in
stages.json). The local launcher emulates the dependencies: a stage job waits until the stages it
needs are done and fails if one of their jobs ended without finishing.

A stage job is a ``submitit.helpers.Checkpointable``: preempted or timed out (SIGUSR2), it is
requeued and resumes (the trainer from its latest checkpoint, the evaluator from its written
rollouts).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from uwmbench.config import ConfigError
from uwmbench.run_dir import RunDir, StageKey, Stages
from uwmbench.schemas import EvalOptions, Resources, StageConfig
from .grids import (POLICY_LATENCY_CPU_S, POLICY_LATENCY_S, SIM_STEP_S, TRAIN_SAMPLES_PER_S, Cell, compose_cell,
                    demo_steps, estimate_cell, rates_cpu)
from .launch import (ACTIVE_STATES, Job, _record, cancel, hold_slot, job_state, make_executor,
                     max_parallel_of, record_cancel)
from .protocol import (StageNotReady, _resolve, check_run, prepare_targets, run_dir_of, run_graph, run_stage,
                       shared_pretrain_dir)

log = logging.getLogger(__name__)

KINDS = ("data", "pretrain", "finetune", "evaluate", "row")  # the order the sorted graph keeps


@dataclass
class StageNode:
    key: str                      # unique in the sweep: "<cell>/<stage>", or "_pretrain/<name>" (shared)
    stage: str                    # what run_stage runs: pretrain | finetune/<task> | eval/... | row
    kind: str                     # pretrain | finetune | evaluate | row
    cell: Cell                    # the cell whose config the job composes (a shared pretrain: its first cell)
    cells: list[str]              # the cells that need it
    deps: list[str]               # keys of the nodes it needs
    marker: tuple[str, str | None]  # (file, key): done when the JSON file has the key (None: the file exists)
    resources: Resources
    tasks: int = 1                # processes of the job (data-parallel training: one per GPU)
    cpu_partition: bool = False   # an evaluation or row job (launcher.rollout_partition / rollout_account)
    rollouts: int = 0
    gpu_h: float = 0.0            # estimates: GPU-hours and CPU-core-hours of the job
    cpu_h: float = 0.0

    def done(self) -> bool:
        f, k = self.marker
        if k is None:
            return os.path.isfile(f)
        return Stages(f).get(k) is not None

    def wait_spec(self) -> dict[str, Any]:
        return {"key": self.key, "marker": list(self.marker)}


def _is_done(marker: list) -> bool:
    f, k = marker
    return os.path.isfile(f) if k is None else Stages(f).get(k) is not None


# ----------------------------------------------------------------------------- the graph
def share_pretraining(cells: list[Cell], store: str, runs_root: str) -> dict[str, dict[str, Any]]:
    """Point every cell that pretrains at its shared pretrain folder (``pretrain.run_dir``, the
    same for cells with the same method, seed and pretrain config) by adding the override to the
    cell; returns cell -> its resolved run config."""
    import copy

    out: dict[str, dict[str, Any]] = {}
    composed: dict[tuple, dict[str, Any]] = {}  # cells that differ only by seed and name compose alike
    for c in cells:
        c.overrides = [o for o in c.overrides if not o.startswith("pretrain.run_dir=")]
        key = (tuple(c.overrides), tuple(c.tasks))
        if key in composed and not any("${" in o for o in c.overrides):
            full = copy.deepcopy(composed[key])
            full.update(sweep_name=c.sweep, cell=c.cell, run_id=c.run_id, variant=c.variant, seed=int(c.seed))
        else:
            full = _resolve(compose_cell(c, store, runs_root))
            composed[key] = copy.deepcopy(full)
        pdir = shared_pretrain_dir(full) if not (full.get("pretrain") or {}).get("run_dir") else None
        if pdir is not None:
            c.overrides.append(f"pretrain.run_dir={pdir}")
            full["pretrain"]["run_dir"] = str(pdir)
        out[c.cell] = full
    return out


def _train_h(method: str, paper: bool, stage: StageConfig, n_tasks: int) -> float:
    """GPU-hours of a training stage: steps x global batch (n_tasks x trainer.batch_size) at the
    H100 anchor's samples/s per GPU."""
    sps = TRAIN_SAMPLES_PER_S.get(method) if paper else None
    samples = float(stage.trainer.steps) * float(stage.trainer.batch_size) * max(1, n_tasks)
    return samples / sps / 3600 if sps else float("nan")


def stage_tasks(stage: StageConfig, gpus: int) -> int:
    """Processes of a training stage's job: ``stage.gpus`` data-parallel tasks on GPU jobs (a stage
    job IS the stage's DDP job: global batch = gpus x trainer.batch_size, the paper's 4 x 36), and
    on CPU jobs when ``stage.distributed`` asks for it; else 1."""
    return max(1, stage.gpus) if (gpus > 0 or stage.distributed) else 1


def cell_gpus(cell: Cell, launcher: dict[str, Any]) -> int:
    """GPUs per job of a cell under ``launcher``: launcher.gpus_per_node where the launcher sets it
    (local: 0 unless given), else the sweep's resources. The dry run's two tables both use this."""
    g = launcher.get("gpus_per_node")
    return int(g if g is not None else cell.resources.gpus)


def _data_node(key: str, c: Cell, prep: dict[str, Any], rd: RunDir, collect: list[str], vae: bool) -> StageNode:
    """The data stage collecting the demos of ``collect`` (tasks) and fitting a VAE: CPU only, priced
    from measured rates (per env step of each task's scripted demos)."""
    hours = (len(collect) * float(prep.get("episodes", 50)) * demo_steps(collect) * rates_cpu("collect_s_per_env_step")
             + (float(prep.get("vae_steps", 800)) * rates_cpu("vae_s_per_step") if vae else 0.0)) / 3600
    cpus = max(1, int(prep.get("workers", 2)))
    return StageNode(key=key, stage="data", kind="data", cell=c, cells=[], deps=[],
                     marker=(str(rd.stages_file), "data"),
                     resources=Resources(gpus=0, cpus=cpus, mem_gb=3 * cpus + 4, time_h=max(1.0, 2 * hours)),
                     cpu_partition=True, cpu_h=cpus * hours)


def _chunk_cost(key: StageKey, full: dict[str, Any], ev: Any, launcher: dict[str, Any], paper: bool,
                cpu_est: dict[str, float] | None) -> dict[str, Any]:
    """Resources, rollouts and estimated GPU-/CPU-hours of one rollout-chunk job."""
    method = full["method"]["name"]
    workers = ev.workers if ev.workers is not None else 8
    cpus = int(launcher.get("rollout_cpus") or (max(1, workers) + 1))
    rg = int(launcher.get("rollout_gpus") or 0)
    lat = (POLICY_LATENCY_S if rg else POLICY_LATENCY_CPU_S).get(method) if paper else None
    n = key.last - key.first + 1
    steps = ev.max_steps or EvalOptions.max_steps   # null: priced at the default
    calls = n * math.ceil(steps / ev.replan_every)
    sim_h = n * steps * SIM_STEP_S / 3600 / max(1, workers)
    pol_h = calls * lat / 3600 if lat else (0.0 if not paper else float("nan"))
    wall = sim_h + pol_h  # policy calls and env steps alternate
    if cpu_est is not None and not rg:  # small presets: measured s/env step, policy included
        wall = n * cpu_est["eval_s_per_rollout"] / 3600 / max(1, workers)
    time_h = launcher.get("rollout_time_h") or max(1.0, 1.5 * wall if wall == wall else 4.0)
    res = Resources(gpus=rg, cpus=cpus, mem_gb=int(launcher.get("rollout_mem_gb") or (3 * max(1, workers) + 8)),
                    time_h=float(time_h))
    return {"resources": res, "rollouts": n, "gpu_h": rg * wall, "cpu_h": cpus * wall}


def build_graph(cells: list[Cell], store: str, runs_root: str, launcher: dict[str, Any],
                fulls: dict[str, dict[str, Any]] | None = None) -> list[StageNode]:
    """The stage nodes of ``cells`` in dependency order (pretrain, finetune, evaluate, row)."""
    from uwmbench.methods import get_method_class

    store, runs_root = str(Path(store).absolute()), str(Path(runs_root).absolute())
    fulls = fulls if fulls is not None else share_pretraining(cells, store, runs_root)
    per_job = int(launcher.get("rollouts_per_job") or 25)
    pretrains: dict[str, StageNode] = {}
    datas: dict[str, StageNode] = {}
    cpu_ests: dict[tuple, dict[str, float]] = {}
    nodes: list[StageNode] = []
    for c in cells:
        full = fulls[c.cell]
        pre, fin, ev = check_run(full, data=False)
        method = full["method"]["name"]
        paper = (full["method"].get("size") or get_method_class(method).config_class.size) == "paper"
        rd = RunDir(run_dir_of(full))
        gpus = cell_gpus(c, launcher)
        ekey = (tuple(c.overrides), tuple(c.tasks), c.resources.cpus)
        if gpus == 0 and not paper and ekey not in cpu_ests:
            cpu_ests[ekey] = estimate_cell(c, gpus=0)
        cpu_est = cpu_ests.get(ekey) if (gpus == 0 and not paper) else None  # measured CPU rates (small presets)
        train_res = Resources(gpus=gpus, cpus=int(launcher.get("cpus_per_task") or c.resources.cpus),
                              mem_gb=int(launcher.get("mem_gb") or c.resources.mem_gb), time_h=c.resources.time_h)
        names: dict[StageKey, str] = {}   # the run graph's stages -> this sweep's node keys

        def node(key: StageKey, deps: list[StageKey], kind: str, **kw: Any) -> StageNode:
            names.setdefault(key, f"{c.cell}/{key}")
            n = StageNode(key=names[key], stage=str(key), kind=kind, cell=c, cells=[c.cell],
                          deps=[names[d] for d in deps], marker=(str(rd.stages_file), str(key)), **kw)
            nodes.append(n)
            return n

        for key, deps in run_graph(full, pre, fin, ev, per_job):
            if key.kind == "data":  # one job per distinct set of files to make, shared by its cells
                collect, vae = prepare_targets(full)
                names[key] = "_data/" + hashlib.sha1(json.dumps([collect, vae]).encode()).hexdigest()[:10]
                if names[key] not in datas:
                    datas[names[key]] = _data_node(names[key], c, full.get("prepare") or {}, rd,
                                                   [t for t, _ in collect], bool(vae))
                    nodes.append(datas[names[key]])
                datas[names[key]].cells.append(c.cell)
            elif key.kind == "pretrain":  # one job per method, seed and pretrain config, shared
                names[key] = f"_pretrain/{Path(pre.run_dir).name}"
                if names[key] not in pretrains:
                    n_tasks = stage_tasks(pre, gpus)
                    res = dataclasses.replace(train_res, gpus=n_tasks if gpus else 0)
                    h = _train_h(method, paper, pre, n_tasks) if cpu_est is None else cpu_est["pretrain_wall_h"]
                    wall = h / n_tasks if cpu_est is None else h
                    pretrains[names[key]] = StageNode(
                        key=names[key], stage="pretrain", kind="pretrain", cell=c, cells=[],
                        deps=[names[d] for d in deps], marker=(str(Path(pre.run_dir) / RunDir.STAGES), "pretrain"),
                        resources=res, tasks=n_tasks, gpu_h=h if res.gpus else 0.0, cpu_h=wall * res.cpus * n_tasks)
                    nodes.append(pretrains[names[key]])
                pretrains[names[key]].cells.append(c.cell)
            elif key.kind == "finetune":
                n_tasks = stage_tasks(fin, gpus)
                h = _train_h(method, paper, fin, n_tasks) if cpu_est is None else \
                    cpu_est["finetune_wall_h"] / max(1, len(full["tasks"]))  # CPU: wall-hours of the one process
                node(key, deps, "finetune", resources=dataclasses.replace(train_res, gpus=n_tasks if gpus else 0),
                     tasks=n_tasks, gpu_h=h if gpus else 0.0, cpu_h=h * train_res.cpus)
            elif key.kind == "eval":
                node(key, deps, "evaluate", cpu_partition=True, **_chunk_cost(key, full, ev, launcher, paper, cpu_est))
            else:  # row: gathers the chunks, writes the run row and DONE
                n = node(key, deps, "row", resources=Resources(gpus=0, cpus=1, mem_gb=4, time_h=0.5),
                         cpu_partition=True, cpu_h=0.05)
                n.marker = (str(rd.done), None)
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(nodes, key=lambda n: order[n.kind])  # stable: dependencies come first


def stage_table(nodes: list[StageNode], per_job: int) -> pd.DataFrame:
    """Per stage kind: jobs, how they are submitted, resources per job, estimated GPU-hours and
    CPU-core-hours."""
    rows = []
    for kind in KINDS:
        ns = [n for n in nodes if n.kind == kind]
        if not ns:
            continue
        groups = {(n.cell.cell, StageKey.parse(n.stage).task) for n in ns} if kind == "evaluate" else None
        rows.append({"stage": kind, "jobs": len(ns),
                     "submitted_as": f"{len(groups)} arrays" if groups else f"{len(ns)} jobs",
                     "tasks/job": max(n.tasks for n in ns), "gpus/job": max(n.resources.gpus for n in ns),
                     "cpus/job": max(n.resources.cpus for n in ns), "mem_gb/job": max(n.resources.mem_gb for n in ns),
                     "time_h/job": max(n.resources.time_h for n in ns),
                     "rollouts": sum(n.rollouts for n in ns),
                     "GPU_h": sum(n.gpu_h for n in ns), "CPU_h": sum(n.cpu_h for n in ns),
                     "partition": "rollout" if ns[0].cpu_partition else ("gpu" if ns[0].resources.gpus else "cpu")})
    df = pd.DataFrame(rows)
    if len(df):
        nan = float("nan")
        total = {"stage": "total", "jobs": int(df["jobs"].sum()), "submitted_as": "", "tasks/job": nan,
                 "gpus/job": nan, "cpus/job": nan, "mem_gb/job": nan, "time_h/job": nan,
                 "rollouts": int(df["rollouts"].sum()), "GPU_h": df["GPU_h"].sum(min_count=1),
                 "CPU_h": df["CPU_h"].sum(min_count=1), "partition": ""}
        df = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
    return df


def format_stage_table(nodes: list[StageNode], launcher: dict[str, Any]) -> str:
    per_job = int(launcher.get("rollouts_per_job") or 25)
    df = stage_table(nodes, per_job)
    shared = [n for n in nodes if n.kind == "pretrain"]
    lines = [f"stage jobs (launcher.stage_jobs=true; {per_job} rollouts per evaluation job; afterok dependencies):",
             df.to_string(index=False, float_format=lambda x: f"{x:.1f}", na_rep="-")]
    if shared:
        lines.append(f"pretraining: {len(shared)} job(s) shared by "
                     f"{sum(len(n.cells) for n in shared)} cell(s) (one per method, seed and pretrain config)")
    if any(n.resources.gpus == 0 and n.kind in ("pretrain", "finetune") for n in nodes):
        lines.append("training without GPUs: hours from uwmbench/configs/rates/cpu.yaml (the small presets measured on this "
                     "project's 2-core machine; '-' = no rate for that method/size); small-preset rollouts likewise")
    lines.append("GPU_h: GPUs x estimated hours (H100 bf16 anchors; '-' = no anchor for that method/size); CPU_h: "
                 "requested cores x estimated hours; rollout jobs: 0.15 s/env step/core plus the policy "
                 + ("on a GPU (H100 anchors)" if launcher.get("rollout_gpus") else
                    "on CPU (paper sizes, measured here, batch 1, 1 thread: "
                    + ", ".join(f"{k} {v:.1f} s" for k, v in POLICY_LATENCY_CPU_S.items())
                    + " per 16-action chunk; launcher.rollout_gpus=1 puts rollouts on GPUs)"))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- jobs
class StageJob(Job):
    """One stage node as a job: wait for the stages it needs (local launcher; SLURM's afterok
    has done that), then ``protocol.run_stage``."""

    what = "stage"

    def __init__(self, overrides: list[str], run_id: str, stage: str, rollouts_per_job: int,
                 waits: list[dict[str, Any]], store_root: str, sweep: str, threads: int | None = None,
                 slots: tuple[str, int] | None = None, poll_s: float = 2.0):
        super().__init__(threads, slots)
        self.overrides = list(overrides)
        self.run_id, self.stage, self.rollouts_per_job = run_id, stage, rollouts_per_job
        self.waits, self.store_root, self.sweep, self.poll_s = waits, store_root, sweep, poll_s

    name = property(lambda self: f"{self.run_id}/{self.stage}")

    def wait_for_inputs(self) -> None:
        said = False
        while True:
            missing = [w for w in self.waits if not _is_done(w["marker"])]
            if not missing:
                return
            subs = stage_submissions(self.store_root, self.sweep)
            for w in missing:
                sub = subs.get(w["key"])
                if sub is None or job_state(sub).split()[0] not in ACTIVE_STATES:
                    if _is_done(w["marker"]):  # finished between the two looks
                        continue
                    raise StageNotReady(f"stage {self.name}: the stage it needs, {w['key']}, ended "
                                        f"without finishing ({'never submitted' if sub is None else job_state(sub)})")
            if not said:
                log.info("stage %s: waiting for %s", self.name, [w["key"] for w in missing])
                said = True
            time.sleep(self.poll_s)

    def run(self) -> Any:
        from uwmbench.config import load_config
        return run_stage(load_config("run", self.overrides), self.stage, self.rollouts_per_job)


def stage_submissions(store_root: str | os.PathLike, sweep: str) -> dict[str, dict[str, Any]]:
    """stage node key -> its latest submission record."""
    from .launch import _submission_rows
    out: dict[str, dict[str, Any]] = {}
    for r in _submission_rows(store_root, sweep):
        if r.get("stage_key"):
            out[r["stage_key"]] = r
    return out


def _finished(n: StageNode, done_cells: set[str]) -> bool:
    """Its marker says so, or every cell that needs it is done in the results store (a cell
    finished by a one-job-per-cell launch, or a store restored elsewhere)."""
    return n.done() or bool(n.cells) and set(n.cells) <= done_cells


def plan_stages(nodes: list[StageNode], subs: dict[str, dict[str, Any]], check_jobs: bool = True,
                done_cells: set[str] = frozenset()) -> dict[str, str]:
    """node key -> done | active | launch:new | launch:failed | launch:cancelled."""
    out = {}
    for n in nodes:
        sub = subs.get(n.key)
        if _finished(n, set(done_cells)):
            out[n.key] = "done"
        elif check_jobs and sub and job_state(sub).split()[0] in ACTIVE_STATES:
            out[n.key] = "active"
        elif sub and sub.get("cancelled"):
            out[n.key] = "launch:cancelled"
        elif sub:
            out[n.key] = "launch:failed"
        else:
            out[n.key] = "launch:new"
    return out


def submit_graph(nodes: list[StageNode], launcher: dict[str, Any], store_root: str | os.PathLike,
                 runs_root: str | os.PathLike, sweep: str, threads: int | None = None,
                 subs: dict[str, dict[str, Any]] | None = None,
                 done_cells: set[str] = frozenset()) -> list[tuple[StageNode, str]]:
    """Submit the nodes that are not done and not in flight, dependencies first; returns
    [(node, job id)] at once. SLURM: each (cell, task)'s rollout chunks are one job array, every
    job depends (afterok) on the jobs of the stages it needs that are not done."""
    store_root, runs_root = Path(store_root).absolute(), Path(runs_root).absolute()
    subs = stage_submissions(store_root, sweep) if subs is None else subs
    plan = plan_stages(nodes, subs, done_cells=done_cells)
    by_key = {n.key: n for n in nodes}
    job_ids: dict[str, str] = {k: str(subs[k]["job_id"]) for k, a in plan.items() if a == "active"}
    slurm = launcher["name"] == "slurm"
    per_job = int(launcher.get("rollouts_per_job") or 25)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base_folder = Path(launcher.get("folder") or store_root / "submitit" / sweep) / f"stages-{stamp}"
    slots = None
    if not slurm and max_parallel_of(launcher) > 0:
        slots = (str(Path(launcher.get("folder") or store_root / "submitit") / "slots"), max_parallel_of(launcher))
    todo = [n for n in nodes if plan[n.key].startswith("launch")]
    # groups that go out together (one sbatch array): same kind, resources, dependencies and cell/task
    groups: dict[tuple, list[StageNode]] = {}
    for n in todo:
        gk = (n.kind, dataclasses.astuple(n.resources), n.tasks, tuple(n.deps),
              (n.cell.cell, StageKey.parse(n.stage).task) if n.kind == "evaluate" else n.key)
        groups.setdefault(gk, []).append(n)
    submitted: list[tuple[StageNode, str]] = []
    for i, ((kind, *_), group) in enumerate(groups.items()):
        n0 = group[0]
        dep_ids = sorted({job_ids[d] for d in n0.deps if d in job_ids})
        missing = [d for d in n0.deps if d not in job_ids and plan.get(d) != "done" and not by_key[d].done()]
        if missing:
            raise RuntimeError(f"stage {n0.key}: its inputs {missing} are neither done nor submitted (internal order)")
        lcfg = dict(launcher, gpus_per_node=n0.resources.gpus, cpus_per_task=n0.resources.cpus,
                    mem_gb=n0.resources.mem_gb, timeout_min=None if slurm else launcher.get("timeout_min"))
        if n0.cpu_partition and slurm:
            lcfg["partition"] = launcher.get("rollout_partition") or launcher.get("partition")
            lcfg["account"] = launcher.get("rollout_account") or launcher.get("account")
        folder = base_folder / f"{i:04d}-{kind}"
        ex = make_executor(lcfg, folder, n0.resources, job_name=f"uwm-{sweep}-{kind}")
        if slurm:
            extra = dict(lcfg.get("additional") or {})
            if dep_ids:
                ex.update_parameters(dependency="afterok:" + ":".join(dep_ids))
                extra.setdefault("kill_on_invalid_dep", "yes")
            if n0.tasks > 1:
                ex.update_parameters(ntasks_per_node=n0.tasks, nodes=1)
            if extra:
                ex.update_parameters(additional_parameters=extra)
        elif n0.tasks > 1:
            ex.update_parameters(tasks_per_node=n0.tasks)
        fns = [StageJob(n.cell.run_overrides(str(store_root), str(runs_root)), n.cell.run_id, n.stage, per_job,
                        waits=[by_key[d].wait_spec() for d in n.deps], store_root=str(store_root), sweep=sweep,
                        threads=threads, slots=slots if n.tasks == 1 else None) for n in group]
        with ex.batch():
            jobs = [ex.submit(fn) for fn in fns]
        now = time.time()
        _record(store_root, sweep, [{"stage_key": n.key, "cell": n.cell.cell, "stage": n.stage, "kind": n.kind,
                                     "run_id": n.cell.run_id, "job_id": str(j.job_id), "launcher": launcher["name"],
                                     "folder": str(folder), "time": now, "host": socket.gethostname(),
                                     "depends_on": dep_ids, "rollouts_per_job": per_job}
                                    for n, j in zip(group, jobs)])
        for n, j in zip(group, jobs):
            job_ids[n.key] = str(j.job_id)
            submitted.append((n, str(j.job_id)))
        log.info("submitted %d %s job(s)%s (folder %s)", len(jobs), kind,
                 f" after {','.join(dep_ids)}" if dep_ids else "", folder)
    return submitted


def status_table(nodes: list[StageNode], subs: dict[str, dict[str, Any]],
                 done_cells: set[str] = frozenset()) -> pd.DataFrame:
    rows = []
    for n in nodes:
        sub = subs.get(n.key)
        if _finished(n, set(done_cells)):
            st = "done"
        elif not sub:
            st = "not submitted"
        else:
            js = job_state(sub)
            st = "cancelled" if sub.get("cancelled") and js.split()[0] not in ACTIVE_STATES else js.lower()
        rows.append({"stage": n.key, "kind": n.kind, "state": st,
                     "job": f"{sub['launcher']}:{sub['job_id']}" if sub else "",
                     "after": ",".join(sub.get("depends_on") or []) if sub else ""})
    return pd.DataFrame(rows)


def cancel_stages(nodes: list[StageNode], subs: dict[str, dict[str, Any]], store_root: str, sweep: str,
                  cells: list[str] | None = None) -> int:
    """Stop the in-flight stage jobs (of ``cells``; a shared pretrain only when all its cells are
    named or none are); returns how many were cancelled."""
    n_cancelled = 0
    for n in nodes:
        if cells and not set(n.cells) <= set(cells):
            continue
        sub = subs.get(n.key)
        if not sub or n.done() or job_state(sub).split()[0] not in ACTIVE_STATES:
            continue
        what = cancel(sub)
        record_cancel(store_root, sub, sweep)
        n_cancelled += 1
        print(f"{n.key}: cancelled {sub['launcher']} job {sub['job_id']} ({what})")
    return n_cancelled


def check_stage_launcher(launcher: dict[str, Any]) -> None:
    if int(launcher.get("rollouts_per_job") or 25) < 1:
        raise ConfigError(f"launcher.rollouts_per_job={launcher.get('rollouts_per_job')} must be >= 1")
