"""The fast physics path (uwmbench/benchmarks/libero/fast_physics.py) is robosuite's simulation to the last bit:
same states after every env step, same success flags, same camera frames; real LIBERO simulator."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.libero


def _actions(n: int, seed: int) -> np.ndarray:
    """Arm motions in every direction (also saturating the controller's input range) with the
    gripper closing and opening every few steps, so contacts and the gripper's ramp are exercised."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1.2, 1.2, size=(n, 7))
    a[:, -1] = np.where((np.arange(n) // 7) % 2 == 0, -1.0, 1.0)
    return a


def _run(task: str, engine: str, actions: np.ndarray, reset_mode: str, episodes: int):
    from uwmbench.benchmarks.libero.envs import make_env

    states, successes, frames = [], [], []
    with make_env(task, seed=0, render="lazy", replan_every=8, engine=engine, reset_mode=reset_mode) as env:
        assert env.engine == engine
        for ep in range(episodes):
            frames.append(env.reset(init_state=ep))
            for t, a in enumerate(actions):
                ok, done = env.step(a)
                states.append(env.sim_state())
                successes.append(ok)
                if (t + 1) % env.replan_every == 0:
                    frames.append(env.observation())
                if done:
                    break
        fast_steps = env._fast.steps if env._fast is not None else 0
        rs = env._rs
        leftovers = [name for obj in [rs, rs.sim, *[r.controller for r in rs.robots]]
                     for name in ("_pre_action", "forward", "step", "update") if name in obj.__dict__]
    return np.array(states), successes, frames, fast_steps, leftovers


@pytest.mark.parametrize("task,reset_mode", [("book_caddy", "scene"), ("bowl_drawer", "rebuild")])
def test_fast_physics_is_robosuites_simulation_bit_for_bit(task, reset_mode):
    """book_caddy has a fixture (the desk caddy); bowl_drawer an articulated cabinet, reset by rebuilding
    the simulator (new model, robots and controllers: the fast path must re-resolve them)."""
    pytest.importorskip("libero.libero")
    actions = _actions(48, seed=1)
    ref = _run(task, "robosuite", actions, reset_mode, episodes=2)
    new = _run(task, "fast", actions, reset_mode, episodes=2)
    assert ref[0].shape == new[0].shape and len(ref[0]) == 2 * len(actions)
    assert not np.array_equal(ref[0][0], ref[0][-1])  # the arm moved
    diff = np.flatnonzero((ref[0] != new[0]).any(axis=1))
    assert diff.size == 0, f"states differ from step {diff[0]} on (max |diff| {np.abs(ref[0] - new[0]).max()})"
    assert ref[1] == new[1]
    assert len(ref[2]) == len(new[2]) and all(np.array_equal(a, b) for a, b in zip(ref[2], new[2]))
    assert ref[3] == 0 and new[3] == 2 * len(actions) + 2 * 5  # every step fast, settle steps included
    assert new[4] == [], f"fast path left instance attributes behind: {new[4]}"


def test_fast_physics_refuses_what_it_cannot_reproduce():
    pytest.importorskip("libero.libero")
    import mujoco

    from uwmbench.benchmarks.libero.envs import make_env
    from uwmbench.benchmarks.libero.fast_physics import supported

    with pytest.raises(ValueError, match="engine='warp'"):
        make_env("book_caddy", engine="warp")
    with make_env("book_caddy", seed=0) as env:
        assert env._fast is not None and supported(env._rs) is None
        m = env._rs.sim.model._model
        m.opt.integrator = mujoco.mjtIntegrator.mjINT_RK4
        assert "RK4" in supported(env._rs)
        m.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
        robot = env._rs.robots[0]
        robot.controller.__class__ = type("OwnUpdate", (type(robot.controller),), {"update": lambda self, force=False: None})
        assert "own state update" in supported(env._rs)
