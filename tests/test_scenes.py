"""Deterministic scenes, LIBERO's official layout, and one frame/action alignment (issue: evaluation you
can trust). Real LIBERO simulator, real collected files."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from uwmbench.methods.base import Method, MethodConfig, build_method, register_method

pytestmark = pytest.mark.libero

VIEWS = ("agentview_rgb", "eye_in_hand_rgb")


@register_method
class _HashingPolicy(Method):
    """Constant actions; records a digest of every observation it is given."""

    name = "test_hashing_policy"
    config_class = MethodConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.seen: list[str] = []

    def compute_loss(self, batch):
        raise NotImplementedError

    @torch.no_grad()
    def predict_action(self, obs):
        x = obs["obs"]
        self.seen += [hashlib.sha1(x[i].numpy().tobytes()).hexdigest() for i in range(x.shape[0])]
        a = torch.zeros(x.shape[0], self.cfg.action_horizon, self.cfg.action_dim)
        a[..., 1] = 0.3
        a[..., -1] = -1
        return a


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """One book_caddy demo (a task with a fixture, the desk caddy) from a random placement."""
    pytest.importorskip("libero.libero")
    from uwmbench.benchmarks.libero.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("demos") / "book_caddy_id.hdf5"
    res = collect(CollectConfig(task="book_caddy", condition="id", episodes=1, workers=1, out=str(out), seed=3,
                                noise=0.0, action_noise=0.0, max_steps=500), progress=False)
    assert res["demos"] == 1, res
    return str(out)


# ----------------------------------------------------------------------------- determinism
def test_episode_is_independent_of_earlier_episodes_and_workers(tmp_path):
    """moka_moka (flat stove fixture): episode 1 alone, after episode 0 in the same worker, and in a
    pool of 2 workers gets bit-identical observations."""
    pytest.importorskip("libero.libero")
    from uwmbench.benchmarks.evaluate import EvalOptions, evaluate

    def seen(episodes, workers):
        m = build_method("test_hashing_policy")
        df = evaluate(m, ["moka_moka"], EvalOptions(conditions=["id"], seed=0, workers=workers, max_steps=17),
                      episodes=episodes, progress=False)
        assert (df["reset_s"] > 0).all()
        return m.seen

    alone = seen([1], 0)                 # a fresh env, episode 1 only
    serial = seen([0, 1], 0)             # episode 0 runs first in the same env
    pooled = seen([0, 1, 2], 2)          # two workers, scheduling decides who runs what
    assert len(alone) == 2 and serial[2:] == alone  # 2 policy calls per 17-step episode
    assert set(alone) <= set(pooled) and set(serial) <= set(pooled)


def test_scene_restore_does_not_rebuild_the_sim():
    pytest.importorskip("libero.libero")
    from uwmbench.benchmarks.libero.envs import LiberoEnv
    from uwmbench.benchmarks.libero.tasks import get_task

    with LiberoEnv(get_task("book_caddy"), seed=0) as env:
        sim = env._rs.sim
        env.reset(init_state=0, seed=1)
        a = env.scene.fixtures["desk_caddy_1"][0].copy()
        env.reset(init_state=0, seed=2)
        assert env._rs.sim is sim                          # same simulator: no rebuild
        assert not np.allclose(a, env.scene.fixtures["desk_caddy_1"][0])  # fixtures drawn per seed
        env.reset(init_state=0, seed=1)
        np.testing.assert_array_equal(a, env.scene.fixtures["desk_caddy_1"][0])


# ----------------------------------------------------------------------------- official layout
def _expected_layout(n: int, s: int, size: int) -> dict:
    """LIBERO's scripts/create_dataset.py, per demo of n kept steps and state size s."""
    f64 = np.dtype("float64")
    return {
        "actions": ((n, 7), f64), "states": ((n, s), f64), "robot_states": ((n, 9), f64),
        "rewards": ((n,), np.dtype("uint8")), "dones": ((n,), np.dtype("uint8")),
        "obs/agentview_rgb": ((n, size, size, 3), np.dtype("uint8")),
        "obs/eye_in_hand_rgb": ((n, size, size, 3), np.dtype("uint8")),
        "obs/ee_pos": ((n, 3), f64), "obs/ee_ori": ((n, 3), f64), "obs/ee_states": ((n, 6), f64),
        "obs/gripper_states": ((n, 2), f64), "obs/joint_states": ((n, 7), f64),
    }


