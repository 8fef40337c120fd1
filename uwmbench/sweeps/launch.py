"""Launchers: the cells of a sweep as submitit jobs, on SLURM (one job array) or locally.

``launch_cells(cells, launcher_cfg, store, runs_root)`` submits and returns at once. Each job
runs :class:`CellJob`, a ``submitit.helpers.Checkpointable``: on preemption or time-out
(SIGUSR2 from SLURM ``signal_delay_s`` before the limit, or ``scancel --signal USR2``) submitit
calls its ``checkpoint`` and requeues it; the requeued job runs the same protocol run, which
resumes from its checkpoint (finished stages and written rows are kept).

Submissions are recorded in ``<store>/submissions/<sweep>/<writer>.jsonl`` (cell, job id,
launcher, submitit folder) so that ``uwmbench sweep <name> --status`` can ask the scheduler about
cells that are not finished; ``--cancel`` appends a ``cancelled`` record after :func:`cancel`
stopped the job (SLURM: scancel; local: the controller, the workers and their children).

Local jobs all start at once but run a cell only while holding one of ``launcher.max_parallel``
slots (``flock`` on ``<store>/submitit/slots/slot-<i>.lock``, or under ``launcher.folder``).
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import logging
import logging as _logging
import os
import random
import signal
import socket
import subprocess
import time
from importlib import resources as ires
from pathlib import Path
from typing import Any

import submitit
from omegaconf import OmegaConf
from submitit.helpers import DelayedSubmission

from uwmbench.config import ConfigError, load_config
from uwmbench.run_dir import RunDir
from uwmbench.lease import pid_alive
from uwmbench.schemas import LAUNCHER_SCHEMAS
from uwmbench.store import _writer_id

log = logging.getLogger(__name__)

DEFAULT_CELL_FN = "uwmbench.sweeps.protocol:run_protocol"

try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover
    _Checkpointable = object  # type: ignore


def load_launcher(name: str, overrides: list[str] = ()) -> dict[str, Any]:
    """``uwmbench/configs/launcher/<name>.yaml`` under its schema, with ``launcher.<key>=value`` overrides."""
    f = ires.files("uwmbench.configs").joinpath("launcher", f"{name}.yaml")
    if not f.is_file():
        raise ConfigError(f"unknown launcher {name!r} (no uwmbench/configs/launcher/{name}.yaml); use local or slurm")
    base = OmegaConf.create(f.read_text())
    schema = LAUNCHER_SCHEMAS.get(name)
    dot = [o.split(".", 1)[1] for o in overrides]
    for o in dot:
        k = o.split("=", 1)[0]
        if k.split(".")[0] not in base:
            raise ConfigError(f"launcher.{k}: unknown key for launcher {name!r}; valid: {sorted(base)}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema) if schema else {}, base, OmegaConf.from_dotlist(dot))
    except Exception as e:  # an ill-typed value, or a key the schema lacks
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"launcher {name!r} (uwmbench/configs/launcher/{name}.yaml + overrides): {msg}") from None
    cfg = OmegaConf.to_container(merged, resolve=True)
    cfg["name"] = name
    return cfg


def resolve_fn(spec: str):
    mod, _, fn = spec.partition(":")
    if not fn:
        raise ValueError(f"cell function {spec!r} must be 'module:function'")
    return getattr(importlib.import_module(mod), fn)


class Job(_Checkpointable):
    """A submitit job of uwmbench: the setup every job shares (logging, the inputs it waits for, a
    local ``max_parallel`` slot, torch threads, the attempt count), then :meth:`run`. A
    ``submitit.helpers.Checkpointable``: preempted or timed out (SIGUSR2), it is requeued as the
    same call, and what it runs resumes from its own checkpoints (trainer checkpoints,
    stages.json, written rollouts and rows)."""

    what = "job"

    def __init__(self, threads: int | None = None, slots: tuple[str, int] | None = None):
        self.threads = threads
        self.slots = slots  # (folder, n): run only while holding one of n slots (local max_parallel)
        self.attempt = 0

    @property
    def name(self) -> str:
        raise NotImplementedError

    def wait_for_inputs(self) -> None:
        """Block until the job's inputs exist (the local launcher's stand-in for SLURM's afterok)."""

    def run(self) -> Any:
        raise NotImplementedError

    def __call__(self) -> Any:
        _logging.basicConfig(level=os.environ.get("UWMBENCH_LOGLEVEL", "INFO"),
                             format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.wait_for_inputs()
        if getattr(self, "slots", None):
            hold_slot(*self.slots, what=f"{self.what} {self.name}")
        self.attempt += 1
        threads = self.threads or int(os.environ.get("SLURM_CPUS_PER_TASK") or 0)
        if threads:
            import torch
            torch.set_num_threads(threads)
        log.info("%s %s: attempt %d (pid %d)", self.what, self.name, self.attempt, os.getpid())
        return self.run()

    def checkpoint(self, *args: Any, **kwargs: Any):
        log.warning("%s %s: preempted or timed out, requeueing (attempt %d); it resumes from its checkpoints",
                    self.what, self.name, self.attempt)
        return DelayedSubmission(self, *args, **kwargs)


class CellJob(Job):
    """One cell: compose the run config from ``overrides`` and call ``cell_fn`` on it (the whole
    protocol run in one process)."""

    what = "cell"

    def __init__(self, overrides: list[str], run_id: str, cell_fn: Any = DEFAULT_CELL_FN, config_name: str = "run",
                 threads: int | None = None, slots: tuple[str, int] | None = None):
        super().__init__(threads, slots)
        self.overrides = list(overrides)
        self.run_id = run_id
        self.cell_fn = cell_fn
        self.config_name = config_name

    name = property(lambda self: self.run_id)

    def run(self) -> Any:
        cfg = load_config(self.config_name, self.overrides)
        fn = resolve_fn(self.cell_fn) if isinstance(self.cell_fn, str) else self.cell_fn
        return fn(cfg)


class TrainJob(Job):
    """A training run as one submitit job with N tasks (data parallel, one process per GPU):
    each task runs :func:`uwmbench.benchmarks.train.train_in_job`."""

    what = "training job"

    def __init__(self, train_cfg: Any, run_dir: str, threads: int | None = None):
        from uwmbench.config import to_container
        super().__init__(threads)
        self.train_cfg = to_container(train_cfg) if not isinstance(train_cfg, dict) else dict(train_cfg)
        self.run_dir = str(run_dir)

    name = property(lambda self: self.run_dir)

    def run(self) -> Any:
        from uwmbench.benchmarks.train import train_in_job
        return train_in_job(self.train_cfg, self.run_dir)


def training_resources(n_tasks: int, gpus_per_task: int, resources: Any = None):
    """The job's resources: ``resources`` (a :class:`~uwmbench.schemas.Resources` or dict; cpus are
    per task, mem_gb per job) or the defaults, with ``gpus`` = the GPUs of the whole job."""
    from uwmbench.schemas import Resources
    r = resources if isinstance(resources, Resources) else Resources(**(resources or {}))
    return Resources(gpus=n_tasks * gpus_per_task, cpus=r.cpus, mem_gb=r.mem_gb, time_h=r.time_h)


def submit_training(train_cfg: Any, run_dir: str | os.PathLike, launcher: dict[str, Any], n_tasks: int = 1,
                    gpus_per_task: int = 1, resources: Any = None, threads: int | None = None,
                    job_name: str = "uwm-train"):
    """Submit one training run (a composed ``train`` config) as ONE job with ``n_tasks`` tasks on
    one node, one process per GPU (``gpus_per_task=1``; 0: CPU processes over gloo), running
    data-parallel through submitit's distributed environment. ``trainer.batch_size`` is the
    per-process batch: the global batch is ``n_tasks x trainer.batch_size``. ``launcher``: a
    launcher config (:func:`load_launcher`); its cpus_per_task / mem_gb /
    timeout_min win over ``resources``. Returns the submitit job at once (``job.results()[0]``: rank
    0's training summary); its logs go to ``launcher.folder`` or ``<run_dir>/submitit``."""
    if n_tasks < 1:
        raise ValueError(f"n_tasks={n_tasks} must be >= 1")
    run_dir = Path(run_dir).absolute()
    folder = Path(launcher.get("folder") or run_dir / "submitit") / time.strftime("%Y%m%d-%H%M%S")
    res = training_resources(n_tasks, gpus_per_task, resources)
    ex = make_executor(launcher, folder, res, job_name=job_name)
    if launcher["name"] == "local":
        ex.update_parameters(tasks_per_node=n_tasks)
        if res.gpus:
            ex.update_parameters(gpus_per_node=res.gpus)
    else:
        ex.update_parameters(ntasks_per_node=n_tasks, nodes=1)
    job = ex.submit(TrainJob(train_cfg, str(run_dir), threads=threads))
    log.info("submitted training job %s (%s, %d task(s), %d GPU(s)) for %s", job.job_id, launcher["name"], n_tasks,
             res.gpus, run_dir)
    return job


# ----------------------------------------------------------------------------- local parallelism cap
_SLOT: Any = None  # the open slot file this process holds (released when the process exits)


def default_max_parallel() -> int:
    """The number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def max_parallel_of(launcher: dict[str, Any]) -> int:
    """``launcher.max_parallel``: null -> the cores this process may use; 0 -> no cap."""
    v = launcher.get("max_parallel")
    return default_max_parallel() if v is None else max(0, int(v))


def hold_slot(folder: str | os.PathLike, n: int, what: str = "job", poll_s: float = 0.5) -> int:
    """Block until this process holds one of ``n`` slots (``<folder>/slot-<i>.lock``, an exclusive
    ``flock``); returns its index. The slot is held until the process exits (the kernel drops the
    lock even when it is killed), so at most ``n`` holders run at once."""
    global _SLOT
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t0, said = time.time(), False
    while True:
        for i in random.sample(range(n), n):
            f = open(folder / f"slot-{i}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()} {what}\n")
            f.flush()
            _SLOT = f
            if said:
                log.info("%s: got slot %d of %d after %.0f s", what, i, n, time.time() - t0)
            return i
        if not said:
            log.info("%s: waiting for one of %d slots (launcher.max_parallel) in %s", what, n, folder)
            said = True
        time.sleep(poll_s * (0.5 + random.random()))


# ----------------------------------------------------------------------------- executors
def make_executor(launcher: dict[str, Any], folder: Path, resources: Any, job_name: str):
    name = launcher.get("name")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    max_requeues = int(launcher.get("max_requeues", 3))
    if name == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=max_requeues)
        ex.update_parameters(timeout_min=int(launcher.get("timeout_min") or int(resources.time_h * 60)),
                             gpus_per_node=int(launcher.get("gpus_per_node") or 0),
                             signal_delay_s=int(launcher.get("signal_delay_s", 30)))
        return ex
    if name == "slurm":
        from submitit.slurm.slurm import SlurmExecutor
        ex = SlurmExecutor(folder, max_num_timeout=max_requeues)
        gpus = launcher.get("gpus_per_node")
        gpus = resources.gpus if gpus is None else int(gpus)
        params: dict[str, Any] = {
            "job_name": job_name,
            "cpus_per_task": int(launcher.get("cpus_per_task") or resources.cpus),
            "mem": f"{int(launcher.get('mem_gb') or resources.mem_gb)}GB",
            "time": int(launcher.get("timeout_min") or max(1, round(resources.time_h * 60))),
            "array_parallelism": int(launcher.get("array_parallelism") or 64),
            "signal_delay_s": int(launcher.get("signal_delay_s", 120)),
            "stderr_to_stdout": False,
        }
        if gpus:
            params["gpus_per_node"] = gpus
        for k in ("partition", "account", "qos", "constraint"):
            if launcher.get(k):
                params[k] = launcher[k]
        if launcher.get("setup"):
            params["setup"] = list(launcher["setup"])
        if launcher.get("additional"):
            params["additional_parameters"] = dict(launcher["additional"])
        ex.update_parameters(**params)
        return ex
    raise ConfigError(f"launcher.name={name!r} is not 'local' or 'slurm' (uwmbench/configs/launcher/)")


def _record(store_root: Path, sweep: str, rows: list[dict[str, Any]]) -> None:
    d = Path(store_root) / "submissions" / sweep
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{_writer_id()}.jsonl", "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _submission_rows(store_root: str | os.PathLike, sweep: str) -> list[dict[str, Any]]:
    """Every submission record of ``sweep``, oldest first (a torn last line is skipped)."""
    d = Path(store_root) / "submissions" / sweep
    rows = []
    for p in sorted(d.glob("*.jsonl")) if d.is_dir() else []:
        for line in p.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return sorted(rows, key=lambda r: r.get("time", 0))


def submissions(store_root: str | os.PathLike, sweep: str) -> dict[str, dict[str, Any]]:
    """cell -> its latest submission record (one job per cell; stage jobs:
    :func:`uwmbench.sweeps.stages.stage_submissions`)."""
    return {r["cell"]: r for r in _submission_rows(store_root, sweep) if not r.get("stage_key")}


def job_of(sub: dict[str, Any]):
    """The submitit job handle of a submission record."""
    if sub["launcher"] == "slurm":
        return submitit.SlurmJob(folder=sub["folder"], job_id=sub["job_id"])
    return submitit.LocalJob(folder=sub["folder"], job_id=sub["job_id"])


def _proc_file(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:  # gone, or not ours to read
        return b""


def local_processes(sub: dict[str, Any]) -> tuple[int | None, list[int]]:
    """(controller, workers) of a local job, by pid: its submitit controller (``python -m
    submitit.local._local <folder>``, whose pid is the job id) if it runs, and every process that
    carries the job's worker environment (``SUBMITIT_LOCAL_JOB_ID`` = the job id, the submission
    folder in ``SUBMITIT_LOCAL_COMMAND``): the workers and their children, found also when the
    controller is gone. Zombies and unrelated processes that reuse a pid are not matched."""
    jid, folder = str(sub["job_id"]).encode(), str(sub["folder"]).encode()
    controller, workers = None, []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        pid = int(d)
        cmd = _proc_file(pid, "cmdline").split(b"\0")
        if not cmd or not cmd[0]:
            continue  # a zombie or a kernel thread
        if d.encode() == jid and b"submitit.local._local" in cmd and folder in cmd:
            controller = pid
            continue
        env = dict(e.split(b"=", 1) for e in _proc_file(pid, "environ").split(b"\0") if b"=" in e)
        if env.get(b"SUBMITIT_LOCAL_JOB_ID") == jid and folder in env.get(b"SUBMITIT_LOCAL_COMMAND", b""):
            workers.append(pid)
    return controller, workers


def cancel(sub: dict[str, Any], grace_s: float = 5.0) -> str:
    """Stop a submitted job for real. SLURM: ``scancel``. Local: SIGKILL its controller (so that it
    neither forwards signals nor requeues), SIGINT its workers and their children (a Python
    worker unwinds: the lease is released, the elapsed time kept), SIGKILL whatever is left after
    ``grace_s``. Returns what was done."""
    if sub["launcher"] == "slurm":
        r = subprocess.run(["scancel", str(sub["job_id"])], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"scancel {sub['job_id']} failed: {(r.stderr or r.stdout).strip()}")
        return f"scancel {sub['job_id']}"
    _check_host(sub)
    controller, workers = local_processes(sub)
    if controller:
        with contextlib.suppress(ProcessLookupError):
            os.kill(controller, signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    t0, killed, seen = time.time(), set(), set(workers)
    while True:
        seen.update(local_processes(sub)[1])
        left = [p for p in seen if pid_alive(p)]  # a process still exiting has no cmdline: check its state
        if not left:
            break
        if time.time() - t0 > grace_s:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            if time.time() - t0 > grace_s + 30:
                raise RuntimeError(f"local job {sub['job_id']}: processes {left} survive SIGKILL")
        time.sleep(0.1)
    what = ([f"controller {controller}"] if controller else []) + \
        ([f"{len(workers)} worker process(es) {workers}"] if workers else [])
    return ("stopped " + " and ".join(what) + (f" ({len(killed)} needed SIGKILL)" if killed else "")) if what \
        else "no process was running"


def _check_host(sub: dict[str, Any]) -> None:
    if sub.get("host") and sub["host"] != socket.gethostname():
        raise RuntimeError(f"local job {sub['job_id']} runs on host {sub['host']}, not here "
                           f"({socket.gethostname()}): cancel it there")


def record_cancel(store_root: str | os.PathLike, sub: dict[str, Any], sweep: str) -> None:
    """Mark a cell's latest submission as cancelled (``--status`` shows it; the next launch
    re-queues the cell)."""
    _record(Path(store_root), sweep, [{**sub, "cancelled": True, "time": time.time()}])


def job_state(sub: dict[str, Any]) -> str:
    """Scheduler state of a submission: PENDING/RUNNING/COMPLETED/FAILED/... or UNKNOWN."""
    if sub["launcher"] == "local":
        if sub.get("host") and sub["host"] != socket.gethostname():
            return f"UNKNOWN (a local job of host {sub['host']})"
        controller, workers = local_processes(sub)  # a worker outliving its controller still runs
        return "RUNNING" if controller or workers else ("CANCELLED" if sub.get("cancelled") else "FINISHED")
    try:
        return str(job_of(sub).state)
    except Exception as e:  # scheduler unreachable
        return f"UNKNOWN ({type(e).__name__})"


ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                 "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT")


def is_active(sub: dict[str, Any] | None) -> bool:
    if not sub:
        return False
    st = job_state(sub)
    return st.split()[0] in ACTIVE_STATES


def launch_cells(cells: list, launcher: dict[str, Any], store_root: str | os.PathLike, runs_root: str | os.PathLike,
                 cell_fn: Any = DEFAULT_CELL_FN, extra_overrides: list[str] | tuple[str, ...] = (),
                 threads: int | None = None) -> list[tuple[Any, Any]]:
    """Submit one job per cell (one array on SLURM); returns [(cell, job)] at once."""
    if not cells:
        return []
    sweep = cells[0].sweep
    store_root, runs_root = Path(store_root).absolute(), Path(runs_root).absolute()
    folder = Path(launcher.get("folder") or store_root / "submitit" / sweep) / time.strftime("%Y%m%d-%H%M%S")
    ex = make_executor(launcher, folder, cells[0].resources, job_name=f"uwm-{sweep}")
    slots = None
    if launcher["name"] == "local" and max_parallel_of(launcher) > 0:  # SLURM: array_parallelism
        slots = (str(Path(launcher.get("folder") or store_root / "submitit") / "slots"), max_parallel_of(launcher))
    fns = [CellJob(c.run_overrides(str(store_root), str(runs_root)) + list(extra_overrides), c.run_id, cell_fn,
                   threads=threads, slots=slots) for c in cells]
    with ex.batch():
        jobs = [ex.submit(fn) for fn in fns]
    now = time.time()
    _record(store_root, sweep, [{"cell": c.cell, "run_id": c.run_id, "job_id": str(j.job_id),
                                 "launcher": launcher["name"], "folder": str(folder), "time": now,
                                 "host": socket.gethostname()}  # a local job's pids mean something there only
                                for c, j in zip(cells, jobs)])
    log.info("submitted %d %s job(s) for sweep %s (folder %s)", len(jobs), launcher["name"], sweep, folder)
    return list(zip(cells, jobs))


def preempt(sub_or_job: Any, run_dir: str | os.PathLike | None = None) -> None:
    """Send the preemption signal (SIGUSR2) to a running cell job, as SLURM does before a
    preemption or time-out (testing and manual use)."""
    job = job_of(sub_or_job) if isinstance(sub_or_job, dict) else sub_or_job
    if isinstance(job, submitit.SlurmJob):
        # USR2 alone (scancel --signal USR2): submitit checkpoints and runs `scontrol requeue`.
        # submitit's preemption test sends SIGTERM first, from a second scancel: the two signals
        # can reach the job in either order, and a SIGTERM after the USR2 kills that scontrol, so
        # the job fails instead of being requeued (seen on this project's CI machine)
        job._interrupt(timeout=True)
        return
    if isinstance(sub_or_job, dict) and run_dir is None:  # a local job's worker processes, by its record
        workers = local_processes(sub_or_job)[1]
        if not workers:
            raise RuntimeError(f"local job {sub_or_job['job_id']}: no worker process to preempt")
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR2)
        return
    # local: the job's Python process (recorded by the protocol in worker.json) handles USR2
    if run_dir is None:
        raise ValueError("local preemption needs the run folder (its worker.json holds the pid)")
    pid = json.loads(RunDir(run_dir).worker.read_text())["pid"]
    os.kill(int(pid), signal.SIGUSR2)
