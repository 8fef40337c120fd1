"""The method contract, checked for EVERY registered method at its ``tiny`` size.

A new method is covered by registering it (``@register_method``): no edit here.
"""
from __future__ import annotations

import pytest
import torch

from conftest import product_methods
from uwmbench.methods import (
    ACTION_FREE, FORWARD_DYNAMICS, INVERSE_DYNAMICS, VIDEO_PREDICTION, CapabilityError, build_method,
)

METHODS = product_methods()  # every registered method (plugins included), not test-only helpers
RAW = 32  # stored frame size used by the contract batch


def make_batch(method, b=4, seed=0, action_free=0):
    cfg = method.cfg
    g = torch.Generator().manual_seed(seed)
    v = len(cfg.views)
    obs = torch.randint(0, 256, (b, v, cfg.obs_frames, 3, RAW, RAW), generator=g, dtype=torch.uint8)
    nxt = torch.randint(0, 256, (b, v, cfg.next_frames, 3, RAW, RAW), generator=g, dtype=torch.uint8)
    act = (torch.rand(b, cfg.action_horizon, cfg.action_dim, generator=g) * 2 - 1)
    mask = torch.ones(b, dtype=torch.bool)
    if action_free:
        mask[:action_free] = False
        act[:action_free] = 0
    return {"obs": obs, "next_obs": nxt, "action": act, "action_mask": mask}


def tiny(name, **kw):
    torch.manual_seed(0)
    return build_method(name, "tiny", **kw)


def test_builtin_methods_registered():
    for name in ("uwm", "dp", "pad", "gr1", "bc"):
        assert name in METHODS, f"{name} is not registered: {METHODS}"


@pytest.mark.parametrize("name", METHODS)
def test_loss_finite_and_decreases_on_fixed_batch(name):
    m = tiny(name)
    batch = make_batch(m)
    m.train()
    torch.manual_seed(123)
    loss0, terms = m.compute_loss(batch)
    assert torch.isfinite(loss0) and loss0.ndim == 0
    assert "loss" in terms and all(isinstance(v, float) for v in terms.values())
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-3)
    for i in range(30):
        torch.manual_seed(1000 + i)
        loss, _ = m.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(123)
    loss1, _ = m.compute_loss(batch)
    assert loss1.item() < loss0.item(), f"{name}: loss did not decrease ({loss0.item():.4f} -> {loss1.item():.4f})"


@pytest.mark.parametrize("name", METHODS)
def test_predict_action_shape_and_env_units(name):
    m = tiny(name, action_norm="minmax")
    a_dim, h = m.cfg.action_dim, m.cfg.action_horizon
    lo, hi = torch.full((a_dim,), 100.0), torch.full((a_dim,), 102.0)
    m.action_normalizer.set_stats({"min": lo, "max": hi, "mean": (lo + hi) / 2, "std": torch.ones(a_dim)})
    m.eval()
    batch = make_batch(m, b=3)
    a = m.predict_action({"obs": batch["obs"]})
    assert a.shape == (3, h, a_dim) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    # actions come back in env units: around the [100, 102] range, not the network's [-1, 1]
    assert a.min() > 90 and a.max() < 112, f"{name}: actions not unnormalised: {a.min():.2f}..{a.max():.2f}"


@pytest.mark.parametrize("name", METHODS)
def test_save_load_identical_predictions(name, tmp_path):
    from uwmbench.benchmarks.checkpoint import load_method, save_checkpoint
    m = tiny(name, action_norm="gaussian")
    m.action_normalizer.set_stats({"min": -torch.ones(7), "max": torch.ones(7), "mean": torch.full((7,), 0.3),
                                   "std": torch.full((7,), 0.5)})
    # perturb away from init so the test is not trivially satisfied by zero-initialised heads
    with torch.no_grad():
        for p in m.trainable_parameters():
            p.add_(0.01 * torch.randn_like(p))
    m.eval()
    obs = {"obs": make_batch(m, b=2)["obs"]}
    save_checkpoint(tmp_path, 1, m, {"step": 1}, "method: {}\n")
    m2 = load_method(tmp_path)
    torch.manual_seed(7)
    a1 = m.predict_action(obs)
    torch.manual_seed(7)
    a2 = m2.predict_action(obs)
    assert torch.equal(a1, a2)


