"""``uwmbench perf eval``'s summary of repeated, interleaved rounds (no simulator: the runs are given)."""
from __future__ import annotations

import pandas as pd

from uwmbench.benchmarks.perf import summarize


def test_summary_takes_each_variants_median_run_and_the_median_per_round_speedup():
    steps = {"serial_full": [10.0, 5.0, 9.0], "pool_lazy": [100.0, 60.0, 95.0]}  # round 1 ran slow for both
    runs = pd.DataFrame([{"round": r, "variant": v, "env_steps_per_s": steps[v][r], "wall_s": 1000 / steps[v][r]}
                         for r in range(3) for v in steps])
    ref = runs[runs.variant == "serial_full"].set_index("round")["env_steps_per_s"]
    runs["speedup"] = (runs["env_steps_per_s"] / runs["round"].map(ref)).round(2)
    table = summarize(runs)
    assert list(table["variant"]) == ["serial_full", "pool_lazy"] and list(table["rounds"]) == [3, 3]
    pool = table[table.variant == "pool_lazy"].iloc[0]
    assert pool["env_steps_per_s"] == 95.0                      # the median run, not a mean
    assert pool["speedup"] == 10.56                             # median of 10.0, 12.0, 10.56
    assert (pool["speedup_min"], pool["speedup_max"]) == (10.0, 12.0)
    assert "round" not in table
    one = summarize(runs[runs["round"] == 0].drop(columns="speedup"))
    assert list(one["env_steps_per_s"]) == [10.0, 100.0] and "speedup" not in one


def test_perf_train_counts_the_flops_of_a_training_step():
    """step_flops counts forward + backward of compute_loss: for one Linear(in, out) on a batch of
    B, 2*B*in*out forward and twice that backward (input and weight gradients)."""
    import torch

    from uwmbench.benchmarks.perf_train import matmul_peak_gflops, step_flops

    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(64, 32)

        def compute_loss(self, batch):
            return self.lin(batch["x"]).square().mean(), {}

    batch = {"x": torch.randn(16, 64, requires_grad=True)}
    assert step_flops(Lin(), batch) == 3 * 2 * 16 * 64 * 32
    assert matmul_peak_gflops(torch.device("cpu"), n=128, reps=3) > 0
