"""``uwmbench collect``: scripted-expert demonstrations -> LIBERO/robomimic-layout HDF5.

Each worker process (multiprocessing spawn) owns one env with an offscreen renderer but no
camera observations while planning (fast steps). An episode is planned by
:mod:`uwmbench.benchmarks.libero.expert`; only episodes that LIBERO's own success check
accepts are kept; their saved sim states are then replayed (set state, forward, render both
cameras) to produce the images. Frames are stored as the simulator renders them, i.e. upside
down, like LIBERO's own files.

Layout: ``data`` attrs ``env_args`` (json: env_name, type, env_kwargs incl. bddl_file),
``problem_info`` (json), ``bddl_file_name``, ``total``, ``num_demos``, ``expert_success_rate``;
``data/demo_i/{actions (T,7), states (T,D), rewards (T,), dones (T,), obs/agentview_rgb,
obs/eye_in_hand_rgb (T,S,S,3 uint8), obs/ee_pos (T,3), obs/ee_ori (T,3 axis-angle),
obs/ee_states (T,6), obs/gripper_states (T,2), obs/joint_states (T,7)}``, demo attrs
``num_samples``, ``init_state_index``, ``attempt_seed``. Demos are appended to ``<out>.partial``
as they finish (re-running resumes it) and the file is renamed to ``<out>`` when complete.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


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


def _quat_xyzw_to_axis_angle(q):
    x, y, z, w = q
    w = np.clip(w, -1, 1)
    s = np.sqrt(max(1 - w * w, 0))
    ang = 2 * np.arccos(w)
    if s < 1e-8:
        return np.zeros(3)
    return np.array([x, y, z]) / s * ang


def render_replay(env, states: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Set each saved state, forward, render both cameras; proprio from the sim."""
    inner = env.env
    sim = inner.sim
    robot = inner.robots[0]
    out = {k: [] for k in ("agentview_rgb", "eye_in_hand_rgb", "ee_pos", "ee_ori", "ee_states", "gripper_states",
                           "joint_states")}
    from robosuite.utils.transform_utils import mat2quat

    for s in states:
        sim.set_state_from_flattened(s)
        sim.forward()
        out["agentview_rgb"].append(sim.render(camera_name="agentview", width=size, height=size))
        out["eye_in_hand_rgb"].append(sim.render(camera_name="robot0_eye_in_hand", width=size, height=size))
        pos = np.array(sim.data.site_xpos[robot.eef_site_id])
        ori = _quat_xyzw_to_axis_angle(mat2quat(np.array(sim.data.site_xmat[robot.eef_site_id]).reshape(3, 3)))
        out["ee_pos"].append(pos)
        out["ee_ori"].append(ori)
        out["ee_states"].append(np.concatenate([pos, ori]))
        out["gripper_states"].append(np.array(sim.data.qpos[robot._ref_gripper_joint_pos_indexes]))
        out["joint_states"].append(np.array(sim.data.qpos[robot._ref_joint_pos_indexes]))
    res = {}
    for k, v in out.items():
        arr = np.stack(v)
        res[k] = arr.astype(np.uint8) if k.endswith("_rgb") else arr.astype(np.float64)
    return res


def _worker(cfg: dict, jobs, results) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch  # noqa: F401  (keeps thread limits consistent if present)

    try:
        torch.set_num_threads(1)
    except Exception:
        pass
    from .expert import ExpertConfig, run_episode
    from .ood import make_sim_env
    from .tasks import get_task, load_init_states

    spec = get_task(cfg["task"], cfg["condition"], cfg["ood_margin"], cfg["ood_seed"])
    env = make_sim_env(spec.bddl_file, render=True, camera_obs=False, camera_size=cfg["image_size"])
    init_states = load_init_states(spec, cfg["n_init"]) if spec.condition == "ood" else load_init_states(spec)
    ecfg = ExpertConfig(jitter=cfg["noise"], action_noise=cfg["action_noise"], max_steps=cfg["max_steps"])
    try:
        while True:
            job = jobs.get()
            if job is None:
                break
            demo_idx = job
            attempts = []
            kept = None
            for a in range(cfg["max_attempts"]):
                aseed = int(cfg["seed"]) * 1_000_003 + demo_idx * 101 + a
                init_idx = (demo_idx + a * 7) % len(init_states)
                t0 = time.time()
                try:
                    r = run_episode(env, init_states[init_idx], ecfg, seed=aseed)
                except Exception as e:  # a simulator error counts as a failed attempt
                    attempts.append({"success": False, "error": repr(e)})
                    continue
                attempts.append({"success": r.success, "steps": r.steps, "plan_s": time.time() - t0})
                if r.success:
                    kept = (r, init_idx, aseed)
                    break
            payload = {"demo": demo_idx, "attempts": attempts}
            if kept:
                r, init_idx, aseed = kept
                obs = render_replay(env, r.states, cfg["image_size"])
                T = len(r.actions)
                rewards = np.zeros(T, dtype=np.float64)
                rewards[-1] = 1.0
                payload.update(actions=r.actions.astype(np.float64), states=r.states, obs=obs, rewards=rewards,
                               dones=rewards.astype(np.int64), init_state_index=init_idx, attempt_seed=aseed)
            results.put(payload)
    finally:
        env.close()


