"""Launchers end to end: the smoke sweep through submitit on a real single-node SLURM (started
by the `launcher_name` fixture; the local launcher when SLURM cannot start - the output says
which). Smoke cells are tiny CPU training runs on a small HDF5 with evaluation disabled
(evaluate.n_rollouts=0): LIBERO rollouts are too heavy for a test."""
import glob
import sys
import time

import cloudpickle
import pytest

from uwmbench.sweeps import grids, launch, sweep as sweep_cli
from uwmbench.store import ResultsStore

pytest_plugins = ["conftest_slurm"]

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # cell functions below travel by value
pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]


def poisoned_cell(cfg):
    """The protocol, with one cell pointed at data that does not exist (it must fail)."""
    from uwmbench.sweeps.protocol import run_protocol
    if cfg.cell == "dp-s1":
        cfg.data_root = "/nonexistent/uwmbench-data"
    return run_protocol(cfg)


def release_requeued(job_id, timeout=120):
    """SLURM holds a requeued batch job for ~2 minutes (begin time); start it now instead."""
    import subprocess
    t0 = time.time()
    while time.time() - t0 < timeout:
        out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T %r"], capture_output=True, text=True).stdout
        if out.startswith("PENDING"):
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
            return out.strip()
        time.sleep(0.5)
    return None


def _settled(store, sweep, n):
    st = store.cell_states(sweep)
    return len(st) == n and all(r["status"] in ("done", "failed") for r in st.values()) and st


def test_smoke_sweep_failure_and_rerun(launcher_name, smoke_data, tmp_path, capsys, wait_for):
    store_dir, runs = tmp_path / "store", tmp_path / "runs"
    cells = grids.expand_sweep("smoke", [f"data_root={smoke_data}"], estimate=False)
    t0 = time.time()
    jobs = launch.launch_cells(cells, launch.load_launcher(launcher_name), store_dir, runs,
                               cell_fn=poisoned_cell, threads=1)
    assert time.time() - t0 < 30, "launch must return at once"
    store = ResultsStore(store_dir)
    states = wait_for(lambda: _settled(store, "smoke", 4), 600, "4 smoke cells to finish or fail", poll=2)
    assert sorted(c for c, r in states.items() if r["status"] == "done") == ["bc-s0", "bc-s1", "dp-s0"]
    err = states["dp-s1"]["error"]
    assert states["dp-s1"]["status"] == "failed" and "Traceback" in err and "nonexistent" in err
    failed_job = dict((c.cell, j) for c, j in jobs)["dp-s1"]
    with pytest.raises(Exception):
        failed_job.result()  # submitit has the traceback too
    runs_df = store.runs()
    assert len(runs_df) == 4 and (runs_df[runs_df.status == "done"]["train_steps"] == 6).all()
    assert runs_df[runs_df.status == "done"]["val_loss"].notna().all()
    assert sweep_cli.main(["smoke", "--status", "--store", str(store_dir)]) == 0
    out = capsys.readouterr().out
    assert "3 done" in out and "1 failed" in out
    print(f"[{launcher_name}] smoke sweep: 3 runs done, 1 failed with its traceback (no rollouts: evaluate.n_rollouts=0)")


def test_sweep_rerun_skips_done_and_requeues_failed(launcher_name, smoke_data, tmp_path, capsys, wait_for):
    store_dir, runs = tmp_path / "store", tmp_path / "runs"
    store = ResultsStore(store_dir)
    for cell in ("bc-s0", "bc-s1", "dp-s0"):
        store.set_run({"run_id": f"smoke/{cell}", "sweep": "smoke", "cell": cell, "status": "done", "train_steps": 6})
    store.set_run({"run_id": "smoke/dp-s1", "sweep": "smoke", "cell": "dp-s1", "status": "failed",
                   "error": "Traceback (most recent call last): ... RuntimeError: earlier failure"})
    args = ["smoke", "--launcher", launcher_name, "--store", str(store_dir), "--runs", str(runs), "--threads", "1",
            f"data_root={smoke_data}"]
    t0 = time.time()
    assert sweep_cli.main(args) == 0
    assert time.time() - t0 < 30, "launch must return at once"
    out = capsys.readouterr().out
    if launcher_name == "slurm":  # SLURM's default: the cell's stages as jobs (the done cells' stages are skipped)
        assert "submitted 2 stage job(s)" in out and "1 finetune" in out and "1 row" in out, out
    else:
        assert "launched 1 job(s)" in out and "dp-s1=" in out and "3 done" in out
    wait_for(lambda: store.cell_states("smoke")["dp-s1"]["status"] == "done", 600, "the re-queued cell", poll=2)
    runs_df = store.runs()
    assert len(runs_df) == 4 and set(runs_df["status"]) == {"done"}
    assert runs_df.set_index("cell").loc["dp-s1", "train_steps"] == 6
    assert sweep_cli.main(["smoke", "--status", "--store", str(store_dir)]) == 0
    assert "4 done" in capsys.readouterr().out
    assert sweep_cli.main(args) == 0
    assert "nothing to launch" in capsys.readouterr().out


