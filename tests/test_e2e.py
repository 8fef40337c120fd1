"""End to end: a policy trained here solves a task (memorisation), through the real pipeline:
scripted demo in LIBERO's official layout -> windows -> trainer -> checkpoint -> evaluator rolled
out from the demo's own start (``init_from``). If a part of the pipeline is wrong (frame
orientation, action units, window alignment), the policy cannot reproduce the demo and the test
fails; ``UWMBENCH_E2E_BREAK=flip|scale|shift|shiftK`` breaks one part on purpose to show that
(flip and scale fail; on this forgiving task a window misaligned by 1 (``shift``) or 4 steps
(``shift4``) still closes the drawer, so misalignment is caught by tests/test_scenes.py instead).
"""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.libero]

TASK = "libero_90:0"        # KITCHEN_SCENE10: close the top drawer of the cabinet (a ~70-step demo)
STEPS = int(os.environ.get("UWMBENCH_E2E_STEPS", "400"))


def _break(path: str, how: str) -> dict:
    """Apply a deliberate pipeline bug; returns extra train-data options."""
    if how == "scale":          # actions in the wrong units
        with h5py.File(path, "r+") as f:
            a = f["data/demo_0/actions"]
            a[...] = a[()] * np.array([0.5] * 6 + [1.0])
    elif how == "shift":        # windows pair frames with the action one step early
        with h5py.File(path, "r+") as f:
            f["data"].attrs["uwmbench_obs_alignment"] = "before_action"
    elif how.startswith("shift") and how[5:].isdigit():   # shiftK: frames paired with actions K steps late
        k = int(how[5:])
        with h5py.File(path, "r+") as f:
            a = f["data/demo_0/actions"]
            x = a[()]
            a[...] = np.concatenate([x[k:], np.repeat(x[-1:], k, axis=0)])
    elif how == "flip":         # the loader shows the policy frames the evaluator does not
        return {"flip_vertical": False}
    elif how:
        raise ValueError(f"UWMBENCH_E2E_BREAK={how!r}: use flip, scale, shift or shiftK (K steps)")
    return {}


def test_trained_policy_reproduces_its_demo(tmp_path, monkeypatch):
    pytest.importorskip("libero.libero")
    monkeypatch.setenv("UWMBENCH_CACHE", str(tmp_path / "cache"))
    from uwmbench.benchmarks.evaluate import EvalOptions, evaluate
    from uwmbench.benchmarks.libero.collect import CollectConfig, collect
    from uwmbench.benchmarks.train import train
    from uwmbench.config import load_config

    demo = tmp_path / "demo.hdf5"
    res = collect(CollectConfig(task=TASK, condition="id", episodes=1, workers=1, out=str(demo), seed=5, noise=0.0,
                                action_noise=0.0, max_steps=300), progress=False)
    assert res["demos"] == 1, res
    data_extra = _break(str(demo), os.environ.get("UWMBENCH_E2E_BREAK", ""))
    flip = data_extra.get("flip_vertical", True)
    cfg = load_config("train", [
        "method=bc", "method.size=small", "method.color_jitter=0.0", f"data.sources=[{{path:'{demo}'}}]", "data.val_fraction=0.0",
        f"data.flip_vertical={str(flip).lower()}", f"trainer.steps={STEPS}", "trainer.batch_size=32",
        "trainer.lr=1e-3", f"trainer.ckpt_every={STEPS}", "trainer.val_every=100000", "trainer.log_every=50",
        "seed=0", f"run_dir={tmp_path / 'run'}"])
    summary = train(cfg)
    opts = EvalOptions(conditions=["id"], n_rollouts=1, workers=0, max_steps=150, flip_vertical=True)
    df = evaluate(str(tmp_path / "run"), [TASK], opts, init_from=str(demo), out_dir=tmp_path / "eval", progress=False)
    assert df.loc[0, "init_source"] == str(demo)
    assert bool(df.loc[0, "success"]), (f"the policy did not reproduce its training demo (final loss "
                                        f"{summary.get('final_loss')}, {int(df.loc[0, 'steps'])} steps)")
