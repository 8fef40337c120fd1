"""Scripted expert (uwmbench/benchmarks/libero/expert.py) and demo collection (collect.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.libero


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("UWMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MUJOCO_GL", "egl")


def test_expert_solves_soup_cheese_without_rendering():
    from uwmbench.benchmarks.libero.expert import ExpertConfig, run_episode
    from uwmbench.benchmarks.libero.ood import make_sim_env
    from uwmbench.benchmarks.libero.tasks import get_task, load_init_states

    spec = get_task("soup_cheese")
    env = make_sim_env(spec.bddl_file)  # no offscreen renderer
    try:
        r = run_episode(env, load_init_states(spec)[0], ExpertConfig(max_steps=400), seed=0)
        assert r.success and env.check_success()
        assert 50 < r.steps <= 400
        assert r.actions.shape == (r.steps, 7) and np.abs(r.actions).max() <= 1.0
        assert r.states.shape == (r.steps, len(env.get_sim_state()))
    finally:
        env.close()


def test_expert_turns_the_stove_knob_on_by_pushing_its_pointer_round():
    """The knob skill: the stove's button joint goes from 0 to past LIBERO's TurnOn threshold (0.5 rad)
    from a LIBERO init state, and the episode ends on LIBERO's own success check. (The skill turns the
    knob from 6 of this task's first 10 init states; this is one of them, index 2.)"""
    from uwmbench.benchmarks.libero.expert import ExpertConfig, ScriptedExpert, run_episode
    from uwmbench.benchmarks.libero.ood import make_sim_env
    from uwmbench.benchmarks.libero.tasks import get_task, load_init_states

    spec = get_task("libero_90/KITCHEN_SCENE3_turn_on_the_stove")
    env = make_sim_env(spec.bddl_file)
    try:
        inner = getattr(env, "env", env)
        env.reset()
        init = load_init_states(spec)[2]
        env.set_init_state(init)
        jid, q0, _, _, _, _ = ScriptedExpert(env)._knob("flat_stove_1")
        r = run_episode(env, init, ExpertConfig(max_steps=400), seed=0)
        q = float(inner.sim.data.qpos[inner.sim.model.jnt_qposadr[jid]])
        assert q0 < 0.05 and q >= 0.5, (q0, q)
        assert r.success and env.check_success() and r.steps <= 400
    finally:
        env.close()


@pytest.mark.slow
def test_collect_two_episodes_reads_back(tmp_path):
    import h5py

    from uwmbench.benchmarks.libero.collect import main

    out = tmp_path / "demos.hdf5"
    rc = main(["task=soup_cheese", "episodes=2", "workers=1", f"out={out}", "noise=0.0", "action_noise=0.0",
               "image_size=64", "max_steps=400"])
    assert rc == 0 and out.exists()
    with h5py.File(out, "r") as f:
        d = f["data"]
        assert d.attrs["num_demos"] == 2
        env_args = json.loads(d.attrs["env_args"])
        assert env_args["env_kwargs"]["bddl_file_name"].endswith(".bddl")
        total = 0
        for k in ("demo_0", "demo_1"):
            g = d[k]
            T = g.attrs["num_samples"]
            total += T
            assert g["actions"].shape == (T, 7)
            assert g["obs/agentview_rgb"].shape == (T, 64, 64, 3) and g["obs/agentview_rgb"].dtype == np.uint8
            assert g["obs/eye_in_hand_rgb"].shape == (T, 64, 64, 3)
            assert g["obs/ee_pos"].shape == (T, 3) and g["obs/gripper_states"].shape == (T, 2)
            assert g["obs/joint_states"].shape == (T, 7) and g["states"].shape[0] == T
            assert g["rewards"][-1] == 1 and g["dones"][-1] == 1
            assert g["obs/agentview_rgb"][0].std() > 1  # a real image, not blank
        assert d.attrs["total"] == total


