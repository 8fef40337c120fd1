"""Run-folder leases (uwmbench/lease.py): one process per run folder; a second holder is refused
with the holder's name, a stale lease (dead pid on this host, old heartbeat) is taken over by
exactly one contender, the heartbeat refreshes the lease and notices a take-over, and
`uwmbench run` / `uwmbench train` refuse a leased folder."""
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from uwmbench.lease import LEASE_FILE, LeaseHeld, RunLease, read_lease

pytest_plugins = ["conftest_slurm"]

HOLDER = """
import sys, time
from uwmbench.lease import RunLease
lease = RunLease(sys.argv[1], "test holder", heartbeat_s=0.2, timeout_s=30).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """A separate process holding the lease of tmp_path/run (killed with SIGKILL at the end)."""
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    yield run, p
    if p.poll() is None:
        p.kill()
    p.wait()


def test_second_holder_refused_then_dead_holder_taken_over(holder):
    run, p = holder
    with pytest.raises(LeaseHeld, match=f"pid {p.pid} on host {socket.gethostname()} \\(test holder\\)") as e:
        RunLease(run, "second").acquire()
    assert e.value.holder["pid"] == p.pid and "in use" in str(e.value)
    p.send_signal(signal.SIGKILL)  # the holder dies without releasing
    p.wait()
    lease = RunLease(run, "second").acquire()
    try:
        assert "is gone" in lease.took_over
        assert read_lease(run)["pid"] == os.getpid() and read_lease(run)["token"] == lease.token
    finally:
        lease.release()
    assert not (run / LEASE_FILE).exists()


def _write_lease(run, **kw):
    run.mkdir(parents=True, exist_ok=True)
    info = {"host": "other-host", "pid": 1, "token": "x", "time": time.time(), "acquired": time.time(),
            "purpose": "uwmbench run", "job_id": None, **kw}
    (run / LEASE_FILE).write_text(json.dumps(info))


def test_other_host_lease_refused_while_fresh_taken_over_when_stale(tmp_path):
    run = tmp_path / "run"
    _write_lease(run)
    with pytest.raises(LeaseHeld, match="pid 1 on host other-host"):
        RunLease(run, timeout_s=60, heartbeat_s=5).acquire()
    _write_lease(run, time=time.time() - 61)
    with RunLease(run, timeout_s=60, heartbeat_s=5) as lease:
        assert "heartbeat is 61 s old" in lease.took_over
        assert read_lease(run)["host"] == socket.gethostname()
    # a lease that reached a scheduler job's wait is taken over once stale
    _write_lease(run, time=time.time() - 0.5)
    t0 = time.time()
    with RunLease(run, timeout_s=1.5, heartbeat_s=0.5, wait_s=5) as lease:
        assert 0.5 < time.time() - t0 < 4 and lease.took_over


def test_heartbeat_refreshes_and_notices_a_take_over(tmp_path):
    run = tmp_path / "run"
    lost = []
    lease = RunLease(run, heartbeat_s=0.1, timeout_s=5, on_lost=lost.append).acquire()
    t1 = read_lease(run)["time"]
    time.sleep(0.5)
    assert read_lease(run)["time"] > t1 and not lost
    _write_lease(run, token="someone-else")  # taken over (e.g. this process was paused past the timeout)
    for _ in range(50):
        if lost:
            break
        time.sleep(0.05)
    assert lost == [lease] and lease.lost
    lease.release()  # must not remove the new holder's lease
    assert read_lease(run)["token"] == "someone-else"


def _contend(run, barrier, results):
    barrier.wait()
    ok, _ = RunLease(run, timeout_s=60, heartbeat_s=5).try_acquire()
    results.put(ok)
    barrier.wait()  # hold (stay alive) until every contender has tried


def test_stale_lease_taken_over_by_exactly_one(tmp_path):
    run = tmp_path / "run"
    _write_lease(run, time=time.time() - 1000)
    ctx = mp.get_context("fork")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(run, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(60)
    assert sorted(got) == [False, False, False, True]


def test_run_and_train_refuse_a_leased_folder(holder, smoke_data, tmp_path, capsys):
    from uwmbench import cli
    run, p = holder
    rc = cli.main(["run", "method=bc", "method.size=tiny", "tasks=[smoke]", f"data_root={smoke_data}",
                   f"runs_root={run.parent}", f"run_id={run.name}", f"store={tmp_path / 'store'}",
                   "pretrain.enabled=false", "evaluate.n_rollouts=0"])
    err = capsys.readouterr().err
    assert rc == 2 and "is in use" in err and f"pid {p.pid}" in err, err
    assert not (run / "config.yaml").exists()  # nothing written into the leased folder
    rc = cli.main(["train", "--run-dir", str(run), "method=bc", "method.size=tiny",
                   f"data.sources=[{{path:'{smoke_data}/libero_10/smoke.hdf5'}}]"])
    err = capsys.readouterr().err
    assert rc == 2 and "is in use" in err and f"pid {p.pid}" in err, err


def test_folder_made_for_the_lease_alone_is_removed(tmp_path):
    """A command that fails on bad input after taking the lease leaves no empty run folder."""
    run = tmp_path / "a" / "run"
    with RunLease(run):
        assert (run / LEASE_FILE).is_file()
    assert not (tmp_path / "a").exists()
    with RunLease(run):
        (run / "metrics.csv").write_text("step\n")  # the folder was used: kept, without the lease
    assert (run / "metrics.csv").is_file() and not (run / LEASE_FILE).exists()
