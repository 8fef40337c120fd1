"""Unified World Model: training, the five sampling modes' timesteps, ablation switches,
checkpoint round trip and the paper-size parameter count (tiny models on CPU)."""
from __future__ import annotations

import pytest
import torch

from uwmbench.methods import CapabilityError, build_method, make_config
from uwmbench.methods.uwm import UWM, UWMConfig

T = 100
SCHEDULE = list(range(90, -1, -10))  # DDIM, 100 train / 10 inference steps, "leading" spacing


def tiny(seed: int = 0, **overrides) -> UWM:
    torch.manual_seed(seed)
    return build_method("uwm", "tiny", **overrides)


def make_batch(b: int = 4, free: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, dtype=torch.bool)
    if free:
        mask[-free:] = False
    action = torch.rand(b, 16, 7, generator=g) * 2 - 1
    action[~mask] = 0
    return dict(
        obs=torch.randint(0, 256, (b, 2, 2, 3, 40, 40), generator=g, dtype=torch.uint8),
        action=action, action_mask=mask,
        next_obs=torch.randint(0, 256, (b, 2, 2, 3, 40, 40), generator=g, dtype=torch.uint8))


class Spy:
    """Records every denoiser call's timesteps and inputs."""

    def __init__(self, model: UWM):
        self.calls: list[dict] = []
        inner = model.denoiser.forward

        def forward(cond, noisy_action, t_action, noisy_obs, t_obs):
            self.calls.append(dict(t_a=t_action.clone(), t_o=t_obs.clone(), a=noisy_action.clone(),
                                   o=None if noisy_obs is None else noisy_obs.clone()))
            return inner(cond, noisy_action, t_action, noisy_obs, t_obs)
        model.denoiser.forward = forward

    def t_a(self):
        return [c["t_a"].unique().tolist() for c in self.calls]

    def t_o(self):
        return [c["t_o"].unique().tolist() for c in self.calls]


def train(model: UWM, batch, steps: int, lr: float = 1e-3) -> list[float]:
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss, metrics = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        losses.append(metrics["loss"])
    return losses


def assert_decreases(losses: list[float], factor: float = 0.85):
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < factor * first, f"loss did not decrease: first 5 mean {first:.4f}, last 5 mean {last:.4f}"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is fastest on a shared CPU (no oversubscription)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def batch():
    return make_batch()


# ----------------------------------------------------------------------------- training
def test_loss_decreases_on_fixed_batch(batch):
    model = tiny()
    losses = train(model, batch, 40)
    assert_decreases(losses, 0.7)


