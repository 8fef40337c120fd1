"""LIBERO task registry and OOD variant (uwmbench/benchmarks/libero/tasks.py, ood.py, tasks_cli.py)."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.libero


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UWMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MUJOCO_GL", "egl")


def test_resolve_short_name_index_and_errors():
    from uwmbench.benchmarks.libero.tasks import PAPER_TASKS, get_task, list_tasks

    s = get_task("book_caddy")
    assert s.suite == "libero_10" and s.task_name.startswith("STUDY_SCENE1") and s.short == "book_caddy"
    assert s.condition == "id" and s.max_steps == 520 and s.init_states_file.endswith(".npz")
    names = [t.task_name for t in list_tasks("libero_10")]
    assert len(names) == 10 and len(list_tasks("libero_90")) == 90
    i = names.index(s.task_name)
    assert get_task(f"libero_10:{i}") == s
    assert get_task(f"libero_10/{s.task_name}") == s
    assert {get_task(k).short for k in PAPER_TASKS} == set(PAPER_TASKS)
    assert get_task("mug_mug", max_steps=1000).max_steps == 1000
    with pytest.raises(KeyError, match="book_caddy"):
        get_task("book_cady")
    with pytest.raises(KeyError, match="out of range"):
        get_task("libero_10:10")


def test_ood_bddl_widened_and_distractors_removed():
    from uwmbench.benchmarks.libero.ood import bddl_info
    from uwmbench.benchmarks.libero.tasks import get_task, load_init_states

    sid, sood = get_task("soup_cheese"), get_task("soup_cheese", "ood", ood_margin=0.03)
    a = bddl_info(open(sid.bddl_file).read())
    b = bddl_info(open(sood.bddl_file).read())
    assert {"tomato_sauce_1", "ketchup_1"} <= set(a.objects)
    assert set(b.objects) == {"alphabet_soup_1", "cream_cheese_1", "basket_1"}
    assert not any("tomato" in " ".join(p) or "ketchup" in " ".join(p) for p in b.init)
    assert not any("tomato" in r or "ketchup" in r for r in b.regions)
    assert b.fixtures == a.fixtures and b.goal == a.goal
    pa, pb = a.placement(), b.placement()
    for obj, reg in pb.items():
        for (x0, y0, x1, y1), (u0, v0, u1, v1) in zip(pa[obj].ranges, reg.ranges):
            assert np.isclose((x0 + x1) / 2, (u0 + u1) / 2) and np.isclose((y0 + y1) / 2, (v0 + v1) / 2)
            assert (u1 - u0) / 2 >= max((x1 - x0) / 2, 0.03) - 1e-9
            assert (v1 - v0) / 2 >= max((y1 - y0) / 2, 0.03) - 1e-9
    assert np.isclose(pb["alphabet_soup_1"].ranges[0][2] - pb["alphabet_soup_1"].ranges[0][0], 0.06)
    # fixtures are never removed (bowl_drawer keeps the wine rack fixture, drops the wine bottle)
    c = bddl_info(open(get_task("bowl_drawer", "ood").bddl_file).read())
    assert "wine_rack_1" in c.fixtures and "wine_bottle_1" not in c.objects
    # same inputs -> same cached file
    assert get_task("soup_cheese", "ood").bddl_file == sood.bddl_file
    with pytest.raises(ValueError):
        get_task("soup_cheese", "bogus")
    # ID init states are LIBERO's shipped ones
    assert load_init_states(sid).shape[0] == 50


def test_ood_env_resets_with_generated_init_states():
    from uwmbench.benchmarks.libero.ood import make_sim_env
    from uwmbench.benchmarks.libero.tasks import get_task, load_init_states

    spec = get_task("book_caddy", "ood", ood_seed=3)
    env = make_sim_env(spec.bddl_file)
    try:
        states = load_init_states(spec, 2)  # generated with seeded resets and cached
        assert states.shape[0] == 2 and not np.allclose(states[0], states[1])
        assert np.array_equal(load_init_states(spec, 2), states)  # reused from the cache
        env.reset()
        obs = env.set_init_state(states[1])
        assert np.allclose(env.get_sim_state(), states[1])
        assert "white_yellow_mug_1_pos" not in obs and "black_book_1_pos" in obs
        assert not env.check_success()
        # the book lies inside the widened range around the region center
        book = obs["black_book_1_pos"]
        assert book is not None
    finally:
        env.close()


def test_tasks_cli(capsys):
    from uwmbench.benchmarks.libero.tasks_cli import main

    assert main(["--suite", "libero_10"]) == 0
    out = capsys.readouterr().out
    assert "book_caddy" in out and "libero_10:9" in out
    assert main(["book_caddy"]) == 0
    out = capsys.readouterr().out
    assert "(removed)" in out and "white_yellow_mug_1" in out and "x[-0.030,+0.030]" in out
    assert main(["nope_task"]) == 2