def _env_args(spec, size: int) -> dict:
    return {"env_name": spec.task_name, "type": 1, "env_kwargs": {
        "bddl_file_name": spec.bddl_file, "robots": ["Panda"], "controller": "OSC_POSE", "control_freq": 20,
        "camera_heights": size, "camera_widths": size, "camera_names": ["agentview", "robot0_eye_in_hand"]},
        "uwmbench": {"suite": spec.suite, "task": spec.task_name, "short": spec.short, "condition": spec.condition,
                     "ood_margin": spec.ood_margin, "ood_seed": spec.ood_seed}}


def _write_demo(f, name: str, p: dict) -> None:
    g = f.create_group(f"data/{name}")
    g.create_dataset("actions", data=p["actions"])
    g.create_dataset("states", data=p["states"])
    g.create_dataset("rewards", data=p["rewards"])
    g.create_dataset("dones", data=p["dones"])
    for k, v in p["obs"].items():
        g.create_dataset(f"obs/{k}", data=v, compression="gzip" if k.endswith("_rgb") else None)
    g.attrs["num_samples"] = len(p["actions"])
    g.attrs["init_state_index"] = int(p["init_state_index"])
    g.attrs["attempt_seed"] = int(p["attempt_seed"])
    f.flush()


def collect(cfg: CollectConfig, progress: bool = True) -> dict:
    import h5py
    from tqdm import tqdm

    from .ood import bddl_info
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
    if spec.condition == "ood":  # generate the OOD init states once, before the workers start
        load_init_states(spec, n_init)

    done: set[int] = set()
    stats = {"attempts": 0, "successes": 0}
    if partial.exists() and cfg.resume:
        with h5py.File(partial, "r") as f:
            done = {int(k.split("_")[1]) for k in f.get("data", {}).keys()}
            stats = json.loads(f["data"].attrs.get("collect_stats", json.dumps(stats)))
    elif partial.exists():
        partial.unlink()
    todo = [i for i in range(cfg.episodes) if i not in done]
    wcfg = {**cfg.__dict__, "n_init": n_init}

    with h5py.File(partial, "a") as f:
        data = f.require_group("data")
        info = bddl_info(Path(spec.bddl_file).read_text())
        data.attrs["env_args"] = json.dumps(_env_args(spec, cfg.image_size))
        data.attrs["problem_info"] = json.dumps({"problem_name": info.problem_name, "domain_name": "robosuite",
                                                 "language_instruction": spec.language})
        data.attrs["bddl_file_name"] = spec.bddl_file
        data.attrs["bddl_file_content"] = Path(spec.bddl_file).read_text()
        failed: list[int] = []
        if todo:
            ctx = mp.get_context("spawn")
            jobs, results = ctx.Queue(), ctx.Queue()
            nw = min(cfg.workers, len(todo))
            for i in todo:
                jobs.put(i)
            for _ in range(nw):
                jobs.put(None)
            procs = [ctx.Process(target=_worker, args=(wcfg, jobs, results), daemon=True) for _ in range(nw)]
            for p in procs:
                p.start()
            bar = tqdm(total=len(todo), desc=f"collect {spec.display_name}/{cfg.condition}", disable=not progress)
            got = 0
            try:
                while got < len(todo):
                    try:
                        p = results.get(timeout=30)
                    except Exception:
                        if not any(pr.is_alive() for pr in procs):
                            raise RuntimeError("collect: all workers exited early (see their errors above)")
                        continue
                    got += 1
                    stats["attempts"] += len(p["attempts"])
                    stats["successes"] += sum(a["success"] for a in p["attempts"])
                    if "actions" in p:
                        _write_demo(f, f"demo_{p['demo']}", p)
                    else:
                        failed.append(p["demo"])
                    data.attrs["collect_stats"] = json.dumps(stats)
                    bar.update(1)
                    bar.set_postfix(success=f"{stats['successes']}/{stats['attempts']}")
            finally:
                bar.close()
                for pr in procs:
                    pr.join(timeout=10)
                    if pr.is_alive():
                        pr.terminate()
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
