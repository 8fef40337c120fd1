"""Method-specific tests of the baselines (DP, PAD, GR1) and the BC worked example, at the
``tiny`` size on CPU; paper-size parameter counts are checked on the meta device (no memory,
no init cost) against the public models' counts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from uwmbench.methods import (ACTION_FREE, POLICY, VIDEO_PREDICTION, CapabilityError, build_method, get_method_class,
                              make_config)

BASELINES = ("dp", "pad", "gr1", "bc")


def tiny(name, **kw):
    torch.manual_seed(0)
    m = build_method(name, "tiny", **kw)
    return m


def loss_at(m, batch, seed=123):
    torch.manual_seed(seed)
    return m.compute_loss(batch)


# ----------------------------------------------------------------------------- declarations, configs
def test_capabilities_are_the_papers():
    assert get_method_class("dp").capabilities == {POLICY}
    assert get_method_class("bc").capabilities == {POLICY}
    assert get_method_class("pad").capabilities == {POLICY, VIDEO_PREDICTION, ACTION_FREE}
    assert get_method_class("gr1").capabilities == {POLICY, VIDEO_PREDICTION, ACTION_FREE}


@pytest.mark.parametrize("name", BASELINES)
def test_config_file_and_presets(name):
    from uwmbench.config import load_config
    y = OmegaConf.to_container(load_config("train", [f"method={name}"]).method)  # generated from the config class
    assert y["name"] == name and y["size"] is None and all(v is None for k, v in y.items() if k != "name")
    cfg = make_config(name, y["size"])
    assert cfg.size == "paper"
    assert cfg.name == name and cfg.action_horizon == 16 and cfg.image_size == 224
    t = make_config(name, "tiny")
    assert t.image_size == 32 and t.resize == 36
    with pytest.raises(KeyError, match="not_a_key"):
        make_config(name, "tiny", {"not_a_key": 1})


@pytest.mark.parametrize("name", BASELINES)
def test_batch_keys(name):
    keys = tiny(name).batch_keys()
    assert {"obs", "action", "action_mask"} <= set(keys)
    if name == "pad":
        assert {"obs_latent", "next_obs_latent"} <= set(keys)
        assert "next_obs" in tiny(name, augment_latents=True).batch_keys()
    if name == "gr1":
        assert "next_obs" in keys


# ----------------------------------------------------------------------------- training signal
@pytest.mark.parametrize("name,action_free", [("dp", 0), ("bc", 0), ("pad", 2), ("gr1", 2)])
def test_tiny_loss_finite_and_decreasing(name, action_free, tiny_batch):
    torch.set_num_threads(1)
    m = tiny(name)
    batch = tiny_batch(m, b=4, action_free=action_free)
    m.train()
    loss, terms = loss_at(m, batch)
    assert torch.isfinite(loss) and loss.ndim == 0 and set(terms) >= {"loss"}

    def mean_loss():  # a diffusion loss at one noise draw is noisy: average a few fixed draws
        with torch.no_grad():
            return sum(loss_at(m, batch, seed=500 + s)[0].item() for s in range(4)) / 4
    loss0 = mean_loss()
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-3)
    for i in range(25):
        loss, _ = loss_at(m, batch, seed=i)
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1 = mean_loss()
    assert loss1 < 0.9 * loss0, f"{name}: {loss0:.4f} -> {loss1:.4f}"


@pytest.mark.parametrize("name", BASELINES)
def test_predict_action_shape(name, tiny_batch):
    m = tiny(name).eval()
    a = m.predict_action({"obs": tiny_batch(m, b=3)["obs"]})
    assert a.shape == (3, 16, 7) and torch.isfinite(a).all()


# ----------------------------------------------------------------------------- DP / BC
@pytest.mark.parametrize("name", ["dp", "bc"])
def test_policy_only_methods_refuse_action_free(name, tiny_batch):
    m = tiny(name)
    with pytest.raises(CapabilityError, match="action-free"):
        m.compute_loss(tiny_batch(m, action_free=1))
    with pytest.raises(CapabilityError):
        m.predict_next_obs({"obs": tiny_batch(m)["obs"]})


def test_dp_denoiser_uses_observation_and_timestep(tiny_batch):
    m = tiny("dp").eval()
    for p in m.parameters():  # AdaLN-Zero starts as the identity; perturb so the check means something
        p.data.add_(torch.randn_like(p) * 0.02)
    b = tiny_batch(m, b=2)
    f = m.encode_obs(b["obs"], train=False)
    a = torch.randn(2, 16, 7)
    t = torch.tensor([5, 5])
    base = m.denoise(a, t, f)
    assert not torch.allclose(base, m.denoise(a, torch.tensor([60, 60]), f))
    assert not torch.allclose(base, m.denoise(a, t, f.flip(0)))


# ----------------------------------------------------------------------------- PAD
def test_pad_shared_timestep(tiny_batch):
    """Actions and next-image latents are noised with ONE timestep per sample, and the network
    is conditioned on that same timestep."""
    m = tiny("pad")
    seen_noise, seen_net = [], []
    add_noise = m.noise_scheduler.add_noise
    m.noise_scheduler.add_noise = lambda x, n, t: (seen_noise.append(t.clone()), add_noise(x, n, t))[1]
    forward = m.net.forward
    m.net.forward = lambda *a, **k: (seen_net.append(a[3].clone()), forward(*a, **k))[1]
    batch = tiny_batch(m, b=16)
    m.compute_loss(batch)
    assert len(seen_noise) == 2 and len(seen_net) == 1
    assert seen_noise[0].shape == (16,) and torch.equal(seen_noise[0], seen_noise[1])
    assert torch.equal(seen_net[0], seen_noise[0])
    assert len(set(seen_noise[0].tolist())) > 1  # per-sample draws, not one batch-wide value


def test_pad_latents_from_batch_or_on_the_fly(tiny_batch):
    m = tiny("pad")
    raw = tiny_batch(m)
    cached = tiny_batch(m, latent_encoder=m.latent_encoder)
    assert cached["next_obs_latent"].shape == (4, 2, 2, 4, 4, 4)
    l_raw, _ = loss_at(m, raw)
    l_cached, _ = loss_at(m, cached)
    assert torch.allclose(l_raw, l_cached, atol=1e-6)
    aug = tiny("pad", augment_latents=True).train()
    loss, _ = loss_at(aug, raw)
    assert torch.isfinite(loss)


def test_pad_action_free_loss_ignores_actions_and_pad_tokens_are_hidden(tiny_batch):
    m = tiny("pad")
    for p in m.net.parameters():  # leave the AdaLN-Zero identity so token mixing is visible
        p.data.add_(torch.randn_like(p) * 0.02)
    batch = tiny_batch(m, b=4, action_free=2)
    base, terms = loss_at(m, batch)
    changed = dict(batch, action=batch["action"].clone())
    changed["action"][:2] = torch.randn(2, 16, 7) * 5
    assert torch.equal(loss_at(m, changed)[0], base), "action-free samples' actions leaked into the loss"
    changed["action"][2] += 0.5  # a real sample's action must matter (the test can fail)
    assert not torch.equal(loss_at(m, changed)[0], base)
    # key mask: the image prediction of an action-free sample does not see the (pad) action tokens
    obs_lat = m.latent_encoder.encode(batch["obs"])
    z = torch.randn(4, *m.net.latent_shape)
    a = torch.randn(4, 16, 7)
    t = torch.full((4,), 30)
    _, eps0 = m.net(obs_lat, a, z, t, batch["action_mask"])
    m.net.pad_tokens.data.add_(1.0)
    a2 = a + 1.0  # every sample's noisy actions change; only real samples may show it
    _, eps1 = m.net(obs_lat, a2, z, t, batch["action_mask"])
    assert torch.allclose(eps0[:2], eps1[:2], atol=1e-6)
    assert not torch.allclose(eps0[2:], eps1[2:])
    # an all-action-free batch trains the image branch only
    free = tiny_batch(m, b=2, action_free=2)
    loss, terms = loss_at(m, free)
    assert terms["action_loss"] == 0.0 and terms["image_loss"] > 0
    loss.backward()
    assert m.net.patchify.proj.weight.grad is not None


def test_pad_video_prediction_and_no_forward_dynamics(tiny_batch):
    m = tiny("pad").eval()
    obs = {"obs": tiny_batch(m, b=2)["obs"]}
    z = m.predict_next_obs(obs)
    assert z.shape == (2, 2, 2, m.latent_encoder.latent_channels, 4, 4) and torch.isfinite(z).all()
    assert m.latent_encoder.decode(z).shape == (2, 2, 2, 3, 32, 32)
    with pytest.raises(CapabilityError, match="forward-dynamics"):
        m.predict_next_obs(obs, torch.zeros(2, 16, 7))


# ----------------------------------------------------------------------------- GR1
def test_gr1_deterministic_single_pass(tiny_batch):
    m = tiny("gr1").eval()
    obs = {"obs": tiny_batch(m, b=2)["obs"]}
    assert torch.equal(m.predict_action(obs), m.predict_action(obs))
    p = m.predict_next_obs(obs)
    assert torch.equal(p, m.predict_next_obs(obs))
    assert p.shape == (2, 2, 2, 3, 32, 32) and p.min() >= 0 and p.max() <= 1
    with pytest.raises(CapabilityError, match="forward-dynamics"):
        m.predict_next_obs(obs, torch.zeros(2, 16, 7))


def test_gr1_token_layout():
    m = tiny("gr1")
    assert m.tokens_per_image == 1 + m.cfg.resampler_latents and m.n_obs == 4 * m.tokens_per_image
    with torch.device("meta"):
        paper = build_method("gr1", "paper")
    assert paper.n_obs == 40 and paper.decoder_pos.shape == (1, 49, 768)


def test_gr1_action_free_loss_ignores_actions_and_queries_are_hidden(tiny_batch):
    m = tiny("gr1")
    batch = tiny_batch(m, b=4, action_free=2)
    base, _ = loss_at(m, batch)
    changed = dict(batch, action=batch["action"].clone())
    changed["action"][:2] = torch.randn(2, 16, 7) * 5
    assert torch.equal(loss_at(m, changed)[0], base)
    changed["action"][2] += 0.5
    assert not torch.equal(loss_at(m, changed)[0], base)
    # attention mask: image predictions of action-free samples do not depend on the action queries
    m.eval()
    frames = m.preprocess(batch["obs"], train=False)
    _, pix0 = m(frames, batch["action_mask"])
    m.action_queries.data.add_(1.0)
    _, pix1 = m(frames, batch["action_mask"])
    assert torch.allclose(pix0[:2], pix1[:2], atol=1e-6)
    assert not torch.allclose(pix0[2:], pix1[2:])


def test_gr1_loads_pretrained_vit(tmp_path):
    import torchvision
    cfg = make_config("gr1", "tiny")
    torch.manual_seed(7)
    vit = torchvision.models.VisionTransformer(cfg.image_size, cfg.vit_patch, cfg.vit_layers, cfg.vit_heads,
                                               cfg.vit_dim, cfg.vit_mlp_dim)
    path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), path)
    m = tiny("gr1", pretrained_encoder=str(path))
    assert torch.equal(m.vit.conv_proj.weight, vit.conv_proj.weight)
    assert torch.equal(m.vit.encoder.pos_embedding, vit.encoder.pos_embedding)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        tiny("gr1", pretrained_encoder=str(tmp_path / "missing.pth"))


# ----------------------------------------------------------------------------- paper sizes
# public models' trainable parameter counts (public UWM code @ 677560e); UWM: 309.2M
ANCHORS = {"dp": 291.7e6, "pad": 122.0e6, "gr1": 217.9e6}


@pytest.mark.parametrize("name", sorted(ANCHORS))
def test_paper_size_parameter_counts(name):
    kw = {"vae": "random:sdxl"} if name == "pad" else {}
    with torch.device("meta"):  # shapes only: no memory, no init cost
        m = build_method(name, "paper", **kw)
    trainable, frozen = m.parameter_counts()
    assert abs(trainable / ANCHORS[name] - 1) < 0.10, f"{name}: {trainable / 1e6:.1f}M vs {ANCHORS[name] / 1e6:.1f}M"
    if name == "pad":
        assert abs(frozen / 84e6 - 1) < 0.10 and m.net.n_obs == 98
    else:
        assert frozen == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dp", "pad", "gr1", "bc"])
def test_paper_size_train_step_and_inference_on_cpu(name):
    """Real weights at paper size: one loss/backward on a 1-sample 128x128 batch and one policy
    sample (CPU, ~10-40 s each). PAD takes cached-shape latents to skip the SDXL-size encode.
    Offline: random VAE and encoder weights (``offline_overrides``)."""
    from conftest import random_tiny_batch
    torch.set_num_threads(2)
    kw = get_method_class(name).offline_overrides("paper")
    if name == "pad":
        kw["augment_latents"] = False
    torch.manual_seed(0)
    m = build_method(name, "paper", **kw)
    batch = random_tiny_batch(m, b=1, raw=128)
    if name == "pad":
        batch["obs_latent"] = torch.randn(1, 2, 2, 4, 28, 28)
        batch["next_obs_latent"] = torch.randn(1, 2, 2, 4, 28, 28)
    loss, _ = m.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    m.eval()
    obs = {"obs": batch["obs"], **({"obs_latent": batch["obs_latent"]} if name == "pad" else {})}
    assert m.predict_action(obs).shape == (1, 16, 7)
