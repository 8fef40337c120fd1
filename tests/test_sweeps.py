"""Sweep grids, dry-run job table, protocol run (resume / skip), CLI status (no launcher)."""
import json

import pytest

from uwmbench.sweeps import grids, sweep as sweep_cli
from uwmbench.store import ResultsStore

pytest_plugins = ["conftest_slurm"]


def test_main_dry_run_prints_paper_grid(capsys, tmp_path):
    # the dry run checks that the data files exist: LIBERO-90 for pretraining, LIBERO-10 per task
    (tmp_path / "libero_90").mkdir()
    (tmp_path / "libero_90" / "KITCHEN_SCENE1_demo.hdf5").touch()
    (tmp_path / "libero_10").mkdir()
    for t in ("book_caddy", "soup_cheese", "bowl_drawer", "moka_moka", "mug_mug"):
        (tmp_path / "libero_10" / f"{t}.hdf5").touch()
    assert sweep_cli.main(["main", "--dry-run", "--store", "/nonexistent-store", f"data_root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "12 cells" in out and "6000 evaluation rollouts" in out
    for m in ("uwm-s0", "dp-s2", "pad-s1", "gr1-s0"):
        assert m in out
    assert "GPU-hours" in out and "book_caddy" in out and "mug_mug" in out
    cells = grids.expand_sweep("main")
    uwm = next(c for c in cells if c.cell == "uwm-s0")
    # 100k x 36 x 4 GPUs / 118 samples/s = 33.9 GPU-h pretrain; 5 x 20k x 36 / 118 = 8.5 finetune
    assert uwm.estimate["pretrain_gpu_h"] == pytest.approx(100_000 * 144 / 118 / 3600)
    assert uwm.estimate["finetune_gpu_h"] == pytest.approx(5 * 20_000 * 36 / 118 / 3600)
    assert uwm.estimate["rollouts"] == 500


def test_launcher_group_syntax_selects_the_launcher(capsys, monkeypatch):
    """`uwmbench sweep main launcher=slurm` (the README's form) picks the SLURM launcher and does
    not reach the cells as a run key."""
    seen = {}
    real = grids.expand_sweep

    def spy(name, overrides=(), **kw):
        seen["overrides"] = list(overrides)
        return real(name, overrides, **kw)

    monkeypatch.setattr(grids, "expand_sweep", spy)
    assert sweep_cli.main(["main", "--dry-run", "--skip-data-check", "--store", "/nonexistent-store", "launcher=slurm",
                           "launcher.partition=gpu"]) == 0
    out = capsys.readouterr().out
    assert "launcher: slurm" in out and "partition=gpu" in out
    assert not any(o.startswith("launcher") for o in seen["overrides"])
    from uwmbench.config import ConfigError
    with pytest.raises(ConfigError, match="launcher chosen twice"):
        sweep_cli.main(["main", "--dry-run", "--launcher", "local", "launcher=slurm"])


def test_ablation_grids():
    reg = grids.expand_sweep("registers", estimate=False)
    assert {c.variant for c in reg} == {"reg0", "reg4", "reg8", "reg24", "xattn"} and len(reg) == 15
    assert all(c.method == "uwm" for c in reg)
    obj = grids.expand_sweep("objective", estimate=False)
    assert {c.variant for c in obj} == {"future", "current", "none"}
    co = grids.expand_sweep("cotrain", estimate=False)
    from uwmbench.methods import ACTION_FREE, get_method_class
    assert co and all(ACTION_FREE in get_method_class(c.method).capabilities for c in co)
    assert "dp" not in {c.method for c in co}  # DP cannot use action-free data
    dyn = grids.expand_sweep("dynamics", estimate=False)
    assert {c.method for c in dyn} == {"uwm"}
    smoke = grids.expand_sweep("smoke", estimate=False)
    assert len(smoke) == 4 and {c.cell for c in smoke} == {"bc-s0", "bc-s1", "dp-s0", "dp-s1"}
    with pytest.raises(Exception, match="unknown sweep"):
        grids.expand_sweep("nope")


def test_every_sweep_composes():
    for name in grids.sweep_names():
        for c in grids.expand_sweep(name, estimate=False)[:1]:
            cfg = grids.compose_cell(c)
            assert cfg.run_id == c.run_id


def test_protocol_run_resume_and_skip(tmp_path, smoke_data):
    from uwmbench.config import load_config
    from uwmbench.sweeps.protocol import run_protocol
    c = grids.expand_sweep("smoke", [f"data_root={smoke_data}"], estimate=False)[0]
    ov = c.run_overrides(str(tmp_path / "store"), str(tmp_path / "runs"))
    with pytest.raises(Exception, match="stopped at step"):  # interrupted mid-way (as a preemption would)
        run_protocol(load_config("run", ov + ["finetune.trainer.stop_after=2"]))
    st = ResultsStore(tmp_path / "store")
    assert st.run(c.run_id)["status"] == "running"
    row = run_protocol(load_config("run", ov))
    assert row["status"] == "done" and row["train_steps"] == 6 and "val_loss" in row
    run_dir = tmp_path / "runs" / c.run_id
    assert (run_dir / "DONE").is_file() and (run_dir / "config.yaml").is_file()
    rows = [l.split(",") for l in (run_dir / "finetune" / "smoke" / "metrics.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows if r[1]] == [1, 2, 3, 4, 5, 6]  # each training step once across the resume
    mtime = (run_dir / "DONE").stat().st_mtime
    row2 = run_protocol(load_config("run", ov))  # finished: nothing to do
    assert row2 == json.loads((run_dir / "DONE").read_text()) and (run_dir / "DONE").stat().st_mtime == mtime
    runs = st.runs()
    assert runs.iloc[0]["status"] == "done" and runs.iloc[0]["sweep"] == "smoke"


def test_status_without_launch(tmp_path, capsys):
    st = ResultsStore(tmp_path)
    st.set_run({"run_id": "smoke/bc-s0", "sweep": "smoke", "cell": "bc-s0", "status": "done", "train_steps": 6})
    st.set_run({"run_id": "smoke/dp-s1", "sweep": "smoke", "cell": "dp-s1", "status": "failed",
                "error": "Traceback ...\nRuntimeError: boom"})
    assert sweep_cli.main(["smoke", "--status", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "bc-s0" in out and "done" in out and "RuntimeError: boom" in out and "not run" in out
    cells = grids.expand_sweep("smoke", estimate=False)
    acts = dict((c.cell, a) for c, a in sweep_cli.plan(cells, st, {}, check_jobs=False))
    assert acts == {"bc-s0": "done", "bc-s1": "launch:new", "dp-s0": "launch:new", "dp-s1": "launch:failed"}


def test_status_sets_the_time_spent_beside_the_dry_runs_estimate(tmp_path, capsys):
    """`--status` of a reduced-scale sweep: finished cells' wall time (their rows) against the dry
    run's estimate for them, and what a cell still in flight has spent (its stages.json)."""
    cells = grids.expand_sweep("registers", ["scale=reduced"])
    est = {c.cell: c.estimate["wall_h"] for c in cells}
    done, running = cells[0], cells[1]
    assert est[done.cell] > 0
    st = ResultsStore(tmp_path / "store")
    st.set_run({"run_id": done.run_id, "sweep": "registers", "cell": done.cell, "status": "done",
                "wall_time_s": 2 * 3600 * est[done.cell]})
    rd = tmp_path / "runs" / "r1"
    rd.mkdir(parents=True)
    (rd / "stages.json").write_text(json.dumps({"elapsed_s": 1800.0}))
    st.set_run({"run_id": running.run_id, "sweep": "registers", "cell": running.cell, "status": "running",
                "run_dir": str(rd)})
    assert sweep_cli.main(["registers", "scale=reduced", "--status", "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "spent_h" in out and "est_h" in out
    assert f"1 finished cell(s) took {2 * est[done.cell]:.2f} h wall-clock" in out
    assert f"the dry run estimated {est[done.cell]:.2f} h for them (spent / estimated 2.00)" in out
    assert "1 unfinished cell(s) have spent 0.50 h so far" in out
    rest = sum(v for k, v in est.items() if k != done.cell)
    assert f"estimated {rest:.2f} h for the {len(cells) - 1} unfinished" in out
    assert sweep_cli.spent_s({"status": "running"}) is None


def test_a_run_killed_outright_keeps_its_time(tmp_path, smoke_data):
    """A local run writes its wall time so far into stages.json while it runs, so a SIGKILL (a
    session's end) loses at most one beat of it: the resumed run's row counts both attempts."""
    import os
    import signal
    import subprocess
    import sys
    import time
    c = grids.expand_sweep("smoke", [f"data_root={smoke_data}", "finetune.trainer.steps=400"], estimate=False)[0]
    ov = c.run_overrides(str(tmp_path / "store"), str(tmp_path / "runs"))
    stages = tmp_path / "runs" / c.run_id / "stages.json"
    env = {**os.environ, "UWMBENCH_ELAPSED_EVERY_S": "0.2"}
    p = subprocess.Popen([sys.executable, "-m", "uwmbench", "run", *ov], env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        t0, recorded = time.time(), 0.0
        while recorded < 1.0:
            assert p.poll() is None, f"the run ended before it was killed: {p.stderr.read()[-2000:]}"
            assert time.time() - t0 < 120, "stages.json never recorded 1 s of wall time"
            time.sleep(0.1)
            try:
                recorded = float(json.loads(stages.read_text()).get("elapsed_s") or 0.0)
            except (OSError, ValueError):
                pass
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    row = ResultsStore(tmp_path / "store").run(c.run_id)
    assert row["status"] == "running" and sweep_cli.spent_s(row) >= 1.0
    from uwmbench.config import load_config
    from uwmbench.sweeps.protocol import run_protocol
    row = run_protocol(load_config("run", ov))
    assert row["status"] == "done" and row["wall_time_s"] > recorded
