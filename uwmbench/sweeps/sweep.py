"""``uwmbench sweep <name>``: launch, preview or inspect a sweep (uwmbench/configs/sweep/<name>.yaml).

  uwmbench sweep main --dry-run                  job table: cells, resources, estimated GPU-hours
  uwmbench sweep smoke --launcher local data_root=/tmp/d
  uwmbench sweep main --launcher slurm launcher.partition=gpu launcher.account=me
  uwmbench sweep main --status                   per-cell state from the results store
  uwmbench sweep main --cancel [CELL[,CELL..]]   stop the cells' jobs (all unfinished ones by default)

With ``launcher.stage_jobs`` (SLURM's default) a cell is not one job but its stages: a shared
pretrain, finetune per task, rollout job arrays on CPUs, the run row, chained with afterok
dependencies (uwmbench.sweeps.stages); ``--dry-run`` prints the jobs, GPU-hours and CPU-hours per
stage, ``--status`` the state of every stage.

Overrides: ``launcher.<key>=value`` set uwmbench/configs/launcher/<name>.yaml keys; ``seeds=[..]`` and
``tasks=[..]`` replace the sweep's lists, ``methods=[..]`` its method axis; anything else is a ``run`` config override applied to
every cell. Launching returns at once; rerunning skips finished cells, leaves cells whose job
is still queued or running alone, and re-queues failed, cancelled (or vanished) ones.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from uwmbench.config import ConfigError
from uwmbench.sweeps import grids  # grids.expand_sweep looked up at call time (tests spy on it)
from uwmbench.sweeps import stages as stages_mod
from .grids import compose_cell, format_job_table, sweep_names
from .launch import (ACTIVE_STATES, cancel, is_active, job_state, launch_cells, load_launcher, max_parallel_of, record_cancel,
                     submissions)
from .protocol import _resolve, check_run
from uwmbench.run_dir import RunDir
from uwmbench.store import ResultsStore

log = logging.getLogger(__name__)


def check_cells(cells: list, store: str, runs_root: str, data: bool = True) -> None:
    """Compose and check every cell's run config before anything is launched: a bad key or
    value, an unknown task or (``data``) a missing data file fails the whole command at once,
    naming the cell, instead of failing inside each job."""
    seen: set = set()
    for c in cells:
        key = (tuple(c.overrides), tuple(c.tasks))
        if key in seen:
            continue
        seen.add(key)
        try:
            check_run(_resolve(compose_cell(c, store, runs_root)), data=data)
        except ConfigError as e:
            tip = "; --skip-data-check shows the plan without the data" if "no file matches" in str(e) else ""
            raise ConfigError(f"sweep {c.sweep}, cell {c.cell}: {e}{tip}") from None


def plan(cells: list, store, subs: dict[str, dict], check_jobs: bool = True) -> list[tuple[Any, str]]:
    """[(cell, action)] with action: done | active | launch:new | launch:failed | launch:cancelled |
    launch:stale."""
    states = store.cell_states(cells[0].sweep) if cells else {}
    out = []
    for c in cells:
        st = states.get(c.cell, {}).get("status")
        if st == "done":
            out.append((c, "done"))
        elif st == "failed":  # recorded just before the job exits with the error: re-queue it
            out.append((c, "launch:failed"))
        elif check_jobs and is_active(subs.get(c.cell)):
            out.append((c, "active"))
        elif (subs.get(c.cell) or {}).get("cancelled"):
            out.append((c, "launch:cancelled"))
        elif st == "running" or c.cell in subs:
            out.append((c, "launch:stale"))
        else:
            out.append((c, "launch:new"))
    return out


def spent_s(row: dict) -> float | None:
    """Wall seconds a cell's run has spent, every attempt summed: its row's ``wall_time_s`` once it
    finished or failed; while it runs (or after it was killed), the ``elapsed_s`` its run folder's
    stages.json holds (a local cell job rewrites it every minute; the stage jobs of a SLURM graph record
    their time as each stage ends); None when nothing was recorded."""
    wall = row.get("wall_time_s")
    if row.get("status") in ("done", "failed") and wall == wall and wall is not None:
        return float(wall)
    rd = row.get("run_dir")
    if rd:
        try:
            e = json.loads((Path(rd) / RunDir.STAGES).read_text()).get("elapsed_s")
        except (OSError, ValueError):
            e = None
        if e:
            return float(e)
    return float(wall) if wall == wall and wall is not None else None


def status_table(name: str, cells: list, store, subs: dict[str, dict]):
    """One row per cell: its state, its job, its training, and its time: ``spent_h`` (wall-clock, every
    attempt; :func:`spent_s`) beside ``est_h``, the dry run's estimate for the cell (when the cells
    carry estimates: :func:`grids.estimate_cells`)."""
    states = store.cell_states(name)
    rows = []
    for c in cells:
        r = states.get(c.cell, {})
        sub = subs.get(c.cell)
        st = r.get("status", "not run" if not sub else "submitted")
        if sub and sub.get("cancelled") and st != "done":
            st = "cancelled"
        err = (r.get("error") or "").strip().splitlines()
        rows.append({"cell": c.cell, "method": c.method, "variant": c.variant, "seed": c.seed, "status": st,
                     "job": f"{sub['launcher']}:{sub['job_id']}" if sub else "",
                     "job_state": job_state(sub) if (sub and st != "done") else "",
                     "train_steps": r.get("train_steps"), "final_loss": r.get("final_loss"),
                     "spent_h": _hours(spent_s(r), 3600), "est_h": _hours((c.estimate or {}).get("wall_h")),
                     "error": err[-1][:80] if err else ""})
    return pd.DataFrame(rows)


def _hours(x: float | None, per_hour: float = 1.0) -> float | None:
    return None if x is None or x != x else round(float(x) / per_hour, 2)


def time_summary(df: pd.DataFrame) -> str | None:
    """The status's time line: what the finished cells took against the dry run's estimate for them
    (the check that a campaign's plan holds), and what unfinished cells have spent so far; None when
    no time was recorded. Shared data stages (collection, the VAE) are in neither figure."""
    spent = pd.to_numeric(df["spent_h"], errors="coerce")
    if not spent.notna().any():
        return None
    est = pd.to_numeric(df["est_h"], errors="coerce")
    done = (df["status"] == "done") & spent.notna()
    parts = []
    if done.any():
        both = done & est.notna()
        line = f"{int(done.sum())} finished cell(s) took {spent[done].sum():.2f} h wall-clock"
        if both.any():
            s_, e_ = spent[both].sum(), est[both].sum()
            line += (f"; the dry run estimated {e_:.2f} h for " + ("them" if both.sum() == done.sum() else
                                                                   f"the {int(both.sum())} with a rate")
                     + (f" (spent / estimated {s_ / e_:.2f})" if e_ > 0 else ""))
        parts.append(line)
    rest = ~done & spent.notna()
    if rest.any():
        parts.append(f"{int(rest.sum())} unfinished cell(s) have spent {spent[rest].sum():.2f} h so far")
    todo = ~done & est.notna()
    if todo.any():
        parts.append(f"estimated {est[todo].sum():.2f} h for the {int(todo.sum())} unfinished")
    return f"time: {'; '.join(parts)}; {spent.sum():.2f} h spent in all"


def cancel_cells(name: str, cells: list, store, subs: dict[str, dict], store_root: str, which: str) -> int:
    """``--cancel [CELL,..]``: stop the jobs of unfinished cells for real (local: the workers and
    their children; SLURM: scancel) and record them as cancelled."""
    names = [w for w in which.split(",") if w]
    known = {c.cell for c in cells}
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"--cancel: unknown cell(s) {bad} of sweep {name!r}; cells: {sorted(known)}")
    states = store.cell_states(name)
    n = 0
    for c in cells:
        if names and c.cell not in names:
            continue
        sub = subs.get(c.cell)
        if states.get(c.cell, {}).get("status") == "done":
            print(f"{c.cell}: done, nothing to cancel")
            continue
        if not sub:
            print(f"{c.cell}: never submitted")
            continue
        state = job_state(sub)
        if state.split()[0] not in ACTIVE_STATES:
            print(f"{c.cell}: no job in flight ({sub['launcher']} job {sub['job_id']}: {state})")
            continue
        what = cancel(sub)
        record_cancel(store_root, sub, name)
        n += 1
        print(f"{c.cell}: cancelled {sub['launcher']} job {sub['job_id']} ({what})")
    print(f"sweep {name}: {n} cell(s) cancelled; a later `uwmbench sweep {name}` re-queues them")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uwmbench sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("name", nargs="?", help="sweep name (uwmbench/configs/sweep/<name>.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the job table and estimates; launch nothing")
    p.add_argument("--status", action="store_true", help="per-cell state from the results store")
    p.add_argument("--list", action="store_true", help="list the sweeps")
    p.add_argument("--cancel", nargs="?", const="", default=None, metavar="CELL[,CELL..]",
                   help="stop the jobs of these cells (default: every unfinished cell) and mark them cancelled")
    p.add_argument("--launcher", default=None, help="local | slurm (uwmbench/configs/launcher/; default local, or the scale's)")
    p.add_argument("--store", default=None, help="results store folder (default: results, or the scale's)")
    p.add_argument("--runs", default=None, help="run folders root (default: runs, or the scale's)")
    p.add_argument("--cell-fn", default=None, help="module:function run for each cell (default: the protocol)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per job")
    p.add_argument("--skip-data-check", action="store_true",
                   help="do not require the cells' data files to exist (e.g. to see a dry run's estimates before downloading)")
    p.add_argument("overrides", nargs="*")
    return p


def _split_overrides(a: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Settle the launcher, store and runs folders (command line, else the scale's, else the
    defaults) on ``a``; -> (launcher overrides, run overrides)."""
    # `launcher=slurm` (hydra's group syntax) selects the launcher like `--launcher slurm`; it is
    # not a key of the cells' run config (passed to them it made every job fail, or run locally)
    chosen = [o.split("=", 1)[1] for o in a.overrides if o.startswith("launcher=")]
    if len(set(chosen)) > 1 or (chosen and a.launcher is not None and chosen[-1] != a.launcher):
        raise ConfigError(f"launcher chosen twice: launcher={chosen} and --launcher {a.launcher}")
    if chosen:
        a.launcher = chosen[-1]
    scale_name = grids.scale_of(a.overrides)
    scale = grids.load_scale(scale_name) if scale_name else None
    a.launcher = a.launcher or (scale.launcher if scale else "local")
    a.store = a.store or (scale.store if scale and scale.store else "results")
    a.runs = a.runs or (scale.runs if scale and scale.runs else "runs")
    launcher_ov = [o for o in a.overrides if o.startswith("launcher.")]
    if scale and a.launcher == scale.launcher:  # the scale's launcher defaults, under the command line's
        given = {o.split("=", 1)[0] for o in launcher_ov}
        launcher_ov = [o for o in scale.launcher_overrides if o.split("=", 1)[0] not in given] + launcher_ov
    run_ov = [o for o in a.overrides if not o.startswith(("launcher.", "launcher="))]
    for o in run_ov:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form key=value")
    return launcher_ov, run_ov


@dataclass
class _Sweep:
    """One invocation's view of a sweep: its cells, the launcher, the store and what was submitted."""
    a: argparse.Namespace
    cells: list
    launcher: dict
    store: ResultsStore
    subs: dict          # per-cell submissions
    ssubs: dict         # stage-graph submissions
    fulls: Any          # the cells' full configs with shared pretraining folders (None when not needed)

    @property
    def stage_mode(self) -> bool:
        return bool(self.launcher.get("stage_jobs"))

    def graph(self):
        return stages_mod.build_graph(self.cells, self.a.store, self.a.runs, self.launcher, self.fulls)

    def done_cells(self) -> set:
        return {c for c, r in self.store.cell_states(self.a.name).items() if r.get("status") == "done"}


def main(argv: list[str]) -> int:
    a = _parser().parse_intermixed_args(argv)
    if a.list or not a.name:
        for n in sweep_names():
            print(n)
        return 0 if a.list else 2
    launcher_ov, run_ov = _split_overrides(a)
    cells = grids.expand_sweep(a.name, run_ov, estimate=False)
    launcher = load_launcher(a.launcher, launcher_ov)
    for c in cells:  # the GPUs a cell's jobs get under this launcher: one figure for both dry-run tables
        c.resources.gpus = stages_mod.cell_gpus(c, launcher)
    if a.dry_run or a.status:  # --status sets each cell's time spent beside the dry run's estimate
        grids.estimate_cells(cells)
    inspecting = a.status or a.cancel is not None
    if launcher.get("stage_jobs") and a.cell_fn and not (inspecting or a.dry_run):
        raise ConfigError("--cell-fn runs one function per cell: use launcher.stage_jobs=false with it")
    sw = _Sweep(a, cells, launcher, ResultsStore(a.store), submissions(a.store, a.name),
                stages_mod.stage_submissions(a.store, a.name), None)
    if sw.ssubs and inspecting:  # the graph as it was submitted
        last = max(sw.ssubs.values(), key=lambda r: r.get("time", 0))
        launcher["rollouts_per_job"] = last.get("rollouts_per_job", launcher.get("rollouts_per_job"))
    if a.dry_run or not inspecting or sw.ssubs:
        # cells that pretrain the same share one pretrain folder (pretrain.run_dir), in both modes
        sw.fulls = stages_mod.share_pretraining(cells, a.store, a.runs)
    if a.dry_run or not inspecting:
        check_cells(cells, a.store, a.runs, data=not a.skip_data_check)
    if a.dry_run:
        return _dry_run(sw)
    if a.cancel is not None:
        return _cancel(sw)
    if a.status:
        return _status(sw)
    return _launch_stages(sw) if sw.stage_mode else _launch_cells(sw)


def _dry_run(sw: _Sweep) -> int:
    a, cells = sw.a, sw.cells
    nodes = sw.graph()
    data_h = sum(n.cpu_h / max(1, n.resources.cpus) for n in nodes if n.kind == "data")
    par = max_parallel_of(sw.launcher) if a.launcher == "local" else None
    print(format_job_table(a.name, cells, data_h=data_h, parallel=par or None))
    print(stages_mod.format_stage_table(nodes, sw.launcher))
    todo = plan(cells, sw.store, sw.subs, check_jobs=False)
    n_done = sum(1 for _, act in todo if act == "done")
    how = (f"{len(nodes)} stage jobs chained with dependencies" if sw.stage_mode else
           f"{len(cells)} jobs, one per cell running its stages in order (launcher.stage_jobs=true: the stage jobs above)")
    print(f"launcher: {a.launcher} ({how}); store {a.store}: {n_done} of {len(cells)} cells done; "
          "dry run, nothing launched")
    if a.launcher == "slurm":
        print("slurm: " + ", ".join(f"{k}={v}" for k, v in sw.launcher.items() if v not in (None, [], {})))
    return 0


def _cancel(sw: _Sweep) -> int:
    a = sw.a
    if sw.ssubs:
        names = [w for w in a.cancel.split(",") if w]
        n = stages_mod.cancel_stages(sw.graph(), sw.ssubs, a.store, a.name, names or None)
        print(f"sweep {a.name}: {n} stage job(s) cancelled; a later `uwmbench sweep {a.name}` re-queues them")
        if not sw.subs:
            return 0
    return cancel_cells(a.name, sw.cells, sw.store, sw.subs, a.store, a.cancel)


def _status(sw: _Sweep) -> int:
    a = sw.a
    df = status_table(a.name, sw.cells, sw.store, sw.subs)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.to_string(index=False))
        if sw.ssubs:
            sdf = stages_mod.status_table(sw.graph(), sw.ssubs, done_cells=sw.done_cells())
            print(sdf.to_string(index=False))
            by = sdf.groupby(["kind", "state"]).size()
            print("stages: " + "; ".join(f"{k} {st}: {v}" for (k, st), v in by.items()))
    counts = df["status"].value_counts().to_dict()
    print(f"sweep {a.name}: " + ", ".join(f"{v} {k}" for k, v in counts.items()) +
          f"; {len(sw.store.rollout_records())} rollout rows in {a.store}")
    line = time_summary(df)
    if line:
        print(line)
    return 0


