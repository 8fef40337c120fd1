"""Latent cache (built once, reused, invalidated) and the two commands: cache-latents, fit-vae."""
from __future__ import annotations

import dataclasses
import json
import os
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from uwmbench.benchmarks.data import build_datasets, data_config_from
from uwmbench.methods.base import Method, MethodConfig, register_method
from uwmbench.methods.latent_encoder import LatentEncoder

from test_data import S, write_indexed_hdf5

torch.set_num_threads(1)


class CountingEncoder:
    """Wraps a LatentEncoder and counts encode calls (the cache must not call it on reuse)."""

    def __init__(self, enc):
        self.enc = enc
        self.calls = 0
        self.source = enc.source

    def encode(self, x):
        self.calls += 1
        return self.enc.encode(x)

    def fingerprint(self):
        return self.enc.fingerprint()

    def parameters(self):
        return self.enc.parameters()


def tiny_encoder(seed=0):
    torch.manual_seed(seed)
    return LatentEncoder("random:tiny", resize=S, image_size=S)


def latent_method(enc, keys=("obs", "action", "action_mask", "next_obs_latent")):
    cfg = MethodConfig(name="fake", resize=S, image_size=S)
    return types.SimpleNamespace(cfg=cfg, name="fake", batch_keys=lambda: keys, latent_encoder=CountingEncoder(enc))


def cfg_for(path, cache, **kw):
    return data_config_from({"sources": [{"path": str(path)}], "cache_dir": str(cache), "val_fraction": 0.25,
                             "cache_batch_size": 16, **kw})


@pytest.fixture
def h5(tmp_path):
    return write_indexed_hdf5(tmp_path / "demos.hdf5", lengths=(12, 14, 10, 11))


