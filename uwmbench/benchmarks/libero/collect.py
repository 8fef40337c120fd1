"""``uwmbench collect``: scripted-expert demonstrations -> LIBERO's official HDF5 layout.

Each demo starts from a **seeded random placement** drawn by LIBERO's own samplers from the
task's BDDL regions (ID or OOD BDDL), never from the benchmark's evaluation init states, so ID
evaluation is not train-on-test. ``from_init_states=true`` starts demo i from evaluation init
state i instead (memorisation checks only; ``uwmbench run``/``evaluate`` warn about the overlap).

Per demo, in one worker process with one :class:`~uwmbench.benchmarks.libero.envs.LiberoEnv`:

1. ``env.reset(seed=placement_seed)`` draws the placement (objects and fixtures); the scene is
   captured (:mod:`.scene`).
2. The expert (:mod:`.expert`) plans 5 settle no-ops + the skills with the cameras gated off (fast
   steps); only episodes LIBERO's success check accepts are kept.
3. The scene is restored and the actions replayed through ``env.step`` with the cameras on, as
   LIBERO's ``scripts/create_dataset.py`` replays recorded demos: the observation stored for
   action j is the one ``env.step(actions[j])`` returns, the first 5 steps are dropped, and every
   replayed state is checked against the planned one (they are bit-identical: the scene fixes
   everything the simulator depends on).

Layout (what ``create_dataset.py`` writes): ``data`` attrs ``env_name``, ``problem_info``,
``macros_image_convention``, ``bddl_file_name``, ``bddl_file_content``, ``env_args`` (type, env_name,
problem_name, bddl_file, env_kwargs with the full OSC_POSE controller config), ``num_demos``,
``total``, ``tag``; ``data/demo_i`` attrs ``num_samples``, ``model_file`` (MJCF with the fixture
poses), ``init_state`` (= states[0]); datasets ``actions`` (N,7) f64, ``states`` (N,S) f64,
``robot_states`` (N,9) f64, ``rewards``/``dones`` (N,) u8, ``obs/{agentview_rgb, eye_in_hand_rgb}``
(N,H,W,3) u8 (OpenGL convention, upside down), ``obs/{ee_pos, ee_ori, ee_states, gripper_states,
joint_states}`` f64. Our additions, all prefixed ``uwmbench_`` or clearly extra: ``data`` attrs
``uwmbench_obs_alignment`` ("after_action", the official convention), ``uwmbench_task`` (JSON),
``expert_success_rate``, ``collect_stats``; demo attrs ``uwmbench_scene`` (the exact scene of
states[0]: state, fixture poses, controller and gripper state), ``placement_seed``,
``attempt_seed``, ``init_state_index`` (-1 for random placements).

Demos are appended to ``<out>.partial`` as they finish (re-running resumes it); the file is
renamed to ``<out>`` when complete.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .workers import worker_results

log = logging.getLogger(__name__)

CAP_INDEX = 5             # LIBERO's create_dataset.py drops the first 5 recorded steps
OBS_ALIGNMENT_ATTR = "uwmbench_obs_alignment"
DATASET_TAG = "libero-v1"


@dataclass
class CollectConfig:
    task: str = "book_caddy"
    condition: str = "id"
    episodes: int = 50
    workers: int = 2
    out: str | None = None
    seed: int = 0
    noise: float = 0.01
    action_noise: float = 0.05
    max_steps: int = 600
    max_attempts: int = 3
    image_size: int = 128
    ood_margin: float = 0.03
    ood_seed: int = 0
    resume: bool = True
    from_init_states: bool = False   # start demo i from evaluation init state i (memorisation checks only)


def placement_seed(seed: int, task_key: str, condition: str, demo: int, attempt: int) -> int:
    """Seed of a demo's random placement; its own namespace, disjoint from rollout seeds."""
    h = hashlib.sha256(f"uwmbench-collect|{int(seed)}|{task_key}|{condition}|{int(demo)}|{int(attempt)}".encode())
    return int.from_bytes(h.digest()[:4], "little") & 0x7FFFFFFF


