"""Evaluator: seeds, JSONL rows, summaries (no simulator) and a real 2-worker LIBERO run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from uwmbench.benchmarks.evaluate import (
    ROLLOUTS_FILE, append_jsonl, evaluate, read_jsonl, rollout_seed, summarize,
)
from uwmbench.methods.base import Method, MethodConfig, build_method, register_method, registered_methods


@register_method
class _ConstantPolicy(Method):
    """A policy with no network: moves the arm slowly forward, gripper open. Records batches."""

    name = "test_constant_policy"
    config_class = MethodConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.batches = []

    def compute_loss(self, batch):
        raise NotImplementedError

    @torch.no_grad()
    def predict_action(self, obs):
        x = obs["obs"]
        assert x.dtype == torch.uint8 and x.shape[1:3] == (len(self.cfg.views), self.cfg.obs_frames)
        self.batches.append(tuple(x.shape))
        a = torch.zeros(x.shape[0], self.cfg.action_horizon, self.cfg.action_dim)
        a[..., 0] = 0.2
        a[..., -1] = -1
        return a


def _tiny_policy():
    if "bc" in registered_methods():
        return build_method("bc", size="tiny")
    return build_method("test_constant_policy")


def test_rollout_seeds_are_stable_and_distinct():
    s = rollout_seed(0, "libero_10/x", "id", 3)
    assert s == rollout_seed(0, "libero_10/x", "id", 3) and 0 <= s < 2 ** 31
    others = {rollout_seed(0, "libero_10/x", "ood", 3), rollout_seed(1, "libero_10/x", "id", 3),
              rollout_seed(0, "libero_10/y", "id", 3), rollout_seed(0, "libero_10/x", "id", 4)}
    assert s not in others and len(others) == 4


def test_jsonl_append_and_torn_last_line(tmp_path):
    p = tmp_path / ROLLOUTS_FILE
    append_jsonl(p, {"a": 1, "success": np.bool_(True), "steps": np.int64(3)})
    append_jsonl(p, {"a": 2, "success": False, "steps": 4})
    with open(p, "a") as f:
        f.write('{"a": 3, "succ')  # a crash mid-line
    rows = read_jsonl(p)
    assert [r["a"] for r in rows] == [1, 2] and rows[0]["success"] is True


def test_summarize():
    import pandas as pd

    df = pd.DataFrame({"method": ["m"] * 4, "task": ["t"] * 4, "condition": ["id", "id", "ood", "ood"],
                       "success": [True, False, True, True], "steps": [10, 20, 5, 5], "wall_time_s": [1.0] * 4})
    s = summarize(df).set_index("condition")
    assert s.loc["id", "success_rate"] == 0.5 and s.loc["ood", "success_rate"] == 1.0 and s.loc["id", "n"] == 2


def test_bad_arguments_fail_early():
    m = build_method("test_constant_policy")
    with pytest.raises(ValueError, match="conditions"):
        evaluate(m, ["book_caddy"], conditions=["train"], n_rollouts=1)
    with pytest.raises(ValueError, match="replan_every=17"):
        evaluate(m, ["book_caddy"], conditions=["id"], n_rollouts=1, replan_every=17)
    with pytest.raises(ValueError, match="obs_frames=3"):
        evaluate(m, ["book_caddy"], conditions=["id"], n_rollouts=1, obs_frames=3)


def test_cli_requires_checkpoint_or_method():
    from uwmbench.cli import main

    assert main(["evaluate", "tasks=[book_caddy]"]) == 2
    assert main(["evaluate", "method=bc", "n_rolouts=3"]) == 2  # misspelt key
    assert main(["evaluate", "method=bc", "method.size=huge"]) == 2


@pytest.mark.libero
def test_two_rollouts_in_two_workers(tmp_path):
    pytest.importorskip("libero.libero")
    method = build_method("test_constant_policy")
    rows = []
    df = evaluate(method, ["book_caddy"], conditions=["id"], n_rollouts=2, seed=0, num_workers=2, max_steps=20,
                  out_dir=tmp_path, row_sink=rows.append,
                  run_meta={"run_id": "r1", "sweep": "s", "cell": "c", "variant": "v", "seed": 7})
    assert len(df) == 2 and len(rows) == 2
    assert sorted(df["episode"]) == [0, 1] and (df["steps"] == 20).all() and (~df["success"]).all()
    assert (df["seed"] == 7).all() and (df["run_id"] == "r1").all() and (df["method"] == "test_constant_policy").all()
    assert df["rollout_seed"].nunique() == 2 and (df["wall_time_s"] > 0).all()
    # chunks of 16 executed open loop: replanning at t=0 and t=16 -> 2 calls per rollout, 2 frames each,
    # and the two workers' requests batched together at least once
    assert (df["n_policy_calls"] == 2).all() and (df["n_renders"] == 2 * 2 * 2).all()
    assert sum(b[0] for b in method.batches) == 4 and max(b[0] for b in method.batches) == 2
    lines = (tmp_path / ROLLOUTS_FILE).read_text().splitlines()
    assert len(lines) == 2
    on_disk = [json.loads(x) for x in lines]
    assert {r["episode"] for r in on_disk} == {0, 1}
    for col in ("run_id", "sweep", "cell", "method", "variant", "task", "condition", "seed", "episode",
                "rollout_seed", "success", "steps", "wall_time_s", "checkpoint"):
        assert col in on_disk[0], col
    # a rerun skips what is done
    method.batches.clear()
    again = evaluate(method, ["book_caddy"], conditions=["id"], n_rollouts=2, seed=0, num_workers=2, max_steps=20,
                     out_dir=tmp_path, run_meta={"run_id": "r1", "sweep": "s", "cell": "c", "variant": "v", "seed": 7})
    assert len(again) == 2 and method.batches == [] and len((tmp_path / ROLLOUTS_FILE).read_text().splitlines()) == 2
