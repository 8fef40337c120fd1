"""Launchers: the cells of a sweep as submitit jobs, on SLURM (one job array) or locally.

``launch_cells(cells, launcher_cfg, store, runs_root)`` submits and returns at once. Each job
runs :class:`CellJob`, a ``submitit.helpers.Checkpointable``: on preemption or time-out
(SIGUSR2 from SLURM ``signal_delay_s`` before the limit, or ``scancel --signal USR2``) submitit
calls its ``checkpoint`` and requeues it; the requeued job runs the same protocol run, which
resumes from its checkpoint (finished stages and written rows are kept).

Submissions are recorded in ``<store>/submissions/<sweep>/<writer>.jsonl`` (cell, job id,
launcher, submitit folder) so that ``uwmbench sweep <name> --status`` can ask the scheduler about
cells that are not finished.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_CELL_FN = "uwmbench.sweeps.protocol:run_protocol"

try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover
    _Checkpointable = object  # type: ignore


def resolve_fn(spec: str):
    mod, _, fn = spec.partition(":")
    if not fn:
        raise ValueError(f"cell function {spec!r} must be 'module:function'")
    return getattr(importlib.import_module(mod), fn)


class CellJob(_Checkpointable):
    """One cell: compose the run config from ``overrides`` and call ``cell_fn`` on it."""

    def __init__(self, overrides: list[str], run_id: str, cell_fn: Any = DEFAULT_CELL_FN, config_name: str = "run",
                 threads: int | None = None):
        self.overrides = list(overrides)
        self.run_id = run_id
        self.cell_fn = cell_fn
        self.config_name = config_name
        self.threads = threads
        self.attempt = 0

    def __call__(self) -> dict:
        import logging as _logging
        _logging.basicConfig(level=os.environ.get("UWMBENCH_LOGLEVEL", "INFO"),
                             format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.attempt += 1
        if self.threads:
            import torch
            torch.set_num_threads(self.threads)
        from ..config import load_config
        log.info("cell %s: attempt %d (pid %d)", self.run_id, self.attempt, os.getpid())
        cfg = load_config(self.config_name, self.overrides)
        fn = resolve_fn(self.cell_fn) if isinstance(self.cell_fn, str) else self.cell_fn
        return fn(cfg)

    def checkpoint(self, *args: Any, **kwargs: Any):
        # The run's own checkpoints (trainer ckpt_every, stages.json, store rows) are what a
        # requeued job resumes from: requeue the same call.
        log.warning("cell %s: preempted or timed out, requeueing (attempt %d)", self.run_id, self.attempt)
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self, *args, **kwargs)


# ----------------------------------------------------------------------------- executors
def make_executor(launcher: dict[str, Any], folder: Path, resources: Any, job_name: str):
    import submitit
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
    from ..config import ConfigError
    raise ConfigError(f"launcher.name={name!r} is not 'local' or 'slurm' (configs/launcher/)")


def _record(store_root: Path, sweep: str, rows: list[dict[str, Any]]) -> None:
    d = Path(store_root) / "submissions" / sweep
    d.mkdir(parents=True, exist_ok=True)
    from .store import _writer_id
    with open(d / f"{_writer_id()}.jsonl", "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def submissions(store_root: str | os.PathLike, sweep: str) -> dict[str, dict[str, Any]]:
    """cell -> its latest submission record."""
    d = Path(store_root) / "submissions" / sweep
    out: dict[str, dict[str, Any]] = {}
    rows = []
    for p in sorted(d.glob("*.jsonl")) if d.is_dir() else []:
        for line in p.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    for r in sorted(rows, key=lambda r: r.get("time", 0)):
        out[r["cell"]] = r
    return out


def job_of(sub: dict[str, Any]):
    """The submitit job handle of a submission record."""
    import submitit
    if sub["launcher"] == "slurm":
        return submitit.SlurmJob(folder=sub["folder"], job_id=sub["job_id"])
    return submitit.LocalJob(folder=sub["folder"], job_id=sub["job_id"])


def job_state(sub: dict[str, Any]) -> str:
    """Scheduler state of a submission: PENDING/RUNNING/COMPLETED/FAILED/... or UNKNOWN."""
    if sub["launcher"] == "local":
        try:
            pid = int(sub["job_id"])
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) is finished
                if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    return "FINISHED"
            return "RUNNING"
        except (OSError, ValueError, IndexError):
            return "FINISHED"
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
    fns = [CellJob(c.run_overrides(str(store_root), str(runs_root)) + list(extra_overrides), c.run_id, cell_fn,
                   threads=threads) for c in cells]
    with ex.batch():
        jobs = [ex.submit(fn) for fn in fns]
    now = time.time()
    _record(store_root, sweep, [{"cell": c.cell, "run_id": c.run_id, "job_id": str(j.job_id),
                                 "launcher": launcher["name"], "folder": str(folder), "time": now}
                                for c, j in zip(cells, jobs)])
    log.info("submitted %d %s job(s) for sweep %s (folder %s)", len(jobs), launcher["name"], sweep, folder)
    return list(zip(cells, jobs))


def preempt(sub_or_job: Any, run_dir: str | os.PathLike | None = None) -> None:
    """Send the preemption signal (SIGUSR2) to a running cell job, as SLURM does before a
    preemption or time-out (testing and manual use)."""
    import signal
    import submitit
    job = job_of(sub_or_job) if isinstance(sub_or_job, dict) else sub_or_job
    if isinstance(job, submitit.SlurmJob):
        job._interrupt()  # scancel --signal SIGTERM, then USR2
        return
    # local: the job's Python process (recorded by the protocol in worker.json) handles USR2
    if run_dir is None:
        raise ValueError("local preemption needs the run folder (its worker.json holds the pid)")
    pid = json.loads((Path(run_dir) / "worker.json").read_text())["pid"]
    os.kill(int(pid), signal.SIGUSR2)