def official_env_args(control_env, bddl_file: str, size: int) -> dict:
    """``env_args`` as LIBERO's create_dataset.py writes it (robomimic env metadata)."""
    from robosuite import load_controller_config

    env_kwargs = {
        "robots": ["Panda"],
        "controller_configs": load_controller_config(default_controller="OSC_POSE"),
        "bddl_file_name": bddl_file,
        "has_renderer": False,
        "has_offscreen_renderer": True,
        "ignore_done": True,
        "use_camera_obs": True,
        "camera_depths": False,
        "camera_names": ["robot0_eye_in_hand", "agentview"],
        "reward_shaping": True,
        "control_freq": 20,
        "camera_heights": size,
        "camera_widths": size,
        "camera_segmentations": None,
    }
    return {"type": 1, "env_name": type(control_env.env).__name__, "problem_name": control_env.problem_name,
            "bddl_file": bddl_file, "env_kwargs": env_kwargs}


def replay_demo(env, scene, actions: np.ndarray, planned_states: np.ndarray | None = None,
                cap: int = CAP_INDEX) -> dict[str, np.ndarray]:
    """Restore ``scene`` in a :class:`LiberoEnv` and replay ``actions`` through ``env.step`` with the
    cameras on; returns the official per-demo arrays (first ``cap`` steps dropped) plus
    ``scene_at_cap`` (the exact scene of the first kept state) and ``success``."""
    import robosuite.utils.transform_utils as T

    from .envs import VIEW_CAMERAS
    from .scene import capture_scene

    env.reset(init_state=scene, settle_steps=0)
    rs, ctrl = env._rs, env._env
    keys = ("agentview_rgb", "eye_in_hand_rgb", "ee_pos", "ee_ori", "ee_states", "gripper_states", "joint_states",
            "robot_states", "states", "actions")
    out: dict[str, list] = {k: [] for k in keys}
    scene_at_cap = None
    max_err = 0.0
    for j, a in enumerate(np.asarray(actions, np.float64)):
        state = np.array(rs.sim.get_state().flatten(), np.float64)
        if planned_states is not None:
            max_err = max(max_err, float(np.max(np.abs(state - planned_states[j]))))
        if j == cap:
            scene_at_cap = capture_scene(rs)
        env._gate_open = True
        try:
            obs, _, _, _ = ctrl.step(a)
        finally:
            env._gate_open = False
        if j < cap:
            continue
        out["states"].append(state)
        out["actions"].append(a)
        for view in ("agentview_rgb", "eye_in_hand_rgb"):
            out[view].append(np.array(obs[f"{VIEW_CAMERAS[view]}_image"], np.uint8))
        pos = np.array(obs["robot0_eef_pos"], np.float64)
        ori = np.array(T.quat2axisangle(obs["robot0_eef_quat"]), np.float64)
        out["ee_pos"].append(pos)
        out["ee_ori"].append(ori)
        out["ee_states"].append(np.concatenate([pos, ori]))
        out["gripper_states"].append(np.array(obs["robot0_gripper_qpos"], np.float64))
        out["joint_states"].append(np.array(obs["robot0_joint_pos"], np.float64))
        out["robot_states"].append(np.array(rs.get_robot_state_vector(obs), np.float64))
    res = {k: (np.stack(v).astype(np.uint8) if k.endswith("_rgb") else np.stack(v).astype(np.float64))
           for k, v in out.items()}
    res["success"] = bool(ctrl.check_success())
    res["scene_at_cap"] = scene_at_cap
    res["replay_max_state_err"] = max_err
    res["model_file"] = rs.sim.model.get_xml()
    return res