def test_collected_file_has_the_official_layout(collected):
    import h5py

    with h5py.File(collected, "r") as f:
        data = f["data"]
        for k in ("env_name", "problem_info", "macros_image_convention", "bddl_file_name", "bddl_file_content",
                  "env_args", "num_demos", "total", "tag"):
            assert k in data.attrs, k
        assert data.attrs["macros_image_convention"] == "opengl" and data.attrs["tag"] == "libero-v1"
        assert data.attrs["uwmbench_obs_alignment"] == "after_action"
        info = json.loads(data.attrs["problem_info"])
        from libero.libero.envs import TASK_MAPPING
        assert info["problem_name"] in TASK_MAPPING and info["problem_name"] == info["problem_name"].lower()
        assert set(info) == {"problem_name", "domain_name", "language_instruction"}
        env_args = json.loads(data.attrs["env_args"])
        assert set(env_args) == {"type", "env_name", "problem_name", "bddl_file", "env_kwargs"}
        assert env_args["type"] == 1 and env_args["env_name"] == data.attrs["env_name"]
        kw = env_args["env_kwargs"]
        assert set(kw) == {"robots", "controller_configs", "bddl_file_name", "has_renderer", "has_offscreen_renderer",
                           "ignore_done", "use_camera_obs", "camera_depths", "camera_names", "reward_shaping",
                           "control_freq", "camera_heights", "camera_widths", "camera_segmentations"}
        assert kw["controller_configs"]["type"] == "OSC_POSE" and kw["camera_names"] == ["robot0_eye_in_hand",
                                                                                         "agentview"]
        g = data["demo_0"]
        n, s = g["actions"].shape[0], g["states"].shape[1]
        assert g.attrs["num_samples"] == n and data.attrs["total"] == n and data.attrs["num_demos"] == 1
        for key, (shape, dtype) in _expected_layout(n, s, 128).items():
            assert g[key].shape == shape and g[key].dtype == dtype, (key, g[key].shape, g[key].dtype)
        assert g["rewards"][-1] == 1 and g["dones"][-1] == 1 and g["dones"][:-1].sum() == 0
        np.testing.assert_array_equal(g.attrs["init_state"], g["states"][0])
        assert "desk_caddy_1" in g.attrs["model_file"]
        # the 5 settle no-ops are dropped: the first kept action is the expert's, not a no-op
        assert np.abs(g["actions"][0][:6]).max() > 0
        # ee_ori is the axis-angle of the eef quaternion (create_dataset.py), stored in ee_states too
        np.testing.assert_array_equal(g["obs/ee_states"][:, 3:], g["obs/ee_ori"][()])
        np.testing.assert_array_equal(g["robot_states"][:, 2:5], g["obs/ee_pos"][()])


def test_libero_and_robomimic_read_the_collected_file(collected, capsys):
    from libero.libero.envs import TASK_MAPPING
    from libero.libero.utils.dataset_utils import get_dataset_info
    from robomimic.utils.file_utils import get_env_metadata_from_dataset

    get_dataset_info(collected, verbose=False)
    assert "total trajectories: 1" in capsys.readouterr().out
    meta = get_env_metadata_from_dataset(collected)
    assert meta["type"] == 1 and meta["env_kwargs"]["bddl_file_name"].endswith(".bddl")
    env = TASK_MAPPING[meta["problem_name"]](**meta["env_kwargs"])  # the rebuild create_dataset.py does
    try:
        obs = env.reset()
        assert obs["agentview_image"].shape == (128, 128, 3)
    finally:
        env.close()


def test_replay_from_the_stored_scene_succeeds_for_any_reset_seed(collected):
    import h5py

    from uwmbench.benchmarks.libero.envs import LiberoEnv
    from uwmbench.benchmarks.libero.scene import scene_from_demo
    from uwmbench.benchmarks.libero.tasks import get_task

    with h5py.File(collected, "r") as f, LiberoEnv(get_task("book_caddy"), obs_frames=1, replan_every=1,
                                                   max_steps=10 ** 6, settle_steps=0) as env:
        g = f["data/demo_0"]
        actions, states = g["actions"][()], g["states"][()]
        scene = scene_from_demo(g, env._rs, "demo_0")
        for seed in (0, 1, 2):
            env.reset(init_state=scene, seed=seed, settle_steps=0)
            for j, a in enumerate(actions):
                np.testing.assert_array_equal(env.sim_state(), states[j])  # bit for bit
                env.sim_step(a)
            assert env.check_success(), seed