def _launch_stages(sw: _Sweep) -> int:
    a = sw.a
    nodes = sw.graph()
    done_cells = sw.done_cells()
    sp = stages_mod.plan_stages(nodes, sw.ssubs, done_cells=done_cells)
    done = sum(1 for v in sp.values() if v == "done")
    active = sum(1 for v in sp.values() if v == "active")
    sub = stages_mod.submit_graph(nodes, sw.launcher, a.store, a.runs, a.name, threads=a.threads, subs=sw.ssubs,
                                  done_cells=done_cells)
    if not sub:
        print(f"sweep {a.name}: nothing to launch ({len(nodes)} stages done or in flight)")
        return 0
    kinds = pd.Series([n.kind for n, _ in sub]).value_counts().to_dict()
    print(f"sweep {a.name}: submitted {len(sub)} stage job(s) on {a.launcher} ("
          + ", ".join(f"{v} {k}" for k, v in kinds.items()) + f"; {done} stages done, {active} in flight)")
    print(f"follow with: uwmbench sweep {a.name} --status --launcher {a.launcher} --store {a.store}")
    return 0


def _launch_cells(sw: _Sweep) -> int:
    a = sw.a
    todo = plan(sw.cells, sw.store, sw.subs)
    to_launch = [c for c, act in todo if act.startswith("launch")]
    for c, act in todo:
        log.info("%-28s %s", c.cell, act)
    if not to_launch:
        print(f"sweep {a.name}: nothing to launch ({len(sw.cells)} cells done or in flight)")
        return 0
    kw = {"cell_fn": a.cell_fn} if a.cell_fn else {}
    jobs = launch_cells(to_launch, sw.launcher, a.store, a.runs, threads=a.threads, **kw)
    print(f"sweep {a.name}: launched {len(jobs)} job(s) on {a.launcher} "
          f"({sum(1 for _, x in todo if x == 'done')} done, {sum(1 for _, x in todo if x == 'active')} in flight): "
          + ", ".join(f"{c.cell}={j.job_id}" for c, j in jobs))
    print(f"follow with: uwmbench sweep {a.name} --status --store {a.store}")
    return 0
