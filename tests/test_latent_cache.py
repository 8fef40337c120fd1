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
        self.pre = enc.pre  # resize / crop size: the cache's crop offsets come from it

    def encode(self, x, **kw):
        self.calls += 1
        return self.enc.encode(x, **kw)

    def fingerprint(self):
        return self.enc.fingerprint()

    def parameters(self):
        return self.enc.parameters()


def tiny_encoder(seed=0):
    torch.manual_seed(seed)
    return LatentEncoder("random:tiny", resize=S, image_size=S)


def latent_method(enc, keys=("obs", "action", "action_mask", "next_obs_latent")):
    cfg = MethodConfig(name="fake", resize=S, image_size=S)
    return types.SimpleNamespace(cfg=cfg, name="fake", batch_keys=lambda cached_latents=True: keys, latent_encoder=CountingEncoder(enc))


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
        def encode(self, x, **kw):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return self.enc.encode(x, **kw)

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

    def batch_keys(self, cached_latents=True):
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
    # the same weights elsewhere (a checkpoint's copy of its VAE) key the same caches
    import shutil
    shutil.copytree(out, tmp_path / "copy")
    assert LatentEncoder(str(tmp_path / "copy"), resize=32, image_size=32).fingerprint() == \
        LatentEncoder(str(out), resize=32, image_size=32).fingerprint()
    assert json.loads((out / "fit_vae.json").read_text())["steps"] == 2


