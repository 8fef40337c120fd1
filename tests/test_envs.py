"""LIBERO env wrapper: a paper task resets and steps; lazily rendered policy inputs are
bit-identical to fully rendered ones for the same init state and actions."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.libero

libero = pytest.importorskip("libero.libero")

from uwmbench.benchmarks.libero.envs import VIEW_CAMERAS, make_env  # noqa: E402
from uwmbench.benchmarks.libero.tasks import get_task  # noqa: E402

STEPS = 20
REPLAN = 8


def _rollout(env, actions):
    """Observation histories at every replanning point, plus the final sim state."""
    obs = [env.reset(init_state=0)]
    i = 0
    while not env.done:
        env.execute_chunk(actions[i:i + 16])
        i += env.replan_every
        if not env.done:
            obs.append(env.observation())
    return np.stack(obs), env.sim_state(), env.n_renders


@pytest.fixture(scope="module")
def envs():
    spec = get_task("book_caddy")
    full = make_env(spec, seed=0, render="every_step", max_steps=STEPS, replan_every=REPLAN, obs_frames=2)
    lazy = make_env(spec, seed=0, render="lazy", max_steps=STEPS, replan_every=REPLAN, obs_frames=2)
    yield full, lazy
    full.close()
    lazy.close()


def test_paper_task_resets_and_steps(envs):
    _, env = envs
    obs = env.reset(init_state=1)
    assert obs.shape == (2, 2, 3, 128, 128) and obs.dtype == np.uint8
    assert obs.std() > 5, "blank frames: rendering did not happen"
    state0 = env.sim_state()
    success, done = env.step(np.array([0.5, 0, 0, 0, 0, 0, -1.0]))
    assert env.t == 1 and not success and not done
    assert not np.allclose(env.sim_state(), state0), "a step did not move the simulation"
    frames = env.render_obs()
    assert set(frames) == set(VIEW_CAMERAS) and all(f.shape == (128, 128, 3) and f.dtype == np.uint8
                                                    for f in frames.values())
    r = env.execute_chunk(np.zeros((16, 7)))
    assert r.steps == REPLAN and env.t == 1 + REPLAN
    with pytest.raises(ValueError, match="action"):
        env.step(np.zeros(6))
    # same init state -> same start (the shipped init states are used)
    again = env.reset(init_state=1)
    assert np.array_equal(again, obs)


def test_lazy_rendering_matches_full_rendering(envs):
    full, lazy = envs
    actions = np.random.default_rng(0).uniform(-0.6, 0.6, size=(STEPS + 16, 7))
    obs_f, state_f, renders_f = _rollout(full, actions)
    obs_l, state_l, renders_l = _rollout(lazy, actions)
    assert obs_f.shape == obs_l.shape == (3, 2, 2, 3, 128, 128)  # replanning at t = 0, 8, 16
    assert np.array_equal(obs_f, obs_l), f"max pixel difference {np.abs(obs_f.astype(int) - obs_l).max()}"
    assert np.array_equal(state_f, state_l)
    assert not np.array_equal(obs_l[0], obs_l[1]), "the scene did not change between replanning points"
    # full: 1 frame after loading the init state + 5 settle + 20 steps; lazy: 2 frames per replanning point
    assert renders_f == 2 * (1 + 5 + STEPS) and renders_l == 2 * 2 * 3


def test_bad_arguments_name_the_value():
    spec = get_task("book_caddy")
    with pytest.raises(ValueError, match="render='sometimes'"):
        make_env(spec, render="sometimes")
    with pytest.raises(ValueError, match="unknown view"):
        make_env(spec, views=("frontview_rgb",))


def test_lazy_schedule_renders_only_frames_the_policy_reads():
    from types import SimpleNamespace

    from uwmbench.benchmarks.libero.envs import LiberoEnv

    def needed(max_steps, k, to, lo=-5):
        env = SimpleNamespace(render_mode="lazy", record_video=False, max_steps=max_steps, replan_every=k,
                              obs_frames=to)
        return [t for t in range(lo, max_steps + 1) if LiberoEnv.frame_needed(env, t)]

    assert needed(40, 16, 2) == [-1, 0, 15, 16, 31, 32]          # no replanning at t = 40 = max_steps
    assert needed(20, 8, 3) == [-2, -1, 0, 6, 7, 8, 14, 15, 16]
    assert needed(6, 1, 2) == [-1, 0, 1, 2, 3, 4, 5]             # replanning every step: every frame
    full = SimpleNamespace(render_mode="every_step", record_video=False, max_steps=10, replan_every=4, obs_frames=2)
    assert all(LiberoEnv.frame_needed(full, t) for t in range(-5, 11))