def test_preempted_job_requeues_and_resumes(launcher_name, smoke_data, tmp_path, wait_for):
    store_dir, runs = tmp_path / "store", tmp_path / "runs"
    steps = 300  # long enough that the preemption (after the 2nd checkpoint) lands mid-training
    cell = grids.expand_sweep("smoke", [f"data_root={smoke_data}", f"finetune.trainer.steps={steps}",
                                        "finetune.trainer.ckpt_every=3"], estimate=False)[0]
    [(c, job)] = launch.launch_cells([cell], launch.load_launcher(launcher_name), store_dir, runs, threads=1)
    ft = runs / c.run_id / "finetune" / "smoke"
    wait_for(lambda: len(glob.glob(str(ft / "checkpoints" / "step_*"))) >= 2, 600, "two checkpoints", poll=0.5)
    launch.preempt(job, runs / c.run_id)
    t_pre = time.time()
    if launcher_name == "slurm":
        release_requeued(job.job_id)
    store = ResultsStore(store_dir)
    row = wait_for(lambda: (store.run(c.run_id) or {}).get("status") in ("done", "failed") and store.run(c.run_id),
                   600, "the preempted cell to finish", poll=1)
    assert row["status"] == "done", row.get("error")
    assert row["train_steps"] == steps
    rows = [l.split(",") for l in (ft / "metrics.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows if r[1]] == list(range(1, steps + 1))  # every step once: nothing lost or doubled
    logs = "".join(open(p).read() for p in glob.glob(str(store_dir / "submitit" / "smoke" / "*" / "*.err")))
    assert "requeueing" in logs and "resuming" in logs and "attempt 2" in logs, logs[-3000:]
    print(f"[{launcher_name}] preempted job requeued and finished {time.time() - t_pre:.0f} s later")


def test_optuna_two_parallel_workers_share_storage(launcher_name, smoke_data, tmp_path):
    import optuna
    from uwmbench.config import load_config
    from uwmbench.sweeps import tune
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = tune.resolve(load_config("tune", [
        f"launch_with={launcher_name}", "workers=2", "n_trials=2", f"storage={storage}", f"out={tmp_path / 'tune'}",
        "study=smoke-study", "report_every=2", "train.method.name=bc", "train.method.size=tiny",
        f"train.data.sources=[{{path:'{smoke_data}/libero_10/smoke.hdf5'}}]", "train.data.val_fraction=0.34",
        "train.trainer.steps=4", "train.trainer.batch_size=4", "train.trainer.device=cpu", "sampler=random"]))
    jobs = tune.launch_study(cfg)
    assert len(jobs) == 2
    results = [j.result() for j in jobs]
    assert sorted(r["n_trials"] for r in results) == [1, 1]
    study = optuna.load_study(study_name="smoke-study", storage=storage)
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 2, [t.state for t in study.trials]
    assert len({t.user_attrs["worker"] for t in done}) == 2  # two workers wrote to one storage
    assert all(t.intermediate_values for t in done)  # validation loss reported for pruning
    print(f"[{launcher_name}] optuna: 2 trials from 2 workers, best {study.best_value:.4f}")


def test_hydra_multirun_with_submitit_launcher(launcher_name, smoke_data, tmp_path):
    """`python -m uwmbench.sweeps.hydra_run -m hydra/launcher=submitit_<slurm|local>` runs a protocol run."""
    import subprocess
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    store_dir = tmp_path / "store"
    cmd = [sys.executable, "-m", "uwmbench.sweeps.hydra_run", "-m", f"hydra/launcher=submitit_{launcher_name}",
           f"hydra.sweep.dir={tmp_path / 'multirun'}", f"hydra.launcher.submitit_folder={tmp_path / 'hsub'}",
           "method=bc", "method.size=tiny", "seed=0", "tasks=[smoke]", f"data_root={smoke_data}",
           f"store={store_dir}", f"runs_root={tmp_path / 'runs'}", "pretrain.enabled=false", "evaluate.n_rollouts=0",
           "finetune.trainer.steps=3", "finetune.trainer.batch_size=4", "finetune.trainer.device=cpu",
           "finetune.trainer.progress=false", "finetune.trainer.warmup_steps=0", "data.latent_cache=false",
           "data.val_fraction=0.34"]
    if launcher_name == "slurm":
        cmd += ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=3", "hydra.launcher.timeout_min=20"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    runs = ResultsStore(store_dir).runs()
    assert len(runs) == 1 and runs.iloc[0]["status"] == "done" and runs.iloc[0]["run_id"] == "bc-s0"


def sleeper_cell(cfg):
    """A worker with a child process, both running until stopped."""
    import os
    import subprocess
    child = subprocess.Popen(["sleep", "300"])
    out = os.path.join(os.environ["UWM_TEST_OUT"], f"{cfg.cell}.pids")
    with open(out + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    os.replace(out + ".tmp", out)
    time.sleep(300)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_cancel_stops_the_job(launcher_name, tmp_path, monkeypatch, capsys, wait_for):
    """`uwmbench sweep NAME --cancel CELL` stops the cell's job for real (SLURM: scancel; the
    worker and its child are gone) and `--status` says cancelled."""
    monkeypatch.setenv("UWM_TEST_OUT", str(tmp_path))
    store_dir = tmp_path / "store"
    [cell] = grids.expand_sweep("smoke", ["data_root=/unused"], estimate=False)[:1]
    [(c, job)] = launch.launch_cells([cell], launch.load_launcher(launcher_name), store_dir, tmp_path / "runs",
                                     cell_fn=sleeper_cell)
    try:
        pids = wait_for(lambda: (tmp_path / f"{c.cell}.pids").is_file()
                        and list(map(int, (tmp_path / f"{c.cell}.pids").read_text().split())), 300, "the worker")
        t0 = time.time()
        assert sweep_cli.main(["smoke", "--cancel", c.cell, "--store", str(store_dir)]) == 0
        assert f"{c.cell}: cancelled {launcher_name} job" in capsys.readouterr().out
        wait_for(lambda: not any(_alive(p) for p in pids), 60, "the worker and its child to stop", poll=0.2)
        t_stop = time.time() - t0
        sub = launch.submissions(store_dir, "smoke")[c.cell]
        assert sub["cancelled"]
        wait_for(lambda: launch.job_state(sub).startswith("CANCELLED"), 120, "the scheduler to say CANCELLED")
        assert sweep_cli.main(["smoke", "--status", "--store", str(store_dir)]) == 0
        line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(c.cell))
        assert "cancelled" in line and "CANCELLED" in line, line
        print(f"[{launcher_name}] --cancel: worker gone {t_stop:.1f} s after the command")
    finally:
        for sub in launch.submissions(store_dir, "smoke").values():
            if launch.is_active(sub):
                launch.cancel(sub, grace_s=0)


def test_slurm_local_stop_with_a_daemon_down(launcher_name, tmp_path):
    """scripts/slurm_local.sh: an instance of its own (state folder, ports) beside the session's;
    `stop` stops the daemons that still run when the accounting database and slurmdbd are
    already down, and leaves the session's SLURM (and the shared munged) alone."""
    import os
    import shutil
    import subprocess
    from conftest_slurm import SCRIPT
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        pytest.skip("needs root and the SLURM packages (scripts/slurm_local.sh install)")
    state = tmp_path / "slurm"
    env = {**os.environ, "UWMBENCH_SLURM_DIR": str(state)}
    env.pop("SLURM_CONF", None)
    t0 = time.time()
    r = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=300, env=env)
    try:
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"SLURM_CONF={state}/slurm.conf" in r.stdout
        t_start = time.time() - t0
        pidfiles = {d: state / "run" / f"{d}.pid" for d in ("mariadb", "slurmdbd", "slurmctld", "slurmd")}
        pids = {d: int(p.read_text()) for d, p in pidfiles.items()}
        # a second start finds it healthy and restarts nothing
        r2 = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=300, env=env)
        assert r2.returncode == 0 and "REUSED=1" in r2.stdout
        assert {d: int(p.read_text()) for d, p in pidfiles.items()} == pids
        for d in ("slurmdbd", "mariadb"):  # the accounting database goes down
            os.kill(pids[d], 9)
        time.sleep(0.5)
    finally:
        t1 = time.time()
        r = subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "slurmdbd: not running" in r.stderr and "mariadbd: not running" in r.stderr, r.stderr
    assert not any(_alive(p) for p in pids.values()), r.stderr
    if launcher_name == "slurm":  # the session's instance is untouched
        assert subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0
        assert "munged: left running" in r.stderr
    print(f"own SLURM instance up in {t_start:.0f} s, stopped with two daemons down in {time.time() - t1:.1f} s")