def test_fit_vae_resumes_from_its_partial_state(tmp_path):
    """An interrupted fit continues from its saved state and ends with the same weights as an
    uninterrupted one; the partial file is removed when the model is saved."""
    from safetensors.torch import load_file
    from uwmbench.benchmarks.fit_vae import FitInterrupted, fit_vae
    from test_data import write_indexed_hdf5 as w
    data = w(tmp_path / "frames.hdf5", lengths=(10, 10, 10, 10))
    base = dict(data={"sources": [{"path": data}]}, preset="tiny", steps=6, image_size=32, batch_size=4,
                holdout_fraction=0.25, device="cpu", log_every=100, ckpt_every=2)
    torch.manual_seed(0)
    fit_vae(dict(base, out=str(tmp_path / "whole")), progress=False)
    torch.manual_seed(0)
    with pytest.raises(FitInterrupted):
        fit_vae(dict(base, out=str(tmp_path / "cut"), stop_after=3), progress=False)
    partial = tmp_path / ".cut.partial.pt"
    assert partial.exists() and not (tmp_path / "cut").exists()
    assert torch.load(partial, weights_only=False)["step"] == 3
    torch.manual_seed(123)  # the global RNG is restored from the state, not taken from the caller
    fit_vae(dict(base, out=str(tmp_path / "cut")), progress=False)
    assert not partial.exists()
    a = load_file(str(tmp_path / "whole" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a partial state written with other settings is not used
    with pytest.raises(FitInterrupted):
        fit_vae(dict(base, out=str(tmp_path / "other"), stop_after=2), progress=False)
    r = fit_vae(dict(base, out=str(tmp_path / "other"), batch_size=2), progress=False)
    assert r["batch_size"] == 2 and not (tmp_path / ".other.partial.pt").exists()


# ----------------------------------------------------------------------------- K cached crops
def write_textured_hdf5(path, lengths=(24, 26, 22, 25), seed=0):
    """The indexed layout with random pixels (so that every crop of a frame is different)."""
    write_indexed_hdf5(path, lengths=lengths)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "r+") as f:
        for d in range(len(lengths)):
            for v in ("agentview_rgb", "eye_in_hand_rgb"):
                ds = f[f"data/demo_{d}/obs/{v}"]
                ds[...] = rng.integers(0, 256, ds.shape, dtype=np.uint8)
    return str(path)


def uwm_tiny(**kw):
    from uwmbench.methods import build_method
    torch.manual_seed(0)
    return build_method("uwm", "tiny", color_jitter=0.0, vae_scaling=10.0, **kw)


def test_crop_offsets_fixed_set():
    from uwmbench.methods.nets import crop_offsets
    assert crop_offsets(240, 224, 1) == [(8, 8)]
    assert crop_offsets(240, 224, 5) == [(8, 8), (0, 0), (0, 16), (16, 0), (16, 16)]   # centre + 4 corners
    assert sorted(crop_offsets(240, 224, 9)) == [(y, x) for y in (0, 8, 16) for x in (0, 8, 16)]
    assert crop_offsets(36, 32, 5) == [(2, 2), (0, 0), (0, 4), (4, 0), (4, 4)]
    assert crop_offsets(32, 32, 5) == [(0, 0)]                   # no room to crop: one
    assert len(set(crop_offsets(20, 16, 25))) == 25 and len(crop_offsets(20, 16, 99)) == 25


def test_multi_crop_cache_target_is_the_condition_crop(tmp_path):
    """K=5 cached crops: in a training batch the target latents are the VAE encoding of the
    next frames cropped where the method crops the condition frames (equal to fp16 rounding),
    and the loss equals the on-the-fly path's for the same crops; validation uses the centre."""
    from uwmbench.benchmarks.data import make_loader
    h5 = write_textured_hdf5(tmp_path / "tex.hdf5")
    model = uwm_tiny()
    enc = model.latent_encoder
    cfg = dict(sources=[{"path": h5}], cache_dir=str(tmp_path / "cache"), val_fraction=0.25, latent_crops=5)
    cached = build_datasets(data_config_from(cfg), model)
    fly = build_datasets(data_config_from({**cfg, "latent_cache": False}), model)
    assert cached.train.crop_offsets == [(2, 2), (0, 0), (0, 4), (4, 0), (4, 4)] and fly.train.crop_offsets is None
    bc = next(make_loader(cached.train, 16, seed=3))
    bi = next(make_loader(fly.train, 16, seed=3))
    assert torch.equal(bc["obs"], bi["obs"]) and torch.equal(bc["action"], bi["action"])  # same windows
    off = bc["crop_offset"]
    assert off.shape == (16, 2) and off.dtype == torch.int64 and len(off.unique(dim=0)) >= 3
    assert "crop_offset" not in bi and "next_obs_latent" not in bi

    want = enc.encode(bi["next_obs"], offsets=off)
    torch.testing.assert_close(bc["next_obs_latent"], want, rtol=2e-3, atol=2e-3)     # fp16 storage
    centre = enc.encode(bi["next_obs"])
    moved = (off != 2).any(1)
    assert (bc["next_obs_latent"][moved] - centre[moved]).abs().max() > 0.1           # not the centre crop

    # the method crops the condition frames at the batch's offsets
    seen, noisy = [], []
    fwd, den = model.obs_encoder.forward, model.denoiser.forward
    model.obs_encoder.forward = lambda x, *a, **k: seen.append(x.detach().clone()) or fwd(x, *a, **k)
    model.denoiser.forward = lambda *a: noisy.append(a[3].detach().clone()) or den(*a)
    model.train()
    torch.manual_seed(7)
    loss_c, _ = model.compute_loss(bc)
    torch.testing.assert_close(seen[-1], model.pre(bc["obs"], train=False, offsets=off))
    # the on-the-fly path given the same crops: the same denoiser inputs and loss (no jitter)
    torch.manual_seed(7)
    loss_i, _ = model.compute_loss(dict(bi, crop_offset=off))
    torch.testing.assert_close(seen[-1], seen[-2])
    torch.testing.assert_close(noisy[-1], noisy[-2], rtol=2e-3, atol=2e-3)
    assert torch.allclose(loss_c, loss_i, rtol=1e-4, atol=1e-6), (loss_c, loss_i)

    # validation: the centre crop, always
    bv = next(make_loader(cached.val, 8, seed=0))
    bvi = next(make_loader(fly.val, 8, seed=0))
    assert (bv["crop_offset"] == 2).all()
    torch.testing.assert_close(bv["next_obs_latent"], enc.encode(bvi["next_obs"]), rtol=2e-3, atol=2e-3)


def test_crop_draws_deterministic_and_windows_unchanged(tmp_path):
    """The crop of each sample comes from the step's generator after the window draws: batches
    are a pure function of (seed, step) (resumable), and the windows are those of a K=1 run."""
    from uwmbench.benchmarks.data import StepBatchSampler, make_loader
    h5 = write_textured_hdf5(tmp_path / "tex.hdf5", lengths=(22, 23))
    model = uwm_tiny()
    cfg = dict(sources=[{"path": h5}], cache_dir=str(tmp_path / "cache"), val_fraction=0.0)
    k5 = build_datasets(data_config_from({**cfg, "latent_crops": 5}), model).train
    k1 = build_datasets(data_config_from({**cfg, "latent_crops": 1}), model).train
    assert len(list((tmp_path / "cache").glob("*.h5"))) == 2       # the crops are part of the cache key
    s5, s1 = StepBatchSampler(k5, 32, seed=1), StepBatchSampler(k1, 32, seed=1)
    assert s5.indices(4) == s1.indices(4) and s1.crops(4) is None
    assert s5.crops(4) == StepBatchSampler(k5, 32, seed=1).crops(4) and len(set(s5.crops(4))) > 1
    assert next(iter(s5)) == list(zip(s5.indices(0), s5.crops(0)))
    full = make_loader(k5, 6, seed=2)
    batches = [next(full) for _ in range(4)]
    resumed = make_loader(k5, 6, seed=2, start_step=2)
    for want in batches[2:]:
        got = next(resumed)
        assert all(torch.equal(want[k], got[k]) for k in want)
    workers = make_loader(k5, 6, seed=2, num_workers=2)
    for want in batches:
        got = next(workers)
        assert all(torch.equal(want[k], got[k]) for k in want)
    # K=1: every training sample is the centre crop (condition and target agree, no crop augmentation)
    assert (next(make_loader(k1, 6, seed=2))["crop_offset"] == 2).all()
    with pytest.raises(Exception, match="latent_crops"):
        data_config_from({**cfg, "latent_crops": 0})


def test_old_format_cache_is_rebuilt_or_refused(tmp_path):
    """A format-1 cache (centre crop only, (T, C, h, w), no crop attributes) is never misread:
    the reader refuses it with a message naming the format, build_datasets rebuilds it."""
    from uwmbench.benchmarks.latent_cache import LatentCacheReader
    from uwmbench.benchmarks.data_sources import DataError
    h5 = write_textured_hdf5(tmp_path / "tex.hdf5", lengths=(22, 23))
    cache = tmp_path / "cache"
    cfg = data_config_from(dict(sources=[{"path": h5}], cache_dir=str(cache), val_fraction=0.0, latent_crops=5))
    model = uwm_tiny()
    new = build_datasets(cfg, model)
    (path,) = new.cache_files
    want = new.train[(3, 2)]["next_obs_latent"]
    for d in new.train.datasets:
        d.latents.close()
    # rewrite it as the previous version wrote it, under the same name and key
    with h5py.File(path, "r+") as f:
        del f.attrs["format"], f.attrs["crop_offsets"]
        for ep in list(f["latents"]):
            for v in list(f["latents"][ep]):
                centre = f["latents"][ep][v][:, 0]
                del f["latents"][ep][v]
                f["latents"][ep].create_dataset(v, data=centre)
    reader = LatentCacheReader(path, "k", ["demo_0"], ("agentview_rgb",))
    with pytest.raises(DataError, match="format 1"):
        reader.read("demo_0", "agentview_rgb", 0, 2)
    calls = []
    real = model.latent_encoder.encode
    model.latent_encoder.encode = lambda *a, **k: calls.append(1) or real(*a, **k)
    again = build_datasets(cfg, model)
    assert calls and again.cache_files == [path]                     # rebuilt in place
    with h5py.File(path) as f:
        assert int(f.attrs["format"]) == 2 and f["latents/demo_0/agentview_rgb"].ndim == 5
    np.testing.assert_array_equal(again.train[(3, 2)]["next_obs_latent"], want)
