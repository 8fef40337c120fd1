"""Frustum culling (uwmbench/benchmarks/libero/culling.py) leaves every camera frame bit-identical; real LIBERO
simulator and renderer."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.libero


@pytest.mark.parametrize("task", ["book_caddy", "moka_moka", "bowl_drawer"])  # study, kitchen, living room
def test_culled_frames_are_bit_identical(task):
    pytest.importorskip("libero.libero")
    from uwmbench.benchmarks.libero import culling
    from uwmbench.benchmarks.libero.envs import make_env

    rng = np.random.default_rng(0)
    with make_env(task, seed=0, render="lazy", engine="robosuite") as env:
        env.reset(init_state=0)
        sim = env._rs.sim
        ctx = sim._render_context_offscreen
        assert culling.unsafe_reason(sim.model._model, ctx.scn) is None
        checked, wrist_culled = 0, 0
        for pose in range(3):  # the arm in three places: the wrist camera sees different parts of the scene
            for _ in range(12):
                env.sim_step(np.r_[rng.uniform(-1, 1, 6), 1.0])
            for cam in ("agentview", "robot0_eye_in_hand"):
                ref = sim.render(camera_name=cam, width=128, height=128)
                ctx.__dict__.pop("render", None)
                ctx.__dict__.pop("_uwm_culling", None)
                assert culling.install(ctx)
                before = ctx.culled
                new = sim.render(camera_name=cam, width=128, height=128)
                if cam == "robot0_eye_in_hand":
                    wrist_culled += ctx.culled - before
                diff = int((ref != new).any(-1).sum())
                assert diff == 0, f"{task} {cam} pose {pose}: {diff} pixels differ with culling"
                ctx.__dict__.pop("render")
                checked += 1
        assert checked == 6
        mirrors = culling._reflective(sim.model._model)
        print(task, "mirrors", list(mirrors), "wrist geoms culled", wrist_culled)
        if len(mirrors) == 0:
            assert wrist_culled > 0  # the wrist camera never sees the whole scene
        if task == "bowl_drawer":  # a big static mesh whose box reaches into agentview while its hull does not
            import mujoco

            m = sim.model._model
            sim.render(camera_name="agentview", width=128, height=128)
            counts = []
            for hulls in (None, culling.mesh_hulls(m)):
                mujoco.mjv_updateScene(m, sim.data._data, ctx.vopt, ctx.pert, ctx.cam, mujoco.mjtCatBit.mjCAT_ALL,
                                       ctx.scn)
                counts.append(culling.cull(m, ctx.scn, 1.0, None, hulls, {}))
            assert counts[1] > counts[0], counts


def test_culling_stays_off_where_off_screen_geoms_can_show():
    pytest.importorskip("libero.libero")
    from uwmbench.benchmarks.libero import culling
    from uwmbench.benchmarks.libero.envs import make_env

    with make_env("book_caddy", seed=0, engine="fast") as env:
        env.reset(init_state=0)
        env.render_obs()  # installs the culling render on the env's context
        ctx = env._rs.sim._render_context_offscreen
        assert ctx._uwm_culling is True and "render" in ctx.__dict__
        m = env._rs.sim.model._model
        m.light_castshadow[0] = 1
        assert culling.unsafe_reason(m, ctx.scn) == "a light casts shadows"
        m.light_castshadow[0] = 0
        before = ctx.culled
        m.light_castshadow[0] = 1
        env._rs.sim.render(camera_name="robot0_eye_in_hand", width=128, height=128)
        assert ctx.culled == before  # checked at every render
        m.light_castshadow[0] = 0
        env._rs.sim.render(camera_name="robot0_eye_in_hand", width=128, height=128)
        assert ctx.culled > before
        # a mirror in view (the floor plane, made reflective) turns culling off for the frame
        floor = next(i for i in range(m.ngeom) if m.geom_type[i] == 0 and m.geom_matid[i] >= 0)
        m.mat_reflectance[m.geom_matid[floor]] = 0.3
        ctx.__dict__.pop("render")
        ctx.__dict__.pop("_uwm_culling")
        assert culling.install(ctx)
        before = ctx.culled
        env._rs.sim.render(camera_name="robot0_eye_in_hand", width=128, height=128)
        assert ctx.culled == before