def _worker(cfg: dict, jobs, results) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from .envs import LiberoEnv
    from .expert import ExpertConfig, run_episode
    from .tasks import get_task, load_init_states

    spec = get_task(cfg["task"], cfg["condition"], cfg["ood_margin"], cfg["ood_seed"])
    # each demo stores its MJCF (model_file, sim.model.get_xml()), which a model loaded from the
    # model cache would have to compile again for: this env compiles its own
    env = LiberoEnv(spec, seed=0, camera_size=cfg["image_size"], render="lazy", obs_frames=1, replan_every=1,
                    max_steps=10 ** 6, settle_steps=0, use_model_cache=False)
    init_states = None
    if cfg["from_init_states"]:
        init_states = load_init_states(spec, cfg["n_init"]) if spec.condition == "ood" else load_init_states(spec)
    ecfg = ExpertConfig(jitter=cfg["noise"], action_noise=cfg["action_noise"], max_steps=cfg["max_steps"])
    try:
        while True:
            job = jobs.get()
            if job is None:
                break
            demo_idx, first = job   # a resumed run continues with new attempts, never repeats failed ones
            attempts = []
            kept = None
            for a in range(first, first + cfg["max_attempts"]):
                aseed = int(cfg["seed"]) * 1_000_003 + demo_idx * 101 + a
                pseed = placement_seed(cfg["seed"], spec.key, spec.condition, demo_idx, a)
                init_idx = -1
                t0 = time.time()
                try:
                    if init_states is not None:
                        init_idx = (demo_idx + a * 7) % len(init_states)
                        env.reset(init_state=init_idx, seed=pseed, settle_steps=0)
                    else:
                        env.reset(init_state=None, seed=pseed, settle_steps=0)
                    scene = env.scene
                    r = run_episode(env._env, None, ecfg, seed=aseed, settle_steps=CAP_INDEX)
                except Exception as e:  # a simulator error counts as a failed attempt
                    attempts.append({"success": False, "error": repr(e)})
                    continue
                attempts.append({"success": r.success, "steps": r.steps, "plan_s": time.time() - t0})
                if r.success and len(r.actions) > CAP_INDEX + 1:
                    kept = (r, scene, init_idx, aseed, pseed)
                    break
            payload = {"demo": demo_idx, "attempts": attempts}
            if kept:
                r, scene, init_idx, aseed, pseed = kept
                rep = replay_demo(env, scene, r.actions.astype(np.float64), np.asarray(r.states))
                if not rep["success"] or rep["replay_max_state_err"] > 0:
                    payload["attempts"][-1]["replay"] = {"success": rep["success"],
                                                         "max_state_err": rep["replay_max_state_err"]}
                if rep["success"]:
                    payload.update(replay=rep, init_state_index=init_idx, attempt_seed=aseed, placement_seed=pseed)
            results.put(payload)
    finally:
        env.close()


def _write_demo(f, name: str, p: dict) -> None:
    from .scene import SCENE_ATTR

    rep = p["replay"]
    n = len(rep["actions"])
    g = f.create_group(f"data/{name}")
    obs = g.create_group("obs")
    for k in ("gripper_states", "joint_states", "ee_states", "ee_pos", "ee_ori"):
        obs.create_dataset(k, data=rep[k])
    for k in ("agentview_rgb", "eye_in_hand_rgb"):
        obs.create_dataset(k, data=rep[k], compression="gzip")
    g.create_dataset("actions", data=rep["actions"])
    g.create_dataset("states", data=rep["states"])
    g.create_dataset("robot_states", data=rep["robot_states"])
    rewards = np.zeros(n, np.uint8)
    rewards[-1] = 1
    g.create_dataset("rewards", data=rewards)
    g.create_dataset("dones", data=rewards.copy())
    g.attrs["num_samples"] = n
    g.attrs["model_file"] = rep["model_file"]
    g.attrs["init_state"] = rep["states"][0]
    g.attrs[SCENE_ATTR] = rep["scene_at_cap"].to_json()
    g.attrs["init_state_index"] = int(p["init_state_index"])
    g.attrs["attempt_seed"] = int(p["attempt_seed"])
    g.attrs["placement_seed"] = int(p["placement_seed"])
    f.flush()


def _write_header(data, spec, size: int, cfg: CollectConfig) -> None:
    import robosuite.macros as macros

    from .ood import make_sim_env

    env = make_sim_env(spec.bddl_file)  # a throw-away env for the names LIBERO derives from the BDDL
    try:
        env_args = official_env_args(env, spec.bddl_file, size)
        data.attrs["env_name"] = env_args["env_name"]
        data.attrs["problem_info"] = json.dumps({"problem_name": env.problem_name, "domain_name": env.domain_name,
                                                 "language_instruction": env.language_instruction})
    finally:
        env.close()
    data.attrs["macros_image_convention"] = macros.IMAGE_CONVENTION
    data.attrs["bddl_file_name"] = spec.bddl_file
    data.attrs["bddl_file_content"] = Path(spec.bddl_file).read_text()
    data.attrs["env_args"] = json.dumps(env_args)
    data.attrs["tag"] = DATASET_TAG
    data.attrs[OBS_ALIGNMENT_ATTR] = "after_action"
    data.attrs["uwmbench_task"] = json.dumps({
        "suite": spec.suite, "task": spec.task_name, "short": spec.short, "condition": spec.condition,
        "ood_margin": spec.ood_margin, "ood_seed": spec.ood_seed, "collect_seed": cfg.seed,
        "placements": "init_states" if cfg.from_init_states else "random"})


