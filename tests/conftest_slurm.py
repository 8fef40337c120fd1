"""Fixtures for the SLURM tests: a single-node SLURM on this machine (scripts/slurm_local.sh),
started once per session and stopped afterwards; when it cannot start (not root, no apt, no
Debian), the same tests run with the local launcher and say so."""
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_local.sh"


def _say(request, msg):
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"\n[uwmbench] {msg}")
    print(msg)
    _SUMMARY.append(msg)


_SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter):
    """Repeat which launcher the SLURM tests used in the run's summary (visible under -q)."""
    for msg in _SUMMARY:
        terminalreporter.write_line(f"[uwmbench] {msg}")


@pytest.fixture(scope="session")
def launcher_name(request):
    """'slurm' when a SLURM could be started here, else 'local'. The SLURM is this session's own
    instance (its own state folder and ports: scripts/slurm_local.sh), so test runs at once do
    not restart each other's daemons; UWMBENCH_SLURM_DIR=<folder> uses (or reuses, when it is up)
    the instance of that folder instead. SLURM_CONF points the client commands at it."""
    if os.environ.get("UWMBENCH_TEST_LAUNCHER") == "local":
        _say(request, "launcher tests: LOCAL launcher (UWMBENCH_TEST_LAUNCHER=local)")
        yield "local"
        return
    why = ""
    if os.geteuid() != 0:
        why = "not root"
    elif shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        why = "no apt-get and no slurmctld"
    else:
        own_dir = not os.environ.get("UWMBENCH_SLURM_DIR")
        state = os.environ.get("UWMBENCH_SLURM_DIR") or tempfile.mkdtemp(prefix="uwmbench-slurm-")
        env = {**os.environ, "UWMBENCH_SLURM_DIR": state}
        t0 = time.time()
        r = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=600, env=env)
        if r.returncode == 0:
            out = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
            reused = out.get("REUSED") == "1"
            old_conf = os.environ.get("SLURM_CONF")
            os.environ["SLURM_CONF"] = out["SLURM_CONF"]
            _say(request, f"launcher tests: SLURM launcher ({'reused the' if reused else 'started a'} single-node "
                          f"SLURM in {state} in {time.time() - t0:.0f} s)")
            try:
                yield "slurm"
            finally:
                if old_conf is None:
                    os.environ.pop("SLURM_CONF", None)
                else:
                    os.environ["SLURM_CONF"] = old_conf
                if not reused and not os.environ.get("UWMBENCH_KEEP_SLURM"):
                    subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120, env=env)
                    if own_dir:
                        shutil.rmtree(state, ignore_errors=True)
            return
        why = f"scripts/slurm_local.sh start failed: {r.stderr.strip()[-300:]}"
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120, env=env)
        if own_dir:
            shutil.rmtree(state, ignore_errors=True)
    _say(request, f"launcher tests: LOCAL launcher (SLURM could not start: {why})")
    yield "local"


def write_smoke_hdf5(path, episodes=3, length=30, size=32, seed=0):
    """A small LIBERO-layout HDF5: data/demo_i/{actions, obs/agentview_rgb, obs/eye_in_hand_rgb}."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        g = f.create_group("data")
        for i in range(episodes):
            d = g.create_group(f"demo_{i}")
            d.create_dataset("actions", data=rng.uniform(-1, 1, (length, 7)).astype(np.float32))
            for v in ("agentview_rgb", "eye_in_hand_rgb"):
                d.create_dataset(f"obs/{v}", data=rng.integers(0, 255, (length, size, size, 3), dtype=np.uint8))
            d.attrs["num_samples"] = length
        g.attrs["total"] = episodes * length
    return path


@pytest.fixture
def smoke_data(tmp_path):
    """data_root with libero_10/smoke.hdf5 (the smoke sweep's task)."""
    write_smoke_hdf5(tmp_path / "data" / "libero_10" / "smoke.hdf5")
    return tmp_path / "data"


@pytest.fixture
def wait_for():
    return wait_until


def wait_until(pred, timeout, what, poll=1.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