def test_cache_built_once_and_reused(tmp_path, h5):
    cache = tmp_path / "cache"
    enc = tiny_encoder()
    m1 = latent_method(enc)
    b1 = build_datasets(cfg_for(h5, cache), m1)
    assert m1.latent_encoder.calls > 0
    files = sorted(cache.glob("*.h5"))
    assert len(files) == 1 and b1.cache_files == [str(files[0])]
    x = b1.train[3]
    assert "next_obs_latent" in x and "next_obs" not in x
    assert x["next_obs_latent"].shape == (2, 2, 4, S // 8, S // 8)
    # the cache covers train and val episodes: one file, both splits read it
    assert b1.val is not None and "next_obs_latent" in b1.val[0]

    m2 = latent_method(enc)
    b2 = build_datasets(cfg_for(h5, cache), m2)
    assert m2.latent_encoder.calls == 0                      # reused, the encoder never ran
    assert sorted(cache.glob("*.h5")) == files
    np.testing.assert_array_equal(b2.train[3]["next_obs_latent"], x["next_obs_latent"])

    # cached latents are the encoder's output on the same frames (fp16 storage)
    m_img = latent_method(enc)
    b_img = build_datasets(cfg_for(h5, cache, latent_cache=False), m_img)
    y = b_img.train[3]
    assert "next_obs" in y and "next_obs_latent" not in y      # exact on-the-fly path: images
    want = enc.encode(torch.from_numpy(y["next_obs"])).numpy()
    np.testing.assert_allclose(x["next_obs_latent"].astype(np.float32), want, rtol=2e-3, atol=2e-3)
    assert m_img.latent_encoder.calls == 0

    # the batch converts float16 latents to float32
    from uwmbench.benchmarks.data import make_loader
    batch = next(make_loader(b2.train, 4, seed=0))
    assert batch["next_obs_latent"].dtype == torch.float32 and batch["next_obs_latent"].shape == (4, 2, 2, 4, 4, 4)
    with h5py.File(files[0]) as f:
        assert f["latents/demo_0/agentview_rgb"].dtype == np.float16
        assert f.attrs["complete"] and json.loads(f.attrs["meta"])["episodes"] == 4


def test_obs_latent_and_padding(tmp_path, h5):
    enc = tiny_encoder()
    m = latent_method(enc, keys=("obs", "action", "action_mask", "obs_latent", "next_obs_latent"))
    b = build_datasets(cfg_for(h5, tmp_path / "c", val_fraction=0.0), m)
    ds = b.train.datasets[0]
    last = len(ds) - 1
    x = ds[last]
    ep, s = ds.locate(last)
    want_obs = enc.encode(torch.from_numpy(x["obs"])).numpy()
    np.testing.assert_allclose(x["obs_latent"].astype(np.float32), want_obs, rtol=2e-3, atol=2e-3)
    # past the episode end, next latents repeat the last frame's latent
    np.testing.assert_array_equal(x["next_obs_latent"][:, 0], x["next_obs_latent"][:, 1])
    np.testing.assert_array_equal(x["next_obs_latent"][:, 0], x["obs_latent"][:, 1])


def test_cache_invalidated_by_file_and_encoder(tmp_path, h5):
    cache = tmp_path / "cache"
    enc = tiny_encoder(0)
    build_datasets(cfg_for(h5, cache), latent_method(enc))
    assert len(list(cache.glob("*.h5"))) == 1

    # same bytes, new mtime -> new key
    st = os.stat(h5)
    os.utime(h5, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    m = latent_method(enc)
    build_datasets(cfg_for(h5, cache), m)
    assert m.latent_encoder.calls > 0 and len(list(cache.glob("*.h5"))) == 2

    # changed content
    write_indexed_hdf5(h5, lengths=(12, 14, 10, 11, 9))
    m = latent_method(enc)
    b = build_datasets(cfg_for(h5, cache), m)
    assert m.latent_encoder.calls > 0 and len(list(cache.glob("*.h5"))) == 3
    assert b.train.num_episodes + (b.val.num_episodes if b.val else 0) == 5

    # different encoder weights -> different fingerprint -> rebuilt
    m = latent_method(tiny_encoder(1))
    build_datasets(cfg_for(h5, cache), m)
    assert m.latent_encoder.calls > 0 and len(list(cache.glob("*.h5"))) == 4

    # different episode selection or orientation -> rebuilt; unchanged -> reused
    m = latent_method(enc)
    build_datasets(cfg_for(h5, cache, flip_vertical=False), m)
    assert m.latent_encoder.calls > 0
    m = latent_method(enc)
    build_datasets(cfg_for(h5, cache, flip_vertical=False), m)
    assert m.latent_encoder.calls == 0


def test_interrupted_build_leaves_no_cache(tmp_path, h5):
    class Boom(CountingEncoder):
        def encode(self, x):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return self.enc.encode(x)

    cache = tmp_path / "cache"
    m = latent_method(tiny_encoder())
    m.latent_encoder = Boom(m.latent_encoder.enc)
    with pytest.raises(KeyboardInterrupt):
        build_datasets(cfg_for(h5, cache, cache_batch_size=8), m)
    assert not list(cache.glob("*.h5")) and not list(cache.glob("*.tmp-*"))
    m = latent_method(m.latent_encoder.enc)
    build_datasets(cfg_for(h5, cache), m)
    assert m.latent_encoder.calls > 0 and len(list(cache.glob("*.h5"))) == 1


def _build_in_child(args):
    h5, cache, q = args
    m = latent_method(tiny_encoder(0))
    build_datasets(cfg_for(h5, cache), m)
    q.put(m.latent_encoder.calls)


def test_concurrent_builders_encode_once(tmp_path, h5):
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ps = [ctx.Process(target=_build_in_child, args=((h5, str(tmp_path / "c"), q),)) for _ in range(3)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(120)
    calls = sorted(q.get(timeout=5) for _ in ps)
    assert calls[0] == calls[1] == 0 and calls[2] > 0, calls   # one process encoded, two waited and reused
    assert len(list((tmp_path / "c").glob("*.h5"))) == 1


# ----------------------------------------------------------------------------- CLI: cache-latents
@dataclasses.dataclass
class FakeLatentConfig(MethodConfig):
    vae: str = "random:tiny"


@register_method
class FakeLatentMethod(Method):
    """Smallest registered method with a latent encoder (for the cache-latents command)."""
    name = "fake_latent_test"
    config_class = FakeLatentConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.latent_encoder = LatentEncoder(cfg.vae, cfg.resize, cfg.image_size)
        self.head = torch.nn.Linear(1, 1)

    def batch_keys(self):
        return ("obs", "action", "action_mask", "next_obs_latent")


def test_cache_latents_command(tmp_path, h5, capsys):
    from uwmbench.cli import main as cli
    cache = tmp_path / "cache"
    args = ["cache-latents", "method.name=fake_latent_test", "method.resize=32", "method.image_size=32",
            f"data.sources=[{{path:'{h5}'}}]", f"data.cache_dir='{cache}'"]
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "built" in out and str(cache) in out
    files = list(cache.glob("*.h5"))
    assert len(files) == 1
    assert cli(args) == 0
    assert "reused" in capsys.readouterr().out
    # the trainer path (same seed, same method config) finds the same cache and does not encode
    from uwmbench.methods.base import build_method
    torch.manual_seed(0)
    m = build_method("fake_latent_test", resize=32, image_size=32)
    calls = []
    real = m.latent_encoder.encode
    m.latent_encoder.encode = lambda x: calls.append(1) or real(x)
    b = build_datasets(data_config_from({"sources": [{"path": h5}], "cache_dir": str(cache)}), m)
    assert not calls and b.cache_files == [str(files[0])]
    # a bad override is a config error, not a traceback
    assert cli(["cache-latents", "method.name=fake_latent_test", "data.sources=[{path:x,bogus:1}]"]) == 2


# ----------------------------------------------------------------------------- CLI: fit-vae
def test_fit_vae_command(tmp_path, capsys):
    from uwmbench.cli import main as cli
    from test_data import write_indexed_hdf5 as w
    data = w(tmp_path / "frames.hdf5", lengths=(10, 10, 10, 10, 10))
    out = tmp_path / "vae"
    args = ["fit-vae", f"data.sources=[{{path:'{data}'}}]", f"out='{out}'", "preset=tiny", "steps=6",
            "image_size=32", "batch_size=8", "holdout_fraction=0.2", "device=cpu", "log_every=2"]
    assert cli(args) == 0
    printed = capsys.readouterr().out
    assert "held-out reconstruction PSNR" in printed and "dB" in printed
    rep = json.loads((out / "fit_vae.json").read_text())
    assert np.isfinite(rep["psnr_holdout_db"]) and rep["holdout_episodes"] == 1 and rep["train_episodes"] == 4
    assert rep["holdout_frames"] == 10 * 2  # every frame of the held-out episode, both views
    cfgj = json.loads((out / "config.json").read_text())
    assert cfgj["scaling_factor"] == pytest.approx(rep["scaling_factor"])
    enc = LatentEncoder(str(out), resize=32, image_size=32, extra_scale=1.0)
    frames = torch.from_numpy(np.zeros((3, 3, 32, 32), np.uint8))
    z = enc.encode(frames)
    assert z.shape == (3, 4, 4, 4) and enc.decode(z).shape == (3, 3, 32, 32)
    assert not list(tmp_path.glob(".vae.tmp-*"))
    # rerunning replaces the folder atomically; the encoder fingerprint changes -> caches rebuild
    fp = enc.fingerprint()
    assert cli(args[:-1] + ["steps=2"]) == 0
    assert LatentEncoder(str(out), resize=32, image_size=32).fingerprint() != fp
    assert json.loads((out / "fit_vae.json").read_text())["steps"] == 2