def test_two_task_ddp_training_job_matches_one_process(launcher_name, tmp_path, wait_for):
    """A training run as ONE job with 2 tasks (CPU, gloo; submitit's distributed environment)
    and per-process batch 4 logs the loss curve of a 1-process run with batch 8 (the same
    samples each step, gradients averaged by DDP), and ends with the same weights, to float
    tolerance. The loss is deterministic (no crop, no jitter) so that only the data parallelism
    differs."""
    import csv

    import torch
    from safetensors.torch import load_file

    from libero_files import write_libero_hdf5
    from uwmbench.benchmarks.train import train
    from uwmbench.config import load_config
    data = write_libero_hdf5(tmp_path / "demos.hdf5", n_demos=3, length=24)

    def cfg(batch):
        return load_config("train", [
            "method=bc", "method.size=tiny", "method.resize=32", "method.image_size=32", "method.color_jitter=0",
            f"data.sources=[{{path:{data}}}]", "data.latent_cache=false", "trainer.steps=6",
            f"trainer.batch_size={batch}", "trainer.log_every=1", "trainer.ckpt_every=3", "trainer.val_every=0",
            "trainer.grad_clip=1.0", "trainer.progress=false", "trainer.device=cpu"])

    t0 = time.time()
    job = launch.submit_training(cfg(4), tmp_path / "ddp", launch.load_launcher(launcher_name), n_tasks=2,
                                 gpus_per_task=0, resources={"cpus": 1, "mem_gb": 2, "time_h": 0.25}, threads=1)
    torch.set_num_threads(1)
    train(cfg(8), tmp_path / "single")  # meanwhile: one process, the same global batch
    wait_for(job.done, 300, f"the 2-task training job {job.job_id} ({launcher_name})", poll=1)
    summaries = job.results()
    t_job = time.time() - t0
    assert len(summaries) == 2 and all(s["completed"] and s["steps"] == 6 for s in summaries)

    def curve(run):
        with open(run / "metrics.csv") as f:
            return [(int(r["step"]), float(r["loss"]), float(r["grad_norm"])) for r in csv.DictReader(f) if r.get("loss")]
    single, ddp = curve(tmp_path / "single"), curve(tmp_path / "ddp")
    assert [s for s, *_ in ddp] == [s for s, *_ in single] == list(range(1, 7))
    assert len({round(l, 6) for _, l, _ in single}) > 1  # the loss moves: the comparison means something
    for (s, l1, g1), (_, l2, g2) in zip(single, ddp):
        assert abs(l1 - l2) <= 1e-4 * abs(l1), (s, l1, l2)
        assert abs(g1 - g2) <= 1e-4 * abs(g1), (s, g1, g2)  # the global gradient, not one process' half
    wa = load_file(str(tmp_path / "single/checkpoints/step_00000006/model.safetensors"))
    wb = load_file(str(tmp_path / "ddp/checkpoints/step_00000006/model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wa)
    logs = "".join(open(p).read() for p in glob.glob(str(tmp_path / "ddp" / "submitit" / "*" / "*_log.err")))
    assert "rank 0/2: trained 6 steps" in logs and "rank 1/2: trained 6 steps" in logs, logs[-3000:]
    worst = max(abs(a[1] - b[1]) / abs(a[1]) for a, b in zip(single, ddp))
    print(f"[{launcher_name}] 2-task DDP job (gloo, batch 2 x 4) = 1 process (batch 8): 6 steps, worst loss "
          f"rel. diff {worst:.1e}, job {t_job:.0f} s")


def test_protocol_pretrain_as_distributed_job(launcher_name, smoke_data, tmp_path):
    """pretrain.gpus=2 pretrain.distributed=<launcher>: the protocol trains its pretrain stage as
    one 2-task DDP job (CPU, gloo), waits for it and finetunes from its checkpoint."""
    from uwmbench.config import load_config
    from uwmbench.sweeps.protocol import run_protocol
    src = smoke_data / "libero_10" / "smoke.hdf5"
    job = ["+pretrain.launcher.cpus_per_task=1", "+pretrain.launcher.mem_gb=2", "+pretrain.launcher.timeout_min=15"] \
        if launcher_name == "slurm" else ["+pretrain.launcher.timeout_min=15"]
    t0 = time.time()
    row = run_protocol(load_config("run", [
        "method=bc", "method.size=tiny", "tasks=[smoke]", f"data_root={smoke_data}", f"store={tmp_path / 'store'}",
        f"runs_root={tmp_path / 'runs'}", "evaluate.n_rollouts=0", "data.latent_cache=false", "data.val_fraction=0.34",
        f"pretrain.sources=[{{path:'{src}'}}]", "pretrain.gpus=2", f"pretrain.distributed={launcher_name}", *job,
        "pretrain.trainer.steps=3", "pretrain.trainer.batch_size=2", "pretrain.trainer.device=cpu",
        "pretrain.trainer.progress=false", "finetune.trainer.steps=2", "finetune.trainer.batch_size=4",
        "finetune.trainer.device=cpu", "finetune.trainer.progress=false", "finetune.trainer.warmup_steps=0"]))
    assert row["status"] == "done" and row["train_steps"] == 5
    pre = tmp_path / "runs" / "bc-s0" / "pretrain"
    logs = "".join(open(p).read() for p in glob.glob(str(pre / "submitit" / "*" / "*_log.err")))
    assert "rank 0/2: trained 3 steps" in logs and "rank 1/2: trained 3 steps" in logs, logs[-3000:]
    print(f"[{launcher_name}] protocol with a 2-task pretrain job: done in {time.time() - t0:.0f} s")


# ----------------------------------------------------------------------------- stage jobs
STAGE_TOY = ["methods=[bc]", "seeds=[0]", "tasks=[reach]", "launcher.stage_jobs=true", "method.size=tiny",
             "finetune.trainer.batch_size=4", "finetune.trainer.warmup_steps=0", "finetune.trainer.val_every=0",
             "finetune.trainer.progress=false", "finetune.trainer.device=cpu", "data.latent_cache=false",
             "data.val_fraction=0.34", "evaluate.runner=toy_runner:ReachRunner", "evaluate.conditions=[id]",
             "evaluate.workers=0", "evaluate.max_steps=30", "evaluate.diagnose_windows=0", "evaluate.device=cpu"]
SLURM_SMALL = ["launcher.cpus_per_task=1", "launcher.mem_gb=2", "launcher.rollout_cpus=1", "launcher.rollout_mem_gb=2",
               "launcher.rollout_time_h=0.25"]


def _stage_env(monkeypatch, tmp_path):
    """Stage jobs import the toy benchmark (tests/toy_runner.py) and read its data."""
    tests = str(__import__("pathlib").Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", tests + ":" + __import__("os").environ.get("PYTHONPATH", ""))
    from conftest_slurm import write_smoke_hdf5
    write_smoke_hdf5(tmp_path / "data" / "libero_10" / "reach.hdf5")
    return tmp_path / "data"


def _raw_rollout_keys(store_dir):
    """Every rollout row written to the store (before the last-written-wins read): key -> count."""
    from uwmbench.rows import read_jsonl, rollout_key
    counts = {}
    for p in glob.glob(str(store_dir / "rollouts" / "*.jsonl")):
        for r in read_jsonl(p):
            counts[rollout_key(r)] = counts.get(rollout_key(r), 0) + 1
    return counts


def test_stage_graph_with_dependencies_and_a_preempted_training_stage(launcher_name, tmp_path, monkeypatch,
                                                                      capsys, wait_for):
    """`uwmbench sweep ... launcher.stage_jobs=true`: pretrain -> finetune -> 2 rollout chunks (one
    array) -> row go out at once, each after the jobs it needs (SLURM: --dependency=afterok,
    --kill-on-invalid-dep=yes); the finetune job is preempted (USR2) mid-way, requeued and resumes
    from its checkpoint, and its dependents still run after it: every step trained once, every
    rollout written once."""
    from uwmbench.sweeps import stages as stages_mod
    data = _stage_env(monkeypatch, tmp_path)
    store_dir, runs = tmp_path / "store", tmp_path / "runs"
    src = data / "libero_10" / "reach.hdf5"
    steps = 300  # long enough that the preemption (after the 2nd checkpoint) lands mid-training
    args = ["smoke", "--launcher", launcher_name, "--store", str(store_dir), "--runs", str(runs), "--threads", "1",
            f"data_root={data}", *STAGE_TOY, "launcher.rollouts_per_job=2", "evaluate.n_rollouts=4",
            "pretrain.enabled=true", f"pretrain.sources=[{{path:'{src}'}}]", "pretrain.trainer.steps=3",
            "pretrain.trainer.batch_size=4", "pretrain.trainer.device=cpu", "pretrain.trainer.progress=false",
            "pretrain.trainer.warmup_steps=0", "pretrain.trainer.val_every=0", f"finetune.trainer.steps={steps}",
            "finetune.trainer.ckpt_every=3"] + (SLURM_SMALL if launcher_name == "slurm" else [])
    t0 = time.time()
    assert sweep_cli.main(args) == 0
    assert time.time() - t0 < 60, "submitting the graph must return at once"
    out = capsys.readouterr().out
    assert "submitted 5 stage job(s)" in out, out
    subs = stages_mod.stage_submissions(store_dir, "smoke")
    by_kind = {}
    for k, r in subs.items():
        by_kind.setdefault(r["kind"], []).append(r)
    pre_id = by_kind["pretrain"][0]["job_id"]
    fin = by_kind["finetune"][0]
    if launcher_name == "slurm":  # the dependencies are the scheduler's
        assert fin["depends_on"] == [pre_id]
        assert sorted({tuple(r["depends_on"]) for r in by_kind["evaluate"]}) == [(fin["job_id"],)]
        assert sorted(by_kind["row"][0]["depends_on"]) == sorted(r["job_id"] for r in by_kind["evaluate"])
        sh = "".join(open(p).read() for p in glob.glob(str(store_dir / "submitit" / "smoke" / "stages-*" / "*"
                                                            / "*submission*.sh")))
        assert f"--dependency=afterok:{pre_id}" in sh and "--kill-on-invalid-dep=yes" in sh, sh[-2000:]
        assert len({r["job_id"].split("_")[0] for r in by_kind["evaluate"]}) == 1  # one array
    ft = runs / "smoke" / "bc-s0" / "finetune" / "reach"
    wait_for(lambda: len(glob.glob(str(ft / "checkpoints" / "step_*"))) >= 2, 600, "two finetune checkpoints", poll=0.5)
    launch.preempt(fin)
    t_pre = time.time()
    if launcher_name == "slurm":
        release_requeued(fin["job_id"])
    store = ResultsStore(store_dir)
    row = wait_for(lambda: (store.run("smoke/bc-s0") or {}).get("status") == "done" and store.run("smoke/bc-s0"),
                   600, "the row stage after the preempted finetune", poll=1)
    assert row["train_steps"] == steps + 3 and row["stage_jobs"]
    rows = [l.split(",") for l in (ft / "metrics.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows if r[1]] == list(range(1, steps + 1))  # every step once
    counts = _raw_rollout_keys(store_dir)
    assert len(counts) == 4 and set(counts.values()) == {1}
    logs = "".join(open(p).read() for p in glob.glob(str(store_dir / "submitit" / "smoke" / "stages-*" / "*" / "*.err")))
    assert "preempted or timed out, requeueing" in logs and "attempt 2" in logs, logs[-3000:]
    assert sweep_cli.main(args) == 0 and "nothing to launch" in capsys.readouterr().out
    print(f"[{launcher_name}] stage graph (pretrain -> finetune -> 2 rollout chunks -> row) done; the preempted "
          f"finetune resumed, {time.time() - t_pre:.0f} s from preemption to the run row")


def test_cancelled_and_preempted_rollout_jobs_resume(launcher_name, tmp_path, monkeypatch, capsys, wait_for):
    """Two rollout jobs (3 rollouts each, ~3 s per rollout): one is cancelled (scancel) after its
    first rollout, the other preempted (USR2) after its first rollout. The preempted one is
    requeued and finishes; the cancelled one's dependent row job ends (SLURM cancels it: invalid
    dependency); the next `uwmbench sweep` re-queues the cancelled chunk and the row, the chunk
    skips the rollouts it wrote. The store then holds each of the 6 rollouts once."""
    from uwmbench.sweeps import stages as stages_mod
    data = _stage_env(monkeypatch, tmp_path)
    monkeypatch.setenv("TOY_REACH_CHUNK_S", "1.5")
    store_dir, runs = tmp_path / "store", tmp_path / "runs"
    args = ["smoke", "--launcher", launcher_name, "--store", str(store_dir), "--runs", str(runs), "--threads", "1",
            f"data_root={data}", *STAGE_TOY, "launcher.rollouts_per_job=3", "evaluate.n_rollouts=6",
            "finetune.trainer.steps=2", "finetune.trainer.ckpt_every=2", "launcher.max_parallel=4"] + \
        (SLURM_SMALL if launcher_name == "slurm" else [])
    if launcher_name == "slurm":
        args.remove("launcher.max_parallel=4")
    assert sweep_cli.main(args) == 0
    subs = stages_mod.stage_submissions(store_dir, "smoke")
    chunks = sorted((r for r in subs.values() if r["kind"] == "evaluate"), key=lambda r: r["stage"])
    assert [r["stage"] for r in chunks] == ["eval/reach/policy/id/0-2", "eval/reach/policy/id/3-5"]
    ev = runs / "smoke" / "bc-s0" / "eval" / "reach" / "policy" / "chunks"

    def written(name):
        p = ev / name / "rollouts.jsonl"
        return len(p.read_text().splitlines()) if p.is_file() else 0
    wait_for(lambda: written("id-0-2") >= 1 and written("id-3-5") >= 1, 600, "a rollout of each chunk", poll=0.3)
    launch.cancel(chunks[0])
    launch.record_cancel(store_dir, chunks[0], "smoke")
    launch.preempt(chunks[1])
    if launcher_name == "slurm":
        release_requeued(chunks[1]["job_id"])
    n_cancelled = written("id-0-2")
    assert n_cancelled < 3
    row_sub = next(r for r in subs.values() if r["kind"] == "row")
    wait_for(lambda: written("id-3-5") == 3 and launch.job_state(row_sub).split()[0] not in launch.ACTIVE_STATES,
             600, "the preempted chunk to finish and the row job to end", poll=1)
    store = ResultsStore(store_dir)
    assert (store.run("smoke/bc-s0") or {}).get("status") != "done"
    assert sweep_cli.main(["smoke", "--status", "--launcher", launcher_name, "--store", str(store_dir), "--runs",
                           str(runs), f"data_root={data}", *STAGE_TOY, "evaluate.n_rollouts=6"]) == 0
    status = capsys.readouterr().out
    assert "evaluate cancelled: 1" in status and "evaluate done: 1" in status, status
    assert sweep_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "submitted 2 stage job(s)" in out and "1 evaluate" in out and "1 row" in out, out
    wait_for(lambda: (store.run("smoke/bc-s0") or {}).get("status") == "done", 600, "the re-queued chunk and row", poll=1)
    counts = _raw_rollout_keys(store_dir)
    assert len(counts) == 6 and set(counts.values()) == {1}, counts  # nothing lost, nothing written twice
    assert sorted(store.rollouts()["episode"]) == list(range(6))
    logs = "".join(open(p).read() for p in glob.glob(str(store_dir / "submitit" / "smoke" / "stages-*" / "*" / "*.err")))
    assert "preempted or timed out, requeueing" in logs, logs[-3000:]
    print(f"[{launcher_name}] rollout jobs: cancelled after {n_cancelled} rollout(s) and re-queued, preempted and "
          "requeued; 6 rollouts, each written once")
