"""Evaluator: seeds, JSONL rows, summaries (no simulator) and a real 2-worker LIBERO run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dataclasses import replace

from uwmbench.benchmarks.evaluate import (
    ROLLOUTS_FILE, EvalOptions, append_jsonl, evaluate, read_jsonl, rollout_seed, summarize,
)
from uwmbench.benchmarks.evaluation.policy import policy_seed
from uwmbench.methods.base import (
    Method, MethodConfig, build_method, register_method, registered_methods, sample_noise,
)


@register_method
class _ConstantPolicy(Method):
    """A policy with no network: moves the arm slowly forward, gripper open. Records batches."""

    name = "test_constant_policy"
    config_class = MethodConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.batches = []

    def compute_loss(self, batch):
        raise NotImplementedError

    @torch.no_grad()
    def predict_action(self, obs):
        x = obs["obs"]
        assert x.dtype == torch.uint8 and x.shape[1:3] == (len(self.cfg.views), self.cfg.obs_frames)
        self.batches.append(tuple(x.shape))
        a = torch.zeros(x.shape[0], self.cfg.action_horizon, self.cfg.action_dim)
        a[..., 0] = 0.2
        a[..., -1] = -1
        return a


def _tiny_policy():
    if "bc" in registered_methods():
        return build_method("bc", size="tiny")
    return build_method("test_constant_policy")


def test_rollout_seeds_are_stable_and_distinct():
    s = rollout_seed(0, "libero_10/x", "id", 3)
    assert s == rollout_seed(0, "libero_10/x", "id", 3) and 0 <= s < 2 ** 31
    others = {rollout_seed(0, "libero_10/x", "ood", 3), rollout_seed(1, "libero_10/x", "id", 3),
              rollout_seed(0, "libero_10/y", "id", 3), rollout_seed(0, "libero_10/x", "id", 4)}
    assert s not in others and len(others) == 4


def test_jsonl_append_and_torn_last_line(tmp_path):
    p = tmp_path / ROLLOUTS_FILE
    append_jsonl(p, {"a": 1, "success": np.bool_(True), "steps": np.int64(3)})
    append_jsonl(p, {"a": 2, "success": False, "steps": 4})
    with open(p, "a") as f:
        f.write('{"a": 3, "succ')  # a crash mid-line
    rows = read_jsonl(p)
    assert [r["a"] for r in rows] == [1, 2] and rows[0]["success"] is True


def test_summarize():
    import pandas as pd

    df = pd.DataFrame({"method": ["m"] * 4, "task": ["t"] * 4, "condition": ["id", "id", "ood", "ood"],
                       "success": [True, False, True, True], "steps": [10, 20, 5, 5], "wall_time_s": [1.0] * 4})
    s = summarize(df).set_index("condition")
    assert s.loc["id", "success_rate"] == 0.5 and s.loc["ood", "success_rate"] == 1.0 and s.loc["id", "n"] == 2


def test_bad_arguments_fail_early():
    m = build_method("test_constant_policy")
    with pytest.raises(ValueError, match="conditions"):
        evaluate(m, ["book_caddy"], EvalOptions(conditions=["train"], n_rollouts=1))
    with pytest.raises(ValueError, match="replan_every=17"):
        evaluate(m, ["book_caddy"], EvalOptions(conditions=["id"], n_rollouts=1, replan_every=17))
    with pytest.raises(ValueError, match="obs_frames=3"):
        evaluate(m, ["book_caddy"], EvalOptions(conditions=["id"], n_rollouts=1, obs_frames=3))
    with pytest.raises(ValueError, match="engine='mujoco'"):
        evaluate(m, ["book_caddy"], EvalOptions(conditions=["id"], n_rollouts=1, engine="mujoco"))
    with pytest.raises(TypeError, match="EvalOptions"):                 # no keyword aliases: one schema
        evaluate(m, ["book_caddy"], {"conditions": ["id"]})


def test_batcher_waits_for_stepping_workers_only_while_cheaper_than_a_policy_call():
    from uwmbench.benchmarks.evaluation.pool import Batcher

    b = Batcher(2, smoothing=1.0)
    assert b.serve_now([], 0.0)                    # nobody stepping: serve
    assert not b.serve_now([1], 0.0)               # nothing measured yet: wait for the batch
    b.served([0, 1], started=0.0, now=0.01)        # a 10 ms policy call
    b.asked(0, 1.01)                               # worker 0's chunk took 1 s
    assert b.wait_s([1], 1.01) == pytest.approx(0.0) and b.serve_now([1], 1.01)  # 1 is due: overdue rule
    b.served([0], started=1.01, now=1.02)
    b.asked(1, 1.05)                               # worker 1 asks 30 ms after 0 was served (chunk: 1.04 s)
    # worker 0 needs ~1 s more: far longer than a 10 ms call -> serve worker 1 alone now
    assert b.wait_s([0], 1.05) == pytest.approx(1.01) and b.serve_now([0], 1.05)
    b.policy_s = 2.0                               # a slow policy (a big model on a CPU): batching pays
    assert not b.serve_now([0], 1.05)
    assert b.serve_now([0], 2.1)                   # worker 0 overdue: serve


def test_render_threads_give_each_worker_its_share_of_cores(monkeypatch):
    from uwmbench.benchmarks.evaluation.pool import render_threads

    for cores, workers, expected in [(2, 2, 0), (2, 1, 2), (8, 2, 4), (8, 8, 0), (3, 2, 0), (1, 4, 0)]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert render_threads(workers) == expected, (cores, workers)


def test_cli_requires_checkpoint_or_method():
    from uwmbench.cli import main

    assert main(["evaluate", "tasks=[book_caddy]"]) == 2
    assert main(["evaluate", "method=bc", "n_rolouts=3"]) == 2  # misspelt key
    assert main(["evaluate", "method=bc", "method.size=huge"]) == 2


def test_runner_interface_is_what_evaluate_uses(tmp_path):
    """evaluate() knows a benchmark only through its runner: a second benchmark without a simulator
    (tests/toy_runner.py, one module) runs serially and in a pool of spawned workers, its rows are
    RolloutRows, and a rerun resolves a rollout written twice the way the store and report do."""
    from toy_runner import ReachRunner

    from uwmbench.rows import ROLLOUT_COLUMNS, RolloutRow, append_jsonl, rollout_key

    m = build_method("test_constant_policy")               # a[0] = 0.2: x grows 0.02 per step
    opts = EvalOptions(conditions=["id"], n_rollouts=6, camera_size=8, max_steps=None)   # the toy's 30 steps
    kw = dict(runner=ReachRunner(), progress=False, run_meta={"run_id": "toy", "seed": 3})
    sunk = []
    df = evaluate(m, ["reach"], replace(opts, workers=0), out_dir=tmp_path / "serial", row_sink=sunk.append, **kw)
    assert df["success"].tolist() == [False] * 4 + [True] * 2        # x0 = 0.1 * episode, 30 steps
    assert df["steps"].tolist() == [30] * 5 + [25] and df["init_state_index"].tolist() == list(range(6))
    # replanning at t=0 and t=16; frames rendered only when the policy reads them (2 views per call)
    assert (df["n_policy_calls"] == 2).all() and (df["n_renders"] == 4).all()
    assert (df["task_key"] == "toy/reach").all() and (df["suite"] == "toy").all() and (df["seed"] == 3).all()
    assert df["rollout_seed"].tolist() == [rollout_seed(0, "toy/reach", "id", e) for e in range(6)]
    assert list(df.columns[:len(ROLLOUT_COLUMNS)]) == ROLLOUT_COLUMNS
    assert [RolloutRow.from_dict(r).to_dict() == r for r in sunk] == [True] * 6
    # the same rollouts in two spawned workers, policy calls batched in this process
    m.batches.clear()
    pooled = evaluate(m, ["reach"], replace(opts, workers=2), out_dir=tmp_path / "pool", **kw)
    cols = ["episode", "success", "steps", "n_policy_calls", "n_renders", "rollout_seed"]
    assert pooled[cols].equals(df[cols]) and sum(b[0] for b in m.batches) == 12
    with pytest.raises(ValueError, match="conditions"):                 # conditions are the runner's
        evaluate(m, ["reach"], replace(opts, conditions=["ood"]), **kw)
    # a rollout written twice (a re-evaluation): the rerun keeps the row written last, runs nothing
    first = read_jsonl(tmp_path / "serial" / ROLLOUTS_FILE)[0]
    append_jsonl(tmp_path / "serial" / ROLLOUTS_FILE, {**first, "success": True, "written_at": first["written_at"] + 1})
    m.batches.clear()
    again = evaluate(m, ["reach"], replace(opts, workers=0), out_dir=tmp_path / "serial", **kw)
    assert m.batches == [] and len(again) == 6 and bool(again.loc[0, "success"]) is True
    assert rollout_key(again.loc[0].to_dict()) == rollout_key(first)


@pytest.mark.libero
def test_two_rollouts_in_two_workers(tmp_path):
    pytest.importorskip("libero.libero")
    method = build_method("test_constant_policy")
    rows = []
    opts = EvalOptions(conditions=["id"], n_rollouts=2, seed=0, workers=2, max_steps=20)
    df = evaluate(method, ["book_caddy"], opts, out_dir=tmp_path, row_sink=rows.append,
                  run_meta={"run_id": "r1", "sweep": "s", "cell": "c", "variant": "v", "seed": 7})
    assert len(df) == 2 and len(rows) == 2
    assert sorted(df["episode"]) == [0, 1] and (df["steps"] == 20).all() and (~df["success"]).all()
    assert (df["seed"] == 7).all() and (df["run_id"] == "r1").all() and (df["method"] == "test_constant_policy").all()
    assert df["rollout_seed"].nunique() == 2 and (df["wall_time_s"] > 0).all()
    # chunks of 16 executed open loop: replanning at t=0 and t=16 -> 2 calls per rollout, 2 frames each;
    # requests of workers that are waiting at the same time share a batch (whether they do depends on
    # scheduling: with ~0.07 s scene resets a worker may finish before the other has built its env)
    assert (df["n_policy_calls"] == 2).all() and (df["n_renders"] == 2 * 2 * 2).all()
    assert sum(b[0] for b in method.batches) == 4 and max(b[0] for b in method.batches) <= 2
    lines = (tmp_path / ROLLOUTS_FILE).read_text().splitlines()
    assert len(lines) == 2
    on_disk = [json.loads(x) for x in lines]
    assert {r["episode"] for r in on_disk} == {0, 1}
    for col in ("run_id", "sweep", "cell", "method", "variant", "task", "condition", "seed", "episode",
                "rollout_seed", "success", "steps", "wall_time_s", "checkpoint"):
        assert col in on_disk[0], col
    # a rerun skips what is done
    method.batches.clear()
    again = evaluate(method, ["book_caddy"], opts, out_dir=tmp_path, run_meta={"run_id": "r1", "sweep": "s", "cell": "c", "variant": "v", "seed": 7})
    assert len(again) == 2 and method.batches == [] and len((tmp_path / ROLLOUTS_FILE).read_text().splitlines()) == 2


# ----------------------------------------------------------------------------- inverse-dynamics tracking
from uwmbench.methods.base import INVERSE_DYNAMICS, POLICY  # noqa: E402


@register_method
class _TrackingMethod(Method):
    """Declares inverse dynamics; records what ``infer_action`` receives, returns a still arm."""

    name = "test_tracking_invdyn"
    config_class = MethodConfig
    capabilities = frozenset({POLICY, INVERSE_DYNAMICS})

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls = []

    def compute_loss(self, batch):
        raise NotImplementedError

    def predict_action(self, obs):
        raise AssertionError("inverse_dynamics mode must call infer_action, not predict_action")

    @torch.no_grad()
    def infer_action(self, obs, next_obs):
        self.calls.append((obs["obs"].clone(), next_obs.clone()))
        a = torch.zeros(next_obs.shape[0], self.cfg.action_horizon, self.cfg.action_dim)
        a[..., -1] = -1
        return a


def _write_reference(path, frames: dict, states: np.ndarray, demos=("demo_0",), alignment="before_action"):
    """``alignment`` "before_action": frame j shows states[j]; "after_action" (LIBERO's official
    layout, written without the attribute): frame j is what env.step(actions[j]) returned."""
    import h5py

    with h5py.File(path, "w") as f:
        if alignment == "before_action":
            f.require_group("data").attrs["uwmbench_obs_alignment"] = alignment
        for d in demos:
            g = f.create_group(f"data/{d}")
            g.create_dataset("states", data=states)
            g.create_dataset("actions", data=np.zeros((len(states), 7)))
            for v, x in frames.items():
                g.create_dataset(f"obs/{v}", data=x)


def test_inverse_dynamics_refuses_methods_without_the_capability(tmp_path):
    m = build_method("test_constant_policy")
    with pytest.raises(ValueError, match="does not declare the 'inverse_dynamics' capability"):
        evaluate(m, ["book_caddy"], EvalOptions(conditions=["id"], n_rollouts=1, modes=["inverse_dynamics"],
                                                reference=str(tmp_path / "none.hdf5")), out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / ROLLOUTS_FILE).exists()
    with pytest.raises(ValueError, match="needs reference"):
        evaluate(build_method("test_tracking_invdyn"), ["book_caddy"],
                 EvalOptions(conditions=["id"], n_rollouts=1, modes=["inverse_dynamics"]))
    with pytest.raises(ValueError, match="modes="):
        evaluate(m, ["book_caddy"], EvalOptions(conditions=["id"], n_rollouts=1, modes=["tracking"]))


def test_reference_frames_indices_clamping_and_resize(tmp_path):
    from uwmbench.benchmarks.evaluate import DemoReference as _Reference
    from uwmbench.benchmarks.evaluate import reference_path as _reference_path

    rng = np.random.default_rng(0)
    views = ("agentview_rgb", "eye_in_hand_rgb")
    frames = {v: rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8) for v in views}
    p = tmp_path / "ref.hdf5"
    _write_reference(p, frames, np.arange(30, dtype=np.float64).reshape(10, 3))
    ref = _Reference(views, horizon=4, next_frames=2, camera_size=8)
    assert ref.indices(str(p), "demo_0", 0) == [4, 5] and ref.indices(str(p), "demo_0", 5) == [9, 9]
    x = ref.next_obs(str(p), "demo_0", 5)
    assert x.shape == (2, 2, 3, 8, 8) and x.dtype == np.uint8
    assert np.array_equal(x[1, 0], frames[views[1]][9].transpose(2, 0, 1)) and np.array_equal(x[0, 0], x[0, 1])
    assert np.array_equal(ref.start(str(p), "demo_0")[0].state, np.arange(3.0))
    # LIBERO's official layout: frame j is one step later, so the goal of env step t is frame t+Ha+k-1
    po = tmp_path / "official.hdf5"
    _write_reference(po, frames, np.arange(30, dtype=np.float64).reshape(10, 3), alignment="after_action")
    assert ref.indices(str(po), "demo_0", 0) == [3, 4] and ref.indices(str(po), "demo_0", 6) == [9, 9]
    with pytest.raises(ValueError, match="no data/demo_3"):
        ref.check_demo(str(p), "demo_3")
    big = _Reference(views, horizon=4, next_frames=2, camera_size=16).next_obs(str(p), "demo_0", 0)
    assert big.shape == (2, 2, 3, 16, 16) and big.dtype == np.uint8
    ref.close()
    assert _reference_path("d/{task}_{condition}.h5", "a", "id", 2, 2) == "d/a_id.h5"
    with pytest.raises(ValueError, match="several conditions"):
        _reference_path("d/x.h5", "a", "id", 1, 2)
    assert _reference_path({"ood": "o.h5", "id": "i.h5"}, "a", "ood", 2, 2) == "o.h5"


@pytest.mark.libero
def test_inverse_dynamics_tracks_reference_frames(tmp_path):
    pytest.importorskip("libero.libero")
    from uwmbench.benchmarks.libero.envs import LiberoEnv
    from uwmbench.benchmarks.libero.tasks import get_task

    # methods first: importing diffusers/triton after an EGL context exists in this process segfaults
    method = build_method("test_tracking_invdyn")
    views = ("agentview_rgb", "eye_in_hand_rgb")
    T = 25
    rng = np.random.default_rng(0)
    with LiberoEnv(get_task("book_caddy", "id"), render="every_step", obs_frames=1, replan_every=1, max_steps=T,
                   settle_steps=0) as env:  # a short "expert" demo: random small moves
        # the reset seed of the evaluator's episode 0: robosuite's hard reset draws scene details that
        # the sim state does not hold, so only the same seed renders demo frame 0 bit-identically
        env.reset(init_state=0, seed=rollout_seed(0, get_task("book_caddy", "id").key, "id", 0))
        states, frames = [env.sim_state()], {v: [env.render_obs()[v]] for v in views}
        for _ in range(T - 1):
            env.step(np.r_[rng.uniform(-0.3, 0.3, 6), -1.0])
            states.append(env.sim_state())
            for v, f in env.render_obs().items():
                frames[v].append(f)
    frames = {v: np.stack(x) for v, x in frames.items()}
    ref = tmp_path / "book_caddy.hdf5"
    _write_reference(ref, frames, np.stack(states))
    # the same recording in LIBERO's official alignment: stored frame j is the frame after action j
    ref_official = tmp_path / "book_caddy_official.hdf5"
    _write_reference(ref_official, {v: x[1:] for v, x in frames.items()}, np.stack(states)[:-1],
                     alignment="after_action")
    _check_tracking(method, ref, frames, T, tmp_path / "eval")
    method.calls.clear()
    _check_tracking(method, ref_official, frames, T, tmp_path / "eval_official")


def _check_tracking(method, ref, frames, T, out):
    views = ("agentview_rgb", "eye_in_hand_rgb")
    ha, tn = method.cfg.action_horizon, method.cfg.next_frames
    opts = EvalOptions(conditions=["id"], n_rollouts=1, seed=0, workers=0, max_steps=20, settle_steps=0,
                       modes=["inverse_dynamics"], reference=str(ref))
    df = evaluate(method, ["book_caddy"], opts, out_dir=out, progress=False)
    assert len(df) == 1 and df.loc[0, "mode"] == "inverse_dynamics" and df.loc[0, "steps"] == 20
    assert df.loc[0, "reference_demo"] == "demo_0" and df.loc[0, "n_policy_calls"] == 2
    assert len(method.calls) == 2  # replanning at t=0 and t=16
    for (obs, nxt), t in zip(method.calls, (0, 16)):
        assert nxt.dtype == torch.uint8 and tuple(nxt.shape) == (1, len(views), tn, 3, 128, 128)
        idx = [min(t + ha + k, T - 1) for k in range(tn)]   # t=16 -> clamped to the last frame
        for vi, v in enumerate(views):
            # the evaluator flips env frames (flip_vertical default) and the targets alike
            expect = frames[v][idx][:, ::-1].transpose(0, 3, 1, 2)
            assert np.array_equal(nxt[0, vi].numpy(), expect), (t, v)
    # episode 0 started from the demo's first state: the first observed frame is demo frame 0
    obs0 = method.calls[0][0][0, :, -1].numpy()
    for vi, v in enumerate(views):
        assert np.array_equal(obs0[vi], frames[v][0][::-1].transpose(2, 0, 1)), v
    rows = read_jsonl(out / ROLLOUTS_FILE)
    assert len(rows) == 1 and rows[0]["mode"] == "inverse_dynamics"


_ORPHAN_SCRIPT = """
import sys
import numpy as np
from toy_runner import ReachRunner
from uwmbench.benchmarks.evaluation.pool import run_pool
from uwmbench.benchmarks.evaluation.runner import RolloutJob, RunnerSettings

