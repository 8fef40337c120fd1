"""``uwmbench replay-check FILE [FILE ...] [seeds=0,1,2] [demos=5] [first_obs=3]``: is a demo file
reproducible, and is evaluation independent of what ran before?

For every file (LIBERO's own or ``uwmbench collect`` output) and each of its first ``demos``
demos, the demo's scene is restored under each reset ``seed`` and the demo's actions are
replayed, twice: from ``uwmbench_scene`` (exact, when present) and from what LIBERO's layout
alone holds (``init_state`` and the fixture poses of ``model_file``; ``official_only=true`` for
just that one):
the table says how often LIBERO's success check accepts the end state, how often every replayed
state equals the stored one bit for bit, and the largest state difference.

With ``first_obs=K`` it also checks evaluation scenes of the file's task: for episodes 0..K-1
(benchmark init state k, fixtures drawn from episode k's rollout seed) the first observation of
episode k in a fresh env is compared with the one it gets after episodes 0..k-1 ran in the same
env. Prints a Markdown table; ``out=DIR`` also writes it as CSV and Markdown.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from uwmbench.fileio import atomic_write_text, markdown_table


def _task_of(f) -> tuple[str, str]:
    """(task name for get_task, condition) from a file's attributes."""
    data = f["data"].attrs
    if "uwmbench_task" in data:
        t = json.loads(data["uwmbench_task"])
        return (t.get("short") or f"{t['suite']}/{t['task']}"), t.get("condition", "id")
    bddl = data.get("bddl_file_name")
    if bddl is None:
        raise ValueError("no attribute data.bddl_file_name: cannot tell the task")
    bddl = bddl.decode() if isinstance(bddl, bytes) else str(bddl)
    p = Path(bddl)
    return f"{p.parent.name}/{p.stem}", "id"


def replay_file(path: str, seeds=(0, 1, 2), demos: int = 5, exact: bool = True) -> dict:
    import h5py

    from .envs import LiberoEnv
    from .scene import scene_from_demo
    from .tasks import get_task

    with h5py.File(path, "r") as f:
        task, cond = _task_of(f)
        spec = get_task(task, cond)
        names = sorted(f["data"].keys(), key=lambda k: int(k.split("_")[-1]))[:demos]
        ok = identical = runs = 0
        max_err = 0.0
        with LiberoEnv(spec, obs_frames=1, replan_every=1, max_steps=10 ** 6, settle_steps=0) as env:
            for name in names:
                g = f["data"][name]
                actions, states = g["actions"][()], g["states"][()]
                scene = scene_from_demo(g, env._rs, f"{path} data/{name}", exact=exact)
                for seed in seeds:
                    env.reset(init_state=scene, seed=int(seed), settle_steps=0)
                    err = 0.0
                    for j, a in enumerate(actions):
                        err = max(err, float(np.abs(env.sim_state()[1:] - states[j][1:]).max()))
                        env.sim_step(a)
                    runs += 1
                    ok += int(env.check_success())
                    identical += int(err == 0.0)
                    max_err = max(max_err, err)
    return {"file": Path(path).name, "task": task, "condition": cond,
            "scene": "uwmbench_scene" if exact else "model_file + init_state", "demos": len(names), "seeds": len(seeds),
            "replay_success": f"{ok}/{runs}", "bit_identical": f"{identical}/{runs}", "max_state_err": max_err}


def first_obs_check(task: str, condition: str = "id", episodes: int = 3, seed: int = 0) -> dict:
    from uwmbench.benchmarks.evaluate import rollout_seed
    from .envs import LiberoEnv
    from .tasks import get_task

    spec = get_task(task, condition)
    seeds = [rollout_seed(seed, spec.key, condition, k) for k in range(episodes)]
    after = []
    with LiberoEnv(spec) as shared:             # episodes 0..K-1 one after the other in one env
        for k in range(episodes):
            after.append(shared.reset(init_state=k, seed=seeds[k]))
            for _ in range(3):                   # leave some state behind
                shared.step(np.array([0.4, -0.2, 0.1, 0, 0, 0, 1.0]))
    same, diffs = 0, []
    for k in range(episodes):                    # episode k alone, in a fresh env (one GL context at a time)
        with LiberoEnv(spec) as fresh:
            alone = fresh.reset(init_state=k, seed=seeds[k])
        same += int(np.array_equal(alone, after[k]))
        diffs.append(float(np.abs(alone.astype(int) - after[k].astype(int)).mean()))
    return {"task": task, "condition": condition, "episodes": episodes, "first_obs_identical": f"{same}/{episodes}",
            "max_mean_abs_diff": max(diffs)}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    files = [a for a in argv if "=" not in a]
    kv = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = sorted(set(kv) - {"seeds", "demos", "first_obs", "out", "official_only"})
    if unknown:
        from uwmbench.config import ConfigError
        raise ConfigError(f"replay-check: unknown option(s) {unknown}; options: seeds, demos, first_obs, out, official_only")
    seeds = [int(x) for x in kv.get("seeds", "0,1,2").split(",")]
    demos, k = int(kv.get("demos", 5)), int(kv.get("first_obs", 0))
    rows, first = [], []
    for p in files:
        if not Path(p).is_file():
            from uwmbench.benchmarks.data_sources import DataError
            raise DataError(f"{p}: no such file")
        for exact in ((False,) if kv.get("official_only", "false").lower() == "true" else (True, False)):
            rows.append(replay_file(p, seeds, demos, exact=exact))
            print(f"replay-check: {rows[-1]}", file=sys.stderr, flush=True)
        if k:
            first.append(first_obs_check(rows[-1]["task"], rows[-1]["condition"], k))
            print(f"replay-check: {first[-1]}", file=sys.stderr, flush=True)
    text = markdown_table(rows) + ("\n\n" + markdown_table(first) if first else "")
    print(text)
    if "out" in kv:
        import pandas as pd

        out = Path(kv["out"])
        atomic_write_text(out / "replay_check.md", text + "\n")
        atomic_write_text(out / "replay_check.csv", pd.DataFrame(rows).to_csv(index=False))
        if first:
            atomic_write_text(out / "first_obs_check.csv", pd.DataFrame(first).to_csv(index=False))
    return 0
