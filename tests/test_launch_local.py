"""Local launcher: the parallelism cap (launcher.max_parallel) and `uwmbench sweep --cancel`,
which stops a cell's worker for real (not only submitit's controller), also after the
controller was killed by hand. Tiny cells: a cell function that sleeps (no training)."""
import os
import signal
import subprocess
import sys
import time

import cloudpickle
import pytest

from uwmbench.sweeps import grids, launch, sweep as sweep_cli
from uwmbench.store import ResultsStore

pytest_plugins = ["conftest_slurm"]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # cell functions below travel by value
pytestmark = pytest.mark.timeout(300)


def interval_cell(cfg):
    """Record when the cell ran (after its slot was granted)."""
    t0 = time.time()
    time.sleep(0.5)
    out = os.path.join(os.environ["UWM_TEST_OUT"], f"{cfg.cell}.txt")
    with open(out, "w") as f:
        f.write(f"{t0} {time.time()}")
    return {"cell": cfg.cell}


def sleeper_cell(cfg):
    """A worker with a child process, both running until killed."""
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


def test_max_parallel_default_and_cap(tmp_path, monkeypatch):
    assert launch.max_parallel_of(launch.load_launcher("local")) == len(os.sched_getaffinity(0))
    assert launch.max_parallel_of({"max_parallel": 0}) == 0  # no cap
    monkeypatch.setenv("UWM_TEST_OUT", str(tmp_path))
    cells = grids.expand_sweep("smoke", ["data_root=/unused"], estimate=False)[:2]
    launcher = launch.load_launcher("local", ["launcher.max_parallel=1"])
    jobs = launch.launch_cells(cells, launcher, tmp_path / "store", tmp_path / "runs", cell_fn=interval_cell)
    for _, j in jobs:
        j.result()
    spans = sorted(tuple(map(float, (tmp_path / f"{c.cell}.txt").read_text().split())) for c in cells)
    assert len(spans) == 2
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end - 0.05, f"cells overlapped with max_parallel=1: {spans}"
    assert (tmp_path / "store" / "submitit" / "slots" / "slot-0.lock").is_file()


@pytest.fixture
def store_dir(tmp_path):
    """A store whose local jobs are all stopped at the end of the test, whatever happened."""
    yield tmp_path / "store"
    for sub in launch.submissions(tmp_path / "store", "smoke").values():
        launch.cancel(sub, grace_s=0)


def test_cancel_kills_the_worker_also_after_its_controller(tmp_path, store_dir, monkeypatch, capsys, wait_for):
    monkeypatch.setenv("UWM_TEST_OUT", str(tmp_path))
    cells = grids.expand_sweep("smoke", ["data_root=/unused"], estimate=False)[:2]
    launch.launch_cells(cells, launch.load_launcher("local"), store_dir, tmp_path / "runs", cell_fn=sleeper_cell)
    subs = launch.submissions(store_dir, "smoke")
    pids = {c.cell: wait_for(lambda c=c: (tmp_path / f"{c.cell}.pids").is_file()
                             and list(map(int, (tmp_path / f"{c.cell}.pids").read_text().split())),
                             120, f"{c.cell}'s worker") for c in cells}
    a, b = cells[0].cell, cells[1].cell
    # the case: the printed job id (submitit's controller) killed by hand; the worker lives on
    os.kill(int(subs[a]["job_id"]), signal.SIGKILL)
    time.sleep(0.5)
    assert all(_alive(p) for p in pids[a])
    assert launch.job_state(subs[a]) == "RUNNING"
    plan = dict((c.cell, act) for c, act in sweep_cli.plan(cells, ResultsStore(store_dir), subs))
    assert plan == {a: "active", b: "active"}  # a rerun must not start a second worker in its folder
    # --cancel one cell: its worker and the worker's child are gone; the other cell runs on
    t0 = time.time()
    assert sweep_cli.main(["smoke", "--cancel", a, "--store", str(store_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{a}: cancelled local job" in out
    assert not any(_alive(p) for p in pids[a]), "the cancelled worker (or its child) still runs"
    assert all(_alive(p) for p in pids[b])
    assert sweep_cli.main(["smoke", "--status", "--store", str(store_dir)]) == 0
    status = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.split()[:1] in ([a], [b])}
    assert "cancelled" in status[a] and "CANCELLED" in status[a] and "RUNNING" in status[b], status
    # --cancel with no cell: every unfinished cell (the controller of b is alive: both go)
    assert sweep_cli.main(["smoke", "--cancel", "--store", str(store_dir)]) == 0
    assert f"{b}: cancelled local job" in capsys.readouterr().out
    assert not any(_alive(p) for p in pids[b]) and not _alive(int(subs[b]["job_id"]))
    subs = launch.submissions(store_dir, "smoke")
    plan = dict((c.cell, act) for c, act in sweep_cli.plan(cells, ResultsStore(store_dir), subs))
    assert plan == {a: "launch:cancelled", b: "launch:cancelled"}
    print(f"cancel: workers stopped in {time.time() - t0:.1f} s")