def test_resumed_collect_makes_new_attempts_instead_of_repeating_failed_ones(tmp_path):
    """A demo index whose attempts all failed is retried with new placements on resume (the
    attempt seeds continue), so rerunning a partial collection can finish it."""
    import h5py

    from uwmbench.benchmarks.libero.collect import CollectConfig, collect

    out = tmp_path / "d.hdf5"
    cfg = CollectConfig(task="libero_90:0", episodes=1, workers=1, out=str(out), max_steps=8, max_attempts=1,
                        noise=0.0, action_noise=0.0, image_size=32)   # 8 steps: the expert cannot finish
    first = collect(cfg, progress=False)
    assert first["demos"] == 0 and first["failed_demos"] == [0]
    with h5py.File(first["out"], "r") as f:
        assert json.loads(f["data"].attrs["collect_stats"])["tried"] == {"0": 1}
    cfg.max_steps = 300                                    # now the expert can finish: attempt 1 is new
    second = collect(cfg, progress=False)
    assert second["demos"] == 1 and out.is_file(), second
    with h5py.File(out, "r") as f:
        g = f["data/demo_0"]
        assert json.loads(f["data"].attrs["collect_stats"])["tried"] == {"0": 2}
        assert g.attrs["attempt_seed"] == 1                # seed 0: 0 * 1_000_003 + 0 * 101 + attempt 1


def test_skill_family_from_the_goal():
    from uwmbench.benchmarks.libero.coverage import skill_family
    assert skill_family([["On", "bowl_1", "plate_1"]]) == "pick-place"
    assert skill_family([["In", "bowl_1", "wooden_cabinet_1_top_region"], ["Close", "wooden_cabinet_1_top_region"]]) \
        == "pick-place + drawer close"
    assert skill_family([["Open", "microwave_1_heating_region"]]) == "microwave open"
    assert skill_family([["Turnon", "flat_stove_1"]]) == "turn on"


def test_coverage_table_is_written_as_it_goes_and_resumes(tmp_path, capsys):
    """`uwmbench tasks coverage`: a row per planned episode, the per-task table after each task,
    a rerun plans nothing already written, and a larger episodes= plans only the new ones."""
    from uwmbench.benchmarks.libero.coverage import EPISODES_FILE, main
    from uwmbench.rows import read_jsonl

    out = tmp_path / "cov"
    args = ["tasks=[libero_90:0]", "episodes=1", "workers=1", f"out={out}"]
    assert main(args) == 0
    rows = read_jsonl(out / EPISODES_FILE)
    assert [(r["episode"], r["family"], r["success"]) for r in rows] == [(0, "drawer close", True)]
    assert 30 < rows[0]["steps"] < 200
    md = (out / "coverage.md").read_text()
    assert "KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet | drawer close | 1/1 = 1.00" in md
    assert "1 of 1 tasks at >= 0.8" in capsys.readouterr().out
    assert main(args) == 0 and len(read_jsonl(out / EPISODES_FILE)) == 1          # nothing planned again
    assert main(args[:1] + ["episodes=2"] + args[2:]) == 0
    assert [r["episode"] for r in read_jsonl(out / EPISODES_FILE)] == [0, 1]
    assert main(["tasks=[no_such_task]", f"out={out}"]) == 2 and "unknown LIBERO task" in capsys.readouterr().out


def test_corpus_names_files_as_the_official_datasets_and_resumes(tmp_path, capsys):
    """`uwmbench corpus`: one file per task in LIBERO's layout under <out>/<suite>/ with the
    released datasets' names, a per-task summary, and a rerun that collects nothing again."""
    import h5py

    from uwmbench.benchmarks.libero.corpus import main

    args = ["suite=libero_90", "tasks=[libero_90:0]", "episodes=1", "workers=1", "image_size=32", f"out={tmp_path}"]
    assert main(args) == 0
    f = tmp_path / "libero_90" / "KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet_demo.hdf5"
    with h5py.File(f, "r") as h:
        assert h["data"].attrs["num_demos"] == 1 and h["data/demo_0/obs/agentview_rgb"].shape[1:] == (32, 32, 3)
    csv = (tmp_path / "libero_90" / "corpus.csv").read_text()
    assert "KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet,KITCHEN_SCENE10" in csv and ",True,1," in csv
    assert "1/1 tasks complete, 1 demos" in capsys.readouterr().out
    mtime = f.stat().st_mtime_ns
    assert main(args) == 0 and f.stat().st_mtime_ns == mtime                     # nothing collected again
    assert main(["suite=libero_90", "tasks=[book_caddy]", f"out={tmp_path}"]) == 2  # a LIBERO-10 task
    assert "not in suite libero_90" in capsys.readouterr().out