# ----------------------------------------------------------------------------- one alignment
def _window_vs_env(path: str, s: int):
    """The training window starting at frame s vs the evaluator's observation of the same state."""
    import h5py

    from uwmbench.benchmarks.data import build_datasets, data_config_from
    from uwmbench.benchmarks.libero.envs import LiberoEnv
    from uwmbench.benchmarks.libero.scene import scene_from_demo
    from uwmbench.benchmarks.libero.tasks import get_task

    method = build_method("test_hashing_policy")  # To=2, Ha=16, views agentview + eye_in_hand
    bundle = build_datasets(data_config_from({"sources": [{"path": path}], "val_fraction": 0.0,
                                              "flip_vertical": True}), method)
    ds = bundle.train.datasets[0]
    idx = next(i for i in range(len(ds)) if ds.locate(i) == ("demo_0", s))
    win = ds[idx]
    with h5py.File(path, "r") as f, LiberoEnv(get_task("book_caddy"), obs_frames=2, replan_every=1,
                                              max_steps=10 ** 6, settle_steps=0, render="every_step") as env:
        g = f["data/demo_0"]
        actions = g["actions"][()]
        env.reset(init_state=scene_from_demo(g, env._rs, "demo_0"), seed=0, settle_steps=0)
        # the env reaches the window's last observed frame after actions[0 .. s+To-1-1+d]
        last = s + 1 + ds.action_offset
        for a in actions[:last]:
            env.step(a)
        obs = env.observation()[..., ::-1, :]          # the evaluator's flip (flip_vertical)
        nxt_action = actions[last]
    return win, obs, nxt_action


def test_training_window_equals_evaluator_observation(collected, tmp_path):
    import h5py

    s = 7
    win, obs, nxt = _window_vs_env(collected, s)
    np.testing.assert_array_equal(win["obs"], obs)                 # pixel-equal
    np.testing.assert_array_equal(win["action"][0], nxt.astype(np.float32))  # the action the env takes next
    # the same check as `uwmbench diagnose` reports it
    from uwmbench.benchmarks.data import build_datasets, data_config_from
    from uwmbench.benchmarks.diagnose import window_vs_env
    ds = build_datasets(data_config_from({"sources": [{"path": collected}], "val_fraction": 0.0}),
                        build_method("test_hashing_policy")).train.datasets[0]
    r = window_vs_env(collected, ds, "demo_0", s)
    assert r["identical_pixels"] == 1.0 and r["max_abs_diff"] == 0 and r["next_action_equal"], r
    # the same recording as a "before_action" file (frame j shows the state before actions[j])
    alt = tmp_path / "before_action.hdf5"
    with h5py.File(collected, "r") as f, h5py.File(alt, "w") as o:
        g = f["data/demo_0"]
        d = o.create_group("data")
        for k, v in f["data"].attrs.items():
            d.attrs[k] = v
        d.attrs["uwmbench_obs_alignment"] = "before_action"
        h = d.create_group("demo_0")
        for k, v in g.attrs.items():
            h.attrs[k] = v
        # frame k of the new file = official frame k (the state before official action k+1)
        h.create_dataset("actions", data=g["actions"][1:])
        for v in VIEWS:
            h.create_dataset(f"obs/{v}", data=g[f"obs/{v}"][:-1])
    from uwmbench.benchmarks.data import build_datasets, data_config_from
    ds = build_datasets(data_config_from({"sources": [{"path": str(alt)}], "val_fraction": 0.0}),
                        build_method("test_hashing_policy")).train.datasets[0]
    assert ds.action_offset == 0
    idx = next(i for i in range(len(ds)) if ds.locate(i) == ("demo_0", s))
    np.testing.assert_array_equal(ds[idx]["obs"], win["obs"])
    np.testing.assert_array_equal(ds[idx]["action"], win["action"])


def test_training_demos_overlapping_evaluation_are_flagged(collected, tmp_path):
    import h5py

    from uwmbench.benchmarks.evaluate import demo_init_overlap
    from uwmbench.benchmarks.libero.tasks import get_task, load_init_states

    assert demo_init_overlap([collected], "book_caddy", "id") == []   # random placements
    bench = load_init_states(get_task("book_caddy"))
    p = tmp_path / "from_eval_states.hdf5"
    with h5py.File(p, "w") as f:
        for i, k in enumerate((3, 11)):
            f.create_dataset(f"data/demo_{i}/states", data=np.stack([bench[k], bench[k]]))
    assert demo_init_overlap([str(p)], "book_caddy", "id") == [(str(p), "demo_0", 3), (str(p), "demo_1", 11)]
