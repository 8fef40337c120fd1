"""Diagnostics (``uwmbench diagnose``), the small presets, videos and diagnostics in the report.
No simulator: the first-observation check runs in tests/test_scenes.py (it needs LIBERO)."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import product_methods
from test_data import dcfg, write_indexed_hdf5
from uwmbench.benchmarks.data import build_datasets
from uwmbench.benchmarks.diagnose import open_loop_error
from uwmbench.methods.base import Method, MethodConfig, build_method, make_config, register_method, registered_methods


@register_method
class _LookupPolicy(Method):
    """Returns the chunk stored for the window whose pixels it sees (+ ``bias`` on dim 0)."""

    name = "test_lookup_policy"
    config_class = MethodConfig
    table: dict = {}
    bias = 0.0

    def compute_loss(self, batch):
        raise NotImplementedError

    def predict_action(self, obs):
        x = obs["obs"]                                       # (B, V, To, 3, H, W); ch0 = t, ch1 = demo
        out = []
        for i in range(x.shape[0]):
            t, d = int(x[i, 0, -1, 0, 5, 5]), int(x[i, 0, -1, 1, 5, 5])
            a = torch.as_tensor(self.table[(d, t)]).clone()
            a[:, 0] += self.bias
            out.append(a)
        return torch.stack(out)


@pytest.fixture
def windows(tmp_path):
    path = write_indexed_hdf5(tmp_path / "d.hdf5", lengths=(30, 30, 30))
    m = build_method("test_lookup_policy")
    ds = build_datasets(dcfg({"path": path}), m).train
    table = {}
    for i in range(len(ds)):
        w = ds[i]
        table[(int(w["obs"][0, -1, 0, 5, 5]), int(w["obs"][0, -1, 1, 5, 5]))] = w["action"]
    table = {(d, t): a for (t, d), a in table.items()}
    _LookupPolicy.table = table
    return m, ds


def test_open_loop_error_is_zero_for_the_demo_and_measures_a_bias(windows):
    m, ds = windows
    m.bias = 0.0
    rows, s = open_loop_error(m, ds, n_windows=20, batch_size=7, split="train")
    assert s["windows"] == 20 and len(rows) == m.cfg.action_horizon
    assert s["err_pos"] == 0.0 and s["err_rot"] == 0.0 and s["grip_sign_agree"] == 1.0
    m.bias = 0.3                                            # dim 0 off by 0.3 at every chunk step
    rows, s = open_loop_error(m, ds, n_windows=20, batch_size=7, split="train")
    assert all(abs(r["err_pos"] - 0.1) < 1e-6 for r in rows)   # 0.3 / 3 position dims
    assert abs(s["err_per_dim"][0] - 0.3) < 1e-6 and s["err_per_dim"][1] == 0.0
    assert s["abs_pos"] > 0 and abs(s["rel_err_pos"] - 0.1 / s["abs_pos"]) < 1e-6


def test_every_method_has_a_small_preset_for_a_cpu():
    for name in product_methods():
        cls = registered_methods()[name]
        cfg = make_config(name, "small", cls.offline_overrides("small"))
        assert (cfg.resize, cfg.image_size) == (72, 64), name
        with torch.device("meta"):
            trainable, _ = cls(cfg).parameter_counts()
        assert 1e6 < trainable < 2e7, (name, trainable)     # learns on a 2-core CPU, not a toy


def test_methods_table_with_speed_columns():
    from uwmbench.benchmarks.methods_cli import format_table

    rows = [dict(method="a", size="small", trainable=10, frozen=0, ratio_to_uwm=1.0, capabilities=["policy"],
                 train_steps_per_s=3.5, policy_ms=12.0, speed_batch=32, speed_device="cpu x2 threads")]
    text = format_table(rows)
    lines = text.splitlines()
    assert "train steps/s (batch 32, cpu x2 threads)" in lines[0] and lines[2].endswith("| 3.5 | 12.0 |")
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")


def test_report_shows_diagnostics_and_copies_videos(tmp_path):
    from uwmbench.analysis.report import make_report

    run = tmp_path / "store" / "runs" / "r1"
    (run / "diagnostics" / "book_caddy").mkdir(parents=True)
    (run / "diagnostics" / "book_caddy" / "summary.json").write_text(json.dumps({
        "method": "bc", "open_loop": [{"split": "train", "windows": 8, "err_pos": 0.05, "abs_pos": 0.5, "err_rot": 0.01,
                                       "abs_rot": 0.02, "grip_sign_agree": 0.97}],
        "first_obs": [{"demo": "demo_0", "identical_pixels": 1.0, "mean_abs_diff": 0.0, "next_action_equal": True}]}))
    vid = tmp_path / "v" / "book_caddy_id_ep000_success.mp4"
    vid.parent.mkdir()
    vid.write_bytes(b"not really an mp4")
    rows = [dict(run_id="r1", method="bc", task="book_caddy", condition="id", seed=0, episode=e, rollout_seed=e,
                 success=e == 0, sweep="main", video=str(vid) if e == 0 else "") for e in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "store" / "rollouts.csv", index=False)
    index = make_report(tmp_path / "store", tmp_path / "report", n_boot=100, n_perm=100)
    md = index.with_name("index.md").read_text()
    assert "## Diagnostics" in md and "| r1 | bc | book_caddy | train | 8 |" in md
    assert "## Rollout videos" in md and "episode 0 (success)" in md
    copied = list((tmp_path / "report" / "videos").rglob("*.mp4"))
    assert len(copied) == 1 and copied[0].read_bytes() == vid.read_bytes()


def test_report_videos_of_two_variants_keep_their_own_files(tmp_path):
    """Two runs of one method (variants) write videos under the same file name: the report keeps
    one copy per run, links each under its own variant, and never lists a file twice."""
    from uwmbench.analysis.report import make_report

    rows = []
    for run, variant, payload in (("dp", "", b"open loop"), ("dp-replan4", "replan4", b"replan every 4")):
        vid = tmp_path / run / "videos" / "book_caddy_id_ep000_fail.mp4"
        vid.parent.mkdir(parents=True)
        vid.write_bytes(payload)
        rows += [dict(run_id=run, method="dp", variant=variant, task="book_caddy", condition="id", seed=0,
                      episode=e, rollout_seed=e, success=False, sweep="main", video=str(vid) if e == 0 else "")
                 for e in range(2)]
    (tmp_path / "store").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "store" / "rollouts.csv", index=False)
    index = make_report(tmp_path / "store", tmp_path / "report", n_boot=50, n_perm=50)
    md = index.with_name("index.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("- DP")]
    assert len(lines) == 2, md
    plain, replan = sorted(lines, key=len)
    assert plain.startswith("- DP / book_caddy / ID:") and replan.startswith("- DP [replan4] / book_caddy / ID:")
    for line, payload in ((plain, b"open loop"), (replan, b"replan every 4")):
        links = re.findall(r"\]\(([^)]+)\)", line)
        assert len(links) == 1, line
        assert (tmp_path / "report" / links[0]).read_bytes() == payload


def test_markdown_table_of_records_and_frames():
    from uwmbench.fileio import markdown_table

    rows = [dict(run="a", err=0.123456, n=3), dict(run="b", err=np.float64(2.0), missing=None)]
    assert markdown_table(rows).splitlines() == [
        "| run | err | n | missing |", "|---|---|---|---|", "| a | 0.123 | 3 |  |", "| b | 2 |  |  |"]
    df = pd.DataFrame({"b": [1.5, 1254.9], "a": ["x", "y"]})          # column order kept, not sorted
    assert markdown_table(df, None).splitlines()[2:] == ["| 1.5 | x |", "| 1254.9 | y |"]
    assert markdown_table(df, "{:.3f}").splitlines()[0] == "| b | a |"
    assert markdown_table(df, "{:.3f}").splitlines()[3] == "| 1254.900 | y |"
    assert markdown_table([]) == "(no rows)"