@pytest.mark.parametrize("overrides", [
    dict(conditioning="cross_attention"),
    dict(num_registers=0),
    dict(objective="current"),
    dict(objective="none"),
], ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
def test_variants_train(batch, overrides):
    model = tiny(**overrides)
    b = dict(batch)
    if overrides.get("objective") in ("current", "none"):
        b.pop("next_obs")  # not needed: current encodes obs on the fly, none has no latents
    losses = train(model, b, 30)
    assert_decreases(losses)
    _, metrics = model.compute_loss(b)
    if overrides.get("objective") == "none":
        assert metrics["obs_loss"] == 0.0
        assert model.denoiser.num_obs_tokens == 0
    else:
        assert metrics["obs_loss"] > 0.0


def test_token_counts_follow_switches():
    assert tiny().denoiser.pos_embed.shape[1] == 16 + 8 + 4
    assert tiny(num_registers=0).denoiser.pos_embed.shape[1] == 16 + 8
    assert tiny(objective="none").denoiser.pos_embed.shape[1] == 16 + 4
    cross = tiny(conditioning="cross_attention")
    assert cross.denoiser.blocks[0].cross is not None
    # cross-attention: AdaLN sees the timestep embedding only
    assert cross.denoiser.blocks[0].adaLN_modulation[-1].in_features == cross.cfg.time_out
    adaln = tiny()
    assert adaln.denoiser.blocks[0].adaLN_modulation[-1].in_features == 4 * 32 + adaln.cfg.time_out


def test_action_free_samples_get_last_timestep_and_zero_actions():
    model = tiny()
    b = make_batch(b=6, free=3)
    b["action"][~b["action_mask"]] = 100.0  # must be ignored (zeroed before noising)
    spy = Spy(model)
    for _ in range(3):
        model.compute_loss(b)
    for call in spy.calls:
        t_a = call["t_a"]
        assert (t_a[3:] == T - 1).all()
        assert call["a"][3:].abs().max() < 10  # noise only, not 100 * sqrt(alpha_bar)
    assert any((c["t_a"][:3] != T - 1).any() for c in spy.calls)  # labelled samples draw t_a


def test_mask_action_loss_for_videos_switch():
    b = make_batch(b=3, free=3)  # all action-free
    torch.manual_seed(1)
    _, unmasked = tiny().compute_loss(b)
    torch.manual_seed(1)
    _, masked = tiny(mask_action_loss_for_videos=True).compute_loss(b)
    assert unmasked["action_loss"] > 0
    assert masked["action_loss"] == 0.0
    assert masked["obs_loss"] == pytest.approx(unmasked["obs_loss"])
    # mixed batch: with the mask, the action-free samples do not touch the action loss
    mixed = make_batch(b=4, free=2)
    changed = dict(mixed, obs=mixed["obs"].clone())
    changed["obs"][2:] = 255 - changed["obs"][2:]
    for mask_switch, same in ((True, True), (False, False)):
        model = tiny(mask_action_loss_for_videos=mask_switch)
        train(model, mixed, 2)  # the zero-init output layer makes eps_a ignore the input at first
        model.eval()
        torch.manual_seed(2)
        _, m1 = model.compute_loss(mixed)
        torch.manual_seed(2)
        _, m2 = model.compute_loss(changed)
        assert (m1["action_loss"] == m2["action_loss"]) is same, (mask_switch, m1, m2)


def test_on_the_fly_latents_equal_cached(batch):
    """Cached latents of crop ``crop_offset`` and on-the-fly latents of the same crop give the
    same loss (jitter 0); cached latents of another crop than the condition's do not."""
    model = tiny(color_jitter=0.0, vae_scaling=10.0)  # latents of ~unit scale (random tiny VAE: ~0.02)
    offsets = torch.tensor([[0, 0], [4, 4], [0, 4], [2, 2]])  # tiny: 32 px crops of 36 px frames
    fly = dict(batch, crop_offset=offsets)
    cached = dict(fly)
    z = model.latent_encoder.encode(cached.pop("next_obs"), offsets=offsets)
    cached["next_obs_latent"] = z.half().float()  # the cache stores float16
    train(model, cached, 3)  # the zero-init output layers ignore every input at first
    spy, pixels = Spy(model), PixelSpy(model)
    torch.manual_seed(3)
    loss_fly, m_fly = model.compute_loss(fly)
    torch.manual_seed(3)
    loss_cached, m_cached = model.compute_loss(cached)
    assert torch.allclose(loss_fly, loss_cached, rtol=1e-4, atol=1e-6), (m_fly, m_cached)
    # what the denoiser saw: the same condition pixels, and the same noisy latents to fp16 rounding
    torch.testing.assert_close(pixels.cond[0], pixels.cond[1], rtol=0, atol=0)
    torch.testing.assert_close(spy.calls[0]["o"], spy.calls[1]["o"], rtol=2e-3, atol=2e-3)
    # centre-crop latents paired with these condition crops (the old cache's mismatch) differ
    centre = dict(cached, next_obs_latent=model.latent_encoder.encode(batch["next_obs"]))
    torch.manual_seed(3)
    model.compute_loss(centre)
    assert (spy.calls[2]["o"] - spy.calls[1]["o"]).abs().max() > 0.1
    assert model.batch_keys() == ("obs", "action", "action_mask", "next_obs_latent")
    assert model.batch_keys(cached_latents=False)[-1] == "next_obs"
    assert tiny(objective="current").batch_keys() == ("obs", "action", "action_mask", "obs_latent")
    assert tiny(objective="none").batch_keys() == ("obs", "action", "action_mask")
    bad = dict(cached, next_obs_latent=cached["next_obs_latent"][:, :, :1])
    with pytest.raises(ValueError, match="next_obs_latent"):
        model.compute_loss(bad)


class PixelSpy:
    """Records the condition encoder's input and the VAE's input (the on-the-fly target)."""

    def __init__(self, model: UWM):
        self.cond, self.target = [], []
        enc_fwd, vae_px = model.obs_encoder.forward, model.latent_encoder.encode_pixels

        def fwd(x, *a, **k):
            self.cond.append(x.detach().clone())
            return enc_fwd(x, *a, **k)

        def px(x, *a, **k):
            self.target.append(x.detach().clone())
            return vae_px(x, *a, **k)
        model.obs_encoder.forward = fwd
        model.latent_encoder.encode_pixels = px


@pytest.mark.parametrize("objective", ["future", "current"])
def test_on_the_fly_target_shares_condition_crop_and_jitter(objective):
    """On the fly (no cache), the diffused frames get exactly the condition frames' random crop
    and colour jitter (the public code's augmentation): with next frames equal to the current
    ones, the VAE sees the condition's pixels (only the normalisation differs)."""
    model = tiny(objective=objective, color_jitter=0.2)
    model.train()
    b = make_batch(b=6, free=0, seed=4)
    b["next_obs"] = b["obs"].clone()
    if objective == "current":
        b.pop("next_obs")
    spy = PixelSpy(model)
    mean, std = model.pre.mean, model.pre.std
    crops = set()
    for seed in range(3):
        torch.manual_seed(seed)
        model.compute_loss(b)
        cond01 = spy.cond[-1] * std + mean                       # imagenet-normalised -> [0, 1]
        target01 = (spy.target[-1] + 1) / 2                      # [-1, 1] -> [0, 1]
        assert target01.shape == cond01.shape == (6, 2, 2, 3, 32, 32)
        torch.testing.assert_close(target01, cond01, rtol=0, atol=1e-5)
        centre = model.pre.augment(b["obs"], train=False)
        crops.add(bool(torch.allclose(cond01, centre, atol=1e-3)))
    assert crops == {False}  # training crops/jitter are random, not the eval centre crop


def test_condition_crop_follows_crop_offset(batch):
    """With cached latents the condition frames are cropped at the batch's ``crop_offset``
    (centre when absent); predict_action (eval) always uses the centre crop."""
    model = tiny(color_jitter=0.0)
    model.train()
    spy = PixelSpy(model)
    offsets = torch.tensor([[0, 0], [4, 4], [0, 4], [4, 0]])
    z = model.latent_encoder.encode(batch["next_obs"], offsets=offsets)
    cached = {k: v for k, v in batch.items() if k != "next_obs"}
    model.compute_loss(dict(cached, next_obs_latent=z, crop_offset=offsets))
    want = model.pre(batch["obs"], train=False, offsets=offsets)
    torch.testing.assert_close(spy.cond[-1], want)
    model.compute_loss(dict(cached, next_obs_latent=z))  # no crop_offset: the latents are the centre crop
    torch.testing.assert_close(spy.cond[-1], model.pre(batch["obs"], train=False))
    assert not torch.allclose(want, model.pre(batch["obs"], train=False))


# ----------------------------------------------------------------------------- sampling
def _sample_with_spy(model, batch, mode, **kw):
    spy = Spy(model)
    z = model.latent_encoder.encode(batch["next_obs"])
    out = model.sample(batch, mode, action=batch["action"], next_obs_latent=z,
                       generator=torch.Generator().manual_seed(0), **kw)
    return spy, out, z


@pytest.mark.parametrize("mode", ["policy", "video", "forward", "inverse", "joint"])
def test_sampling_modes_timesteps_and_shapes(batch, mode):
    model = tiny().eval()
    spy, out, z = _sample_with_spy(model, batch, mode)
    assert len(spy.calls) == 10
    t_a, t_o = spy.t_a(), spy.t_o()
    walk = [[t] for t in SCHEDULE]
    held = [[SCHEDULE[0]]] * 10  # marginalised variable at DDIM timesteps[0] = 90 (public code; marginal_t="T": 99)
    expected = {
        "policy": (walk, held),
        "video": (held, walk),
        "forward": ([[0]] * 10, walk),
        "inverse": (walk, [[0]] * 10),
        "joint": (walk, walk),
    }[mode]
    assert (t_a, t_o) == expected
    lat_shape = (4, 2, 2, 4, 4, 4)
    if mode in ("policy", "inverse", "joint"):
        assert out["action"].shape == (4, 16, 7) and torch.isfinite(out["action"]).all()
    else:
        assert out["action"] is None
    if mode in ("video", "forward", "joint"):
        assert out["next_obs_latent"].shape == lat_shape and torch.isfinite(out["next_obs_latent"]).all()
    else:
        assert out["next_obs_latent"] is None
    if mode == "policy":  # o' stays the same pure noise throughout
        assert all(torch.equal(c["o"], spy.calls[0]["o"]) for c in spy.calls)
    if mode == "video":  # a stays the same pure noise throughout
        assert all(torch.equal(c["a"], spy.calls[0]["a"]) for c in spy.calls)
    if mode == "forward":  # clean (normalised) actions every step
        assert all(torch.allclose(c["a"], model.action_normalizer.normalize(batch["action"])) for c in spy.calls)
    if mode == "inverse":  # clean next-obs latents every step
        assert all(torch.equal(c["o"], z) for c in spy.calls)


def test_marginal_t_switch_changes_held_timestep(batch):
    model = tiny().eval()  # default: the public code's DDIM timesteps[0]
    assert model.cfg.marginal_t == "first_inference_step" and model.marginal_timestep() == 90
    spy, _, _ = _sample_with_spy(model, batch, "policy")
    assert spy.t_o() == [[90]] * 10
    spy, _, _ = _sample_with_spy(model, batch, "video")
    assert spy.t_a() == [[90]] * 10
    paper_text = tiny(marginal_t="T").eval()  # the paper text's T
    assert paper_text.marginal_timestep() == T - 1
    spy, _, _ = _sample_with_spy(paper_text, batch, "policy")
    assert spy.t_o() == [[T - 1]] * 10


def test_contract_methods(batch):
    model = tiny().eval()
    obs = {"obs": batch["obs"]}
    assert model.predict_action(obs).shape == (4, 16, 7)
    assert model.predict_next_obs(obs).shape == (4, 2, 2, 4, 4, 4)
    assert model.predict_next_obs(obs, batch["action"]).shape == (4, 2, 2, 4, 4, 4)
    assert model.infer_action(obs, batch["next_obs"]).shape == (4, 16, 7)  # uint8 frames
    z = model.latent_encoder.encode(batch["next_obs"])
    g = torch.Generator().manual_seed(5)
    a1 = model.infer_action(obs, z, generator=g)
    a2 = model.infer_action(obs, batch["next_obs"], generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a1, a2)
    assert set(model.capabilities) == {"policy", "forward_dynamics", "video_prediction", "inverse_dynamics",
                                       "action_free_data"}
    none = tiny(objective="none").eval()
    assert none.predict_action(obs).shape == (4, 16, 7)
    with pytest.raises(CapabilityError):
        none.predict_next_obs(obs)
    with pytest.raises(CapabilityError):
        none.infer_action(obs, batch["next_obs"])
    with pytest.raises(ValueError, match="mode"):
        model.sample(obs, "dream")


def test_validation_metrics(batch):
    model = tiny()
    state = torch.get_rng_state()
    m = model.validation_metrics(batch)
    assert torch.equal(state, torch.get_rng_state())  # training RNG stream untouched
    for k in ("val/loss", "val/action_loss", "val/obs_loss", "val/marginal_action_mse",
              "val/inverse_action_mse", "val/next_obs_latent_mse"):
        assert k in m and m[k] == m[k] and m[k] >= 0, k
    assert model.validation_metrics(batch) == m  # deterministic
    assert model.training  # mode restored


# ----------------------------------------------------------------------------- state
def test_save_load_gives_identical_predictions(batch, tmp_path):
    model = tiny(seed=0)
    train(model, batch, 3)
    path = tmp_path / "uwm.pt"
    torch.save(model.state_dict(), path)
    other = tiny(seed=123)
    other.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    other.eval()
    for mode in ("policy", "joint"):
        a = model.sample(batch, mode, generator=torch.Generator().manual_seed(7))
        b = other.sample(batch, mode, generator=torch.Generator().manual_seed(7))
        assert torch.equal(a["action"], b["action"])


def test_determinism_under_seed(batch):
    runs = []
    for _ in range(2):
        model = tiny(seed=11)
        torch.manual_seed(4)
        losses = train(model, batch, 3)
        model.eval()
        runs.append((losses, model.predict_action(batch, generator=torch.Generator().manual_seed(0))))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("key", ["conditioning", "objective", "marginal_t"])
def test_invalid_switch_value_names_key(key):
    with pytest.raises(ValueError, match=key):
        make_config("uwm", "tiny", {key: "bogus"})


def test_presets():
    paper = make_config("uwm", "paper")
    assert isinstance(paper, UWMConfig)
    assert (paper.width, paper.depth, paper.heads, paper.num_registers) == (768, 12, 12, 24)
    assert (paper.resize, paper.image_size, paper.vae) == (240, 224, "stabilityai/sdxl-vae")
    assert paper.pretrained_encoder == "imagenet" and make_config("uwm", "tiny").pretrained_encoder == "none"
    assert UWM.offline_overrides("paper") == {"vae": "random:sdxl", "pretrained_encoder": "none"}
    assert UWM.offline_overrides("tiny") == {}


def test_paper_size_parameter_count():
    """309.2M trainable (public code, 24 registers), ~84M frozen SDXL VAE (random weights here)."""
    with torch.device("meta"):
        model = build_method("uwm", "paper", **UWM.offline_overrides("paper"))
    trainable, frozen = model.parameter_counts()
    assert abs(trainable - 309.2e6) / 309.2e6 < 0.02, trainable
    assert abs(frozen - 83.65e6) / 83.65e6 < 0.01, frozen
    adaln = sum(p.numel() for blk in model.denoiser.blocks for p in blk.adaLN_modulation.parameters())
    assert abs(adaln - 198e6) / 198e6 < 0.01, adaln  # "198M of it the AdaLN modulation layers"
    assert model.denoiser.pos_embed.shape[1] == 16 + 98 + 24


def test_validation_metrics_compare_forward_dynamics_with_copy_last_frame(batch):
    """The copy-last-frame baseline: its latent MSE is that of the last current frame's latent
    repeated for every next frame, and its PSNR is infinite-ish (>= 90 dB, clamped) when the next
    frames ARE the last current one; the inverse-dynamics error is relative (env units)."""
    model = tiny()
    m = model.validation_metrics(batch)
    for k in ("val/copy_last_latent_mse", "val/forward_psnr", "val/copy_last_psnr", "val/inverse_rel_err_pos"):
        assert k in m and m[k] == m[k], k
    mask = batch["action_mask"]
    enc = model.latent_encoder
    z = enc.encode(batch["next_obs"][mask])
    zl = enc.encode(batch["obs"][mask][:, :, -1:]).expand_as(z)
    assert m["val/copy_last_latent_mse"] == pytest.approx(float(torch.nn.functional.mse_loss(zl, z)), rel=1e-5)
    still = dict(batch, next_obs=batch["obs"][:, :, -1:].repeat(1, 1, 2, 1, 1, 1))  # nothing moves
    ms = model.validation_metrics(still)
    assert ms["val/copy_last_latent_mse"] == pytest.approx(0.0, abs=1e-10)
    assert ms["val/copy_last_psnr"] >= 90 and ms["val/copy_last_psnr"] > m["val/copy_last_psnr"]


def test_policy_t_prob_trains_that_fraction_in_the_policy_setting():
    """policy_t_prob=p: about p of the labelled samples get t_o' = the sampling hold timestep (90);
    action-free samples keep uniform t_o'; p=0 draws exactly the paper's timesteps (same RNG stream)."""
    batch = make_batch(b=64, free=16, seed=3)
    seen = {}
    for p in (0.0, 0.5, 1.0):
        model = tiny(policy_t_prob=p)
        spy = Spy(model)
        torch.manual_seed(7)
        model.compute_loss(batch)
        seen[p] = spy.calls[0]["t_o"]
    labelled = batch["action_mask"]
    assert bool((seen[1.0][labelled] == 90).all())
    assert not bool((seen[1.0][~labelled] == 90).all())
    frac = float((seen[0.5][labelled] == 90).float().mean())
    assert 0.3 < frac < 0.7
    assert float((seen[0.0] == 90).float().mean()) < 0.1
    default = tiny()
    spy = Spy(default)
    torch.manual_seed(7)
    default.compute_loss(batch)
    assert torch.equal(spy.calls[0]["t_o"], seen[0.0])
    with pytest.raises(ValueError, match="policy_t_prob"):
        tiny(policy_t_prob=1.5)