@pytest.mark.parametrize("name", METHODS)
def test_determinism_under_seed(name):
    m1, m2 = tiny(name), tiny(name)
    for (k1, p1), (k2, p2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and torch.equal(p1, p2), f"{name}: {k1} differs between two builds under one seed"
    batch = make_batch(m1)
    torch.manual_seed(5)
    l1, _ = m1.compute_loss(batch)
    torch.manual_seed(5)
    l2, _ = m2.compute_loss(batch)
    assert torch.equal(l1, l2)


@pytest.mark.parametrize("name", METHODS)
def test_declared_capabilities_callable_undeclared_absent(name):
    m = tiny(name)
    m.eval()
    batch = make_batch(m, b=2)
    obs = {"obs": batch["obs"]}
    caps = type(m).capabilities
    if FORWARD_DYNAMICS in caps:
        out = m.predict_next_obs(obs, batch["action"])
        assert out.shape[0] == 2 and torch.isfinite(out.float()).all()
    if VIDEO_PREDICTION in caps:
        out = m.predict_next_obs(obs, None)
        assert out.shape[0] == 2 and torch.isfinite(out.float()).all()
    if FORWARD_DYNAMICS not in caps and VIDEO_PREDICTION not in caps:
        with pytest.raises(CapabilityError):
            m.predict_next_obs(obs, batch["action"])
    if FORWARD_DYNAMICS not in caps and VIDEO_PREDICTION in caps:
        with pytest.raises(CapabilityError):
            m.predict_next_obs(obs, batch["action"])
    if INVERSE_DYNAMICS in caps:
        a = m.infer_action(obs, batch["next_obs"])
        assert a.shape == (2, m.cfg.action_horizon, m.cfg.action_dim)
    else:
        with pytest.raises(CapabilityError):
            m.infer_action(obs, batch["next_obs"])


@pytest.mark.parametrize("name", METHODS)
def test_action_free_batches_accepted_or_refused_as_declared(name):
    m = tiny(name)
    batch = make_batch(m, b=4, action_free=2)
    if ACTION_FREE in type(m).capabilities:
        loss, _ = m.compute_loss(batch)
        assert torch.isfinite(loss)
        loss.backward()
    else:
        with pytest.raises(CapabilityError):
            m.compute_loss(batch)


@pytest.mark.parametrize("name", METHODS)
def test_batch_keys_declared(name):
    m = tiny(name)
    keys = set(m.batch_keys())
    assert {"obs"} <= keys <= {"obs", "action", "action_mask", "next_obs", "next_obs_latent", "obs_latent"}


@pytest.mark.parametrize("name", METHODS)
def test_contract_members_callers_use(name):
    """What the harness calls is part of the contract, not probed: batch_keys(cached_latents=),
    latent_encoder (None or an encoder whose latents the *_latent keys hold), capabilities_for(cfg)
    equal to the built instance's capabilities, and predict_next_frames in uint8 frames."""
    m = tiny(name)
    m.eval()
    for cached in (True, False):
        keys = set(m.batch_keys(cached_latents=cached))
        assert {"obs"} <= keys
    latent_keys = {"obs_latent", "next_obs_latent"} & set(m.batch_keys(cached_latents=True))
    if latent_keys:
        assert m.latent_encoder is not None, f"{name} reads {latent_keys} but has no latent_encoder"
    assert type(m).capabilities_for(m.cfg) == frozenset(m.capabilities)
    if VIDEO_PREDICTION in m.capabilities or FORWARD_DYNAMICS in m.capabilities:
        batch = make_batch(m, b=2)
        act = batch["action"] if FORWARD_DYNAMICS in m.capabilities else None
        frames = m.predict_next_frames({"obs": batch["obs"]}, act)
        assert frames.dtype == torch.uint8 and frames.shape[:2] == (2, len(m.cfg.views)) and frames.shape[3] == 3