def collect(cfg: CollectConfig, progress: bool = True) -> dict:
    import h5py
    from tqdm import tqdm

    from .tasks import get_task, load_init_states

    if cfg.condition not in ("id", "ood"):
        raise ValueError(f"collect: condition must be id|ood, got {cfg.condition!r}")
    if cfg.episodes < 1 or cfg.workers < 1:
        raise ValueError(f"collect: episodes and workers must be >= 1 (got {cfg.episodes}, {cfg.workers})")
    spec = get_task(cfg.task, cfg.condition, cfg.ood_margin, cfg.ood_seed)
    out = Path(cfg.out or f"demos/{spec.display_name}_{cfg.condition}.hdf5")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    n_init = max(50, cfg.episodes)
    if spec.condition == "ood" and cfg.from_init_states:  # generate the OOD init states once, before the workers
        load_init_states(spec, n_init)

    done: set[int] = set()
    stats = {"attempts": 0, "successes": 0}
    if partial.exists() and cfg.resume:
        with h5py.File(partial, "r") as f:
            data = f.get("data")
            if data is not None and data.attrs.get(OBS_ALIGNMENT_ATTR) != "after_action":
                raise ValueError(f"{partial}: a partial file of an older collect layout; delete it to start over")
            done = {int(k.split("_")[1]) for k in (data or {}).keys()}
            if data is not None and "collect_stats" in data.attrs:
                stats = json.loads(data.attrs["collect_stats"])
    elif partial.exists():
        partial.unlink()
    todo = [i for i in range(cfg.episodes) if i not in done]
    tried: dict[str, int] = dict(stats.get("tried", {}))   # attempts already made per demo index (resume)
    wcfg = {**cfg.__dict__, "n_init": n_init}

    with h5py.File(partial, "a") as f:
        data = f.require_group("data")
        if "env_args" not in data.attrs:
            _write_header(data, spec, cfg.image_size, cfg)
        failed: list[int] = []
        if todo:
            bar = tqdm(total=len(todo), desc=f"collect {spec.display_name}/{cfg.condition}", disable=not progress)
            try:
                for p in worker_results(_worker, wcfg, [(i, tried.get(str(i), 0)) for i in todo], cfg.workers,
                                        len(todo), "collect"):
                    tried[str(p["demo"])] = tried.get(str(p["demo"]), 0) + len(p["attempts"])
                    stats["tried"] = tried
                    stats["attempts"] += len(p["attempts"])
                    stats["successes"] += sum(bool(a["success"]) for a in p["attempts"])
                    for a in p["attempts"]:
                        if "replay" in a:
                            log.warning("collect: demo %d replay: %s", p["demo"], a["replay"])
                    if "replay" in p:
                        _write_demo(f, f"demo_{p['demo']}", p)
                    else:
                        failed.append(p["demo"])
                    data.attrs["collect_stats"] = json.dumps(stats)
                    bar.update(1)
                    bar.set_postfix(success=f"{stats['successes']}/{stats['attempts']}")
            finally:
                bar.close()
        names = sorted(data.keys(), key=lambda k: int(k.split("_")[1]))
        data.attrs["num_demos"] = len(names)
        data.attrs["total"] = int(sum(data[k].attrs["num_samples"] for k in names))
        rate = stats["successes"] / max(stats["attempts"], 1)
        data.attrs["expert_success_rate"] = rate
    result = {"task": spec.display_name, "condition": cfg.condition, "demos": len(names), "wanted": cfg.episodes,
              "attempts": stats["attempts"], "successes": stats["successes"], "expert_success_rate": rate,
              "failed_demos": failed, "out": str(out)}
    if len(names) >= cfg.episodes:
        os.replace(partial, out)
    else:
        result["out"] = str(partial)
        log.warning("collect: only %d/%d demos succeeded; partial file kept at %s (rerun to resume)",
                    len(names), cfg.episodes, partial)
    return result


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("usage: uwmbench collect [key=value ...]  (keys: " + ", ".join(CollectConfig.__dataclass_fields__) + ")")
        return 0
    from uwmbench.config import load_config, typed

    cfg = typed(load_config("collect", argv), CollectConfig, "collect")
    res = collect(cfg)
    print(f"expert success rate {res['task']} [{res['condition']}]: {res['successes']}/{res['attempts']} "
          f"= {res['expert_success_rate']:.2f}; demos kept {res['demos']}/{res['wanted']} -> {res['out']}")
    return 0 if res["demos"] >= res["wanted"] else 1