class Bar:
    def update(self, n):
        pass

r = ReachRunner()
info = r.task("reach", "id")
starts = r.starts(info, "id", range(4))
jobs = [RolloutJob(e, info, "reach", "id", e, e, starts[e], 30) for e in range(4)]
settings = RunnerSettings(views=("agentview",), obs_frames=1, replan_every=2, camera_size=4)
run_pool(r, jobs, settings, lambda obs, goal, seeds: np.zeros((len(obs), 16, 7), np.float32),
         lambda job, result: 1, Bar(), n_workers=2)
"""


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` and that are multiprocessing workers (Linux /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in cmd:
            out.append(int(d))
    return out


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds worker processes through /proc")
def test_pool_workers_exit_when_the_evaluating_process_is_killed(tmp_path):
    """A killed evaluation (SIGKILL: no cleanup runs) leaves no worker behind: each one notices its
    parent is gone while waiting for a job or an action chunk and exits, closing its environment.
    The kill comes once both workers have built their environment, so a worker still importing on a
    loaded machine does not count against the 15 s."""
    marks = tmp_path / "envs"
    marks.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "TOY_REACH_CHUNK_S": "0.3", "OMP_NUM_THREADS": "1", "TOY_REACH_ENV_MARKS": str(marks)}
    p = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT], env=env)
    try:
        deadline = time.time() + 120
        while len(workers := _children(p.pid)) < 2 or not {str(w) for w in workers} <= {m.name for m in marks.iterdir()}:
            assert p.poll() is None, f"the evaluating process exited early ({p.returncode})"
            assert time.time() < deadline, "the pool's two workers did not build their envs within 120 s"
            time.sleep(0.2)
        time.sleep(1.0)                      # both mid-episode: stepping or waiting for a chunk
        assert p.poll() is None
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.time() + 15
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        left = [w for w in workers if _alive(w)]
        for w in left:
            os.kill(w, signal.SIGKILL)
        assert not left, f"evaluation workers {left} outlived their killed parent by 15 s"
    finally:
        if p.poll() is None:
            p.kill()


@register_method
class _NoisyPolicy(Method):
    """A sampling policy with no network: x moves by 0.1 * (0.1 + noise), the noise drawn through
    ``sample_noise`` from the generators the evaluator passes (one per rollout)."""

    name = "test_noisy_policy"
    config_class = MethodConfig

    def compute_loss(self, batch):
        raise NotImplementedError

    @torch.no_grad()
    def predict_action(self, obs, generator=None):
        b = obs["obs"].shape[0]
        a = torch.zeros(b, self.cfg.action_horizon, self.cfg.action_dim)
        a[..., 0] = 0.1 + sample_noise((b, self.cfg.action_horizon), generator)
        a[..., -1] = -1
        return a


def test_sampled_rollouts_do_not_depend_on_batching_or_workers(tmp_path):
    """A stochastic policy's rollouts are the same run serially (batch 1) and in a pool of two
    workers (whose calls may be batched) with the episodes in another order: each element's noise
    comes from its own rollout seed and env step (policy_seed), not from torch's global RNG."""
    from toy_runner import ReachRunner

    m = build_method("test_noisy_policy")
    opts = EvalOptions(conditions=["id"], n_rollouts=8, camera_size=4, replan_every=4, max_steps=None)
    kw = dict(runner=ReachRunner(), progress=False)
    serial = evaluate(m, ["reach"], replace(opts, workers=0), out_dir=tmp_path / "serial", **kw)
    # the same episodes queued in reverse order: drawn from one global RNG in call order, each
    # episode would get other noise (whether or not the pool batches two workers' calls)
    pooled = evaluate(m, ["reach"], replace(opts, workers=2), out_dir=tmp_path / "pool", episodes=list(range(8))[::-1],
                      **kw)
    cols = ["episode", "rollout_seed", "success", "steps", "n_policy_calls"]
    assert pooled[cols].equals(serial[cols])
    assert serial["steps"].nunique() > 1                     # the noise does change the rollouts
    # whether the pool batches two workers' calls depends on scheduling, so it is not asserted here;
    # test_every_method_samples_each_batch_element_from_its_own_seed checks batches deterministically
    assert policy_seed(5, 0) == policy_seed(5, 0) and len({policy_seed(5, 0), policy_seed(5, 4),
                                                            policy_seed(6, 0)}) == 3


