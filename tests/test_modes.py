"""``uwmbench modes``: every inference mode on held-out windows beside its baseline.

A method that knows the answer scores 0 error where a baseline does not; the mean-action baseline
equals its hand computation; a tiny UWM trained here gets a number for every mode, from its own
validation split, with the files the report shows."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_data import dcfg, write_indexed_hdf5
from uwmbench.benchmarks.data import build_datasets, collate
from uwmbench.benchmarks.modes import format_modes, measure_loaded, measure_modes
from uwmbench.methods.base import Method, MethodConfig, build_method, register_method


@register_method
class _OracleInverse(Method):
    """Policy and inverse dynamics that read the answer from the pixels (channel 0 = frame index,
    channel 1 = demo; actions[t] = [t, demo, 0.1 t, ...]): zero error by construction."""

    name = "test_oracle_inverse"
    config_class = MethodConfig
    capabilities = frozenset({"policy", "inverse_dynamics"})

    def compute_loss(self, batch):
        raise NotImplementedError

    def batch_keys(self, cached_latents=True):
        return {"obs", "action", "action_mask", "next_obs"}

    def _chunk(self, x):
        t = x[:, 0, -1, 0, 5, 5].float()                    # last observed frame index
        d = x[:, 0, -1, 1, 5, 5].float()
        steps = t[:, None] + 1 + torch.arange(self.cfg.action_horizon)[None]   # the actions after frame t
        a = torch.zeros(x.shape[0], self.cfg.action_horizon, self.cfg.action_dim)
        a[..., 0], a[..., 1], a[..., 2] = steps, d[:, None], 0.1 * steps
        return a

    def predict_action(self, obs):
        return self._chunk(obs["obs"])

    def infer_action(self, obs, next_obs):
        return self._chunk(obs["obs"])


def test_mode_numbers_against_their_baselines(tmp_path):
    path = write_indexed_hdf5(tmp_path / "d.hdf5", lengths=(40, 40), alignment=None)
    m = build_method("test_oracle_inverse")
    ds = build_datasets(dcfg({"path": path}), m).train
    idx = list(range(0, 20, 2))                               # chunks inside the episode (no end padding)
    batches = [collate([ds[i] for i in idx[:5]]), collate([ds[i] for i in idx[5:]])]
    res = measure_loaded(m, batches, tmp_path / "modes", where="test windows")
    n = res["numbers"]
    assert res["modes"] == ["inverse_dynamics", "policy"]
    assert n["policy/rel_err_pos"] == pytest.approx(0.0, abs=1e-6)
    assert n["inverse_dynamics/rel_err_pos"] == pytest.approx(0.0, abs=1e-6)
    # the mean-action baseline by hand: every window predicted with the mean action of all windows
    a = torch.cat([b["action"] for b in batches])
    mean = a.reshape(-1, a.shape[-1]).mean(0)
    by_batch = [float((mean[:3] - b["action"][..., :3]).abs().mean() / b["action"][..., :3].abs().mean())
                for b in batches]
    want = (by_batch[0] * 5 + by_batch[1] * 5) / 10
    assert n["policy/mean_action_rel_err_pos"] == pytest.approx(want, rel=1e-5) and want > 0.1
    assert json.loads((tmp_path / "modes" / "modes.json").read_text())["numbers"] == n
    text = "\n".join(format_modes(res))
    assert "mean-action baseline" in text and "forward dynamics" not in text   # only the declared modes


def test_tiny_uwm_gets_a_number_for_every_mode(tmp_path):
    from uwmbench.benchmarks.train import train
    from uwmbench.config import load_config

    path = write_indexed_hdf5(tmp_path / "d.hdf5", lengths=(30, 30, 30), alignment=None)
    run = tmp_path / "run"
    train(load_config("train", ["method=uwm", "method.size=tiny", f"data.sources=[{{path:'{path}'}}]",
                                "data.val_fraction=0.34", "data.latent_cache=false", "trainer.steps=4",
                                "trainer.batch_size=4", "trainer.ckpt_every=4", "trainer.val_every=0",
                                "trainer.progress=false", f"run_dir={run}"]))
    res = measure_modes(run, tmp_path / "modes", n_windows=12)
    assert res["modes"] == ["forward_dynamics", "inverse_dynamics", "policy", "video_prediction"]
    assert "validation episodes" in res["windows"]                 # the run's own held-out split
    n = res["numbers"]
    for k in ("forward_dynamics/psnr", "forward_dynamics/copy_last_psnr", "forward_dynamics/latent_mse",
              "forward_dynamics/copy_last_latent_mse", "video_prediction/psnr", "inverse_dynamics/rel_err_pos",
              "inverse_dynamics/mean_action_rel_err_pos", "policy/rel_err_pos"):
        assert np.isfinite(n[k]), k
    for f in ("forward_dynamics.npz", "video_prediction.npz", "video_prediction.gif", "modes.json"):
        assert (tmp_path / "modes" / f).is_file(), f
    with np.load(tmp_path / "modes" / "forward_dynamics.npz") as z:
        assert z["pred"].shape == z["true"].shape and z["pred"].dtype == np.uint8
    # a run trained without a validation split needs held-out files
    run2 = tmp_path / "run2"
    train(load_config("train", ["method=uwm", "method.size=tiny", f"data.sources=[{{path:'{path}'}}]",
                                "data.val_fraction=0.0", "data.latent_cache=false", "trainer.steps=1",
                                "trainer.batch_size=2", "trainer.ckpt_every=1", "trainer.val_every=0",
                                "trainer.progress=false", f"run_dir={run2}"]))
    with pytest.raises(ValueError, match="no validation split"):
        measure_modes(run2, tmp_path / "m2")
    assert measure_modes(run2, tmp_path / "m2", data=[path], n_windows=4)["numbers"]