def test_sample_noise_per_element_generators():
    gens = lambda *s: [torch.Generator().manual_seed(x) for x in s]  # noqa: E731
    both = sample_noise((2, 3, 4), gens(1, 2))
    assert torch.equal(both[1], sample_noise((1, 3, 4), gens(2))[0])
    assert torch.equal(both[0], torch.randn((3, 4), generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(both[0], both[1])
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        sample_noise((3, 4), gens(1, 2))


@pytest.mark.parametrize("name", ["uwm", "dp", "pad", "gr1", "bc"])
def test_every_method_samples_each_batch_element_from_its_own_seed(name):
    """What a rollout's policy call returns does not depend on the other rollouts in its batch."""
    from uwmbench.benchmarks.evaluation.policy import BatchedPolicy

    torch.manual_seed(0)
    m = build_method(name, size="tiny")
    pol = BatchedPolicy(m, flip_vertical=False, device="cpu")
    assert pol.seeded["predict_action"]
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (3, len(pol.views), pol.obs_frames, 3, m.cfg.resize, m.cfg.resize), dtype=np.uint8)
    batch = pol(obs, None, [11, 22, 33])
    alone = pol(obs[1:2], None, [22])
    np.testing.assert_allclose(batch[1], alone[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pol(obs[1:2], None, [22]), alone)      # same seed, same chunk
    if name in ("uwm", "dp", "pad"):                                     # sampling methods
        assert np.abs(pol(obs[1:2], None, [23]) - alone).max() > 1e-3


def test_videos_selected_by_outcome_are_rerun_and_linked(tmp_path):
    """video_select="outcome": no video while the rollouts run; afterwards the first successes and
    failures of each (task, condition) are re-run with recording (the same rollouts: per-rollout
    seeds), and their rows, in the result and in rollouts.jsonl, link the video."""
    from toy_runner import ReachRunner

    m = build_method("test_noisy_policy")
    opts = EvalOptions(conditions=["id"], n_rollouts=8, camera_size=4, replan_every=4, max_steps=None, workers=0)
    kw = dict(runner=ReachRunner(), progress=False)
    plain = evaluate(m, ["reach"], opts, out_dir=tmp_path / "plain", **kw)
    ok = plain.loc[plain["success"], "episode"].tolist()
    fail = plain.loc[~plain["success"], "episode"].tolist()
    assert len(ok) >= 2 and len(fail) >= 2, plain                     # both outcomes to choose from
    sunk = []
    out = tmp_path / "outcome"
    by_outcome = replace(opts, videos=1, video_select="outcome")
    df = evaluate(m, ["reach"], replace(by_outcome, workers=2), out_dir=out, row_sink=sunk.append, **kw)   # <out>/videos
    cols = ["episode", "success", "steps"]
    assert df[cols].equals(plain[cols]) and df.attrs["video_mismatches"] == []
    linked = df[df["video"].astype(str).str.len() > 0]
    assert linked["episode"].tolist() == sorted([ok[0], fail[0]])      # the first of each outcome
    for _, r in linked.iterrows():
        assert Path(r["video"]).is_file() and Path(r["video"]).stem.endswith("_success" if r["success"] else "_fail")
    assert sorted(p.name for p in (out / "videos").iterdir()) == sorted(Path(v).name for v in linked["video"])
    # the jsonl's latest rows carry the videos (a resumed evaluate reads them back) and the sink got them
    again = evaluate(m, ["reach"], by_outcome, out_dir=out, video_dir=out / "videos", **kw)
    assert again[cols + ["video"]].equals(df[cols + ["video"]])
    assert len(sunk) == 8 + 2 and sorted(r["episode"] for r in sunk[8:]) == linked["episode"].tolist()
    # first (the default) records episodes 0..K-1 live
    first = evaluate(m, ["reach"], replace(opts, videos=2), out_dir=tmp_path / "first", video_dir=tmp_path / "fv",
                     **kw)
    assert (first["video"].astype(str).str.len() > 0).tolist() == [True, True] + [False] * 6
    every = evaluate(m, ["reach"], replace(opts, videos=-1, video_select="outcome"), out_dir=tmp_path / "every",
                     video_dir=tmp_path / "ev", **kw)   # all: recorded live, not twice
    assert (every["video"].astype(str).str.len() > 0).all()
    assert every.attrs["policy_calls"] == every["n_policy_calls"].sum()      # no second pass
    with pytest.raises(ValueError, match="video_select"):
        evaluate(m, ["reach"], replace(opts, video_select="best"), **kw)
