"""PAD (Prediction with Action: joint denoising of actions and future images), built as in the
UWM paper's baseline: same DiT as UWM/DP (12 x 768 x 12 heads, AdaLN-Zero) but

- current and next frames both go through the frozen VAE; the two latents are concatenated
  along channels (4 + 4) and patchified by a Conv3d of kernel = stride (2, 4, 4) -> 98 tokens;
- ONE shared diffusion timestep for actions and next-image latents; AdaLN is conditioned on
  the timestep embedding only (the current observation enters as the clean channels);
- next-latent noise is decoded by a ConvTranspose3d, action noise by a 2-layer MLP;
- loss = action eps-MSE + image eps-MSE (1:1); inference denoises both jointly, so PAD also
  gives video prediction p(o'|o) (but has no forward-dynamics mode p(o'|o, a)).

Action-free samples: their action tokens are replaced by learned pad tokens, hidden from every
query by the attention key mask, and their action loss is masked out.

Latents come from the batch (``obs_latent`` / ``next_obs_latent``: cached latents, in training
one of the cache's ``data.latent_crops`` crops per sample, the same crop for current and next
frames; the centre crop at validation) or are encoded on the fly (centre crop) with the
method's own :class:`LatentEncoder`. The public code instead applies the random crop + colour
jitter to both frames before the VAE on every step; ``augment_latents=True`` reproduces that
(slower: 8 VAE encodes per sample) and is the ``paper`` preset's default (``tiny``: off, cached
latents). The action and
timestep MLPs use SiLU, as the public PAD (UWM and DP use Mish).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .base import (ACTION_FREE, POLICY, VIDEO_PREDICTION, CapabilityError, Generators, Method, register_method,
                   sample_noise)
from .diffusion import DiffusionConfig, make_ddim
from .dp import zero_adaln
from .latent_encoder import LatentEncoder
from .nets import (ActionMLP, DiTBlock, FinalLayer, ImagePreprocessor, LatentPatchify, TimestepEmbedder,
                   init_transformer_weights, num_latent_tokens)


@dataclass
class PADConfig(DiffusionConfig):
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    timestep_dim: int = 512               # sinusoidal(512) -> MLP(2048) -> 512, the only AdaLN input
    vae: str = "stabilityai/sdxl-vae"      # hub id, local folder, or random:<preset> (tests)
    vae_scaling_factor: float | None = None  # None: the VAE config's (SDXL: 0.13025)
    latent_extra_scale: float = 3.0
    latent_patch: tuple[int, int, int] = (2, 4, 4)
    augment_latents: bool = False         # encode augmented frames on the fly (public code; on in the paper preset)
    action_loss_weight: float = 1.0
    image_loss_weight: float = 1.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": dict(augment_latents=True),   # the public code augments and encodes both frames every step
        "tiny": dict(width=64, depth=2, heads=4, timestep_dim=32, vae="random:tiny", latent_patch=(2, 2, 2),
                     resize=36, image_size=32),
        # learns on a 2-core CPU: the UWM "small" latent space (8x8x4 latents of a fitted "small"
        # AutoencoderKL: method.vae=<folder>), a 4-block DiT of width 256
        "small": dict(width=256, depth=4, heads=4, timestep_dim=64, vae="random:small", latent_patch=(2, 2, 2),
                      resize=72, image_size=64, color_jitter=0.1),
    }


class PADNoiseNet(nn.Module):
    """(clean obs latents, noisy actions, noisy next latents, t) -> (eps_action, eps_next_latent)."""

    def __init__(self, cfg: PADConfig, latent_channels: int, latent_size: int):
        super().__init__()
        w, c, ha = cfg.width, latent_channels, cfg.action_horizon
        self.patch = tuple(cfg.latent_patch)
        self.latent_shape = (len(cfg.views), cfg.next_frames, c, latent_size, latent_size)
        self.n_obs = num_latent_tokens(len(cfg.views), cfg.next_frames, latent_size, self.patch)
        self.ha = ha
        hidden = int(max(cfg.action_dim, w) * cfg.mlp_ratio)
        self.action_in = ActionMLP(cfg.action_dim, hidden, w, act=nn.SiLU)   # PAD: SiLU (UWM/DP: Mish)
        self.action_out = ActionMLP(w, hidden, cfg.action_dim, act=nn.SiLU)
        self.patchify = LatentPatchify(2 * c, w, self.patch)                       # [obs | noisy next] channels
        self.unpatchify = nn.ConvTranspose3d(w, c, kernel_size=self.patch, stride=self.patch)
        self.pad_tokens = nn.Parameter(torch.zeros(1, ha, w))
        self.pos_embed = nn.Parameter(torch.zeros(1, ha + self.n_obs, w))
        self.t_embed = TimestepEmbedder(1, cfg.timestep_dim, 4 * cfg.timestep_dim, cfg.timestep_dim, act=nn.SiLU)
        self.blocks = nn.ModuleList([DiTBlock(w, cfg.heads, cfg.timestep_dim, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.final = FinalLayer(w, w, cfg.timestep_dim)
        init_transformer_weights(self)
        for p in (self.pad_tokens, self.pos_embed):
            nn.init.normal_(p, std=0.02)
        conv = self.patchify.proj.weight
        nn.init.xavier_uniform_(conv.view(conv.shape[0], -1))
        nn.init.zeros_(self.patchify.proj.bias)
        zero_adaln(self.blocks, self.final)

    def forward(self, obs_latent, noisy_action, noisy_next, t, action_mask=None):
        b = noisy_action.shape[0]
        a_tok = self.action_in(noisy_action)
        attn_mask = None
        if action_mask is not None and not bool(action_mask.all()):
            a_tok = torch.where(action_mask[:, None, None], a_tok, self.pad_tokens.to(a_tok.dtype).expand(b, -1, -1))
            attn_mask = torch.ones(b, self.ha + self.n_obs, dtype=torch.bool, device=a_tok.device)
            attn_mask[~action_mask, :self.ha] = False   # no query may attend to a pad token
        o_tok = self.patchify(torch.cat([obs_latent, noisy_next], dim=3))
        x = torch.cat([a_tok, o_tok], dim=1) + self.pos_embed
        cond = self.t_embed(t)
        for block in self.blocks:
            x = block(x, cond, mask=attn_mask)
        x = self.final(x, cond)
        eps_a = self.action_out(x[:, :self.ha])
        v, tn, c, h, w_ = self.latent_shape
        pt, ph, pw = self.patch
        tok = x[:, self.ha:].reshape(b * v, tn // pt, h // ph, w_ // pw, -1).permute(0, 4, 1, 2, 3)
        eps_o = self.unpatchify(tok).transpose(1, 2).reshape(b, v, tn, c, h, w_)
        return eps_a, eps_o


@register_method
class PAD(Method):
    name = "pad"
    config_class = PADConfig
    capabilities = frozenset({POLICY, VIDEO_PREDICTION, ACTION_FREE})

    def __init__(self, cfg: PADConfig):
        super().__init__(cfg)
        if cfg.next_frames != cfg.obs_frames:
            raise ValueError(f"pad: obs_frames={cfg.obs_frames} and next_frames={cfg.next_frames} must match "
                             "(current and next latents are concatenated along channels)")
        self.latent_encoder = LatentEncoder(cfg.vae, cfg.resize, cfg.image_size, cfg.vae_scaling_factor,
                                            cfg.latent_extra_scale)
        self.net = PADNoiseNet(cfg, self.latent_encoder.latent_channels, self.latent_encoder.latent_size)
        self.augment = ImagePreprocessor(cfg.resize, cfg.image_size, cfg.color_jitter, normalize="sym")
        self.noise_scheduler = make_ddim(cfg)

    def batch_keys(self, cached_latents: bool = True) -> tuple[str, ...]:
        if self.cfg.augment_latents:
            return ("obs", "action", "action_mask", "next_obs")
        return ("obs", "action", "action_mask", "obs_latent", "next_obs_latent")

    # ------------------------------------------------------------------ latents
    @torch.no_grad()
    def _encode_augmented(self, obs: torch.Tensor, next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Same random crop and jitter for current and next frames, then the frozen VAE."""
        to = obs.shape[2]
        x = self.augment(torch.cat([obs, next_obs], dim=2), train=True)
        enc = self.latent_encoder
        flat = x.reshape(-1, *x.shape[-3:]).to(next(enc.vae.parameters()).dtype)
        z = torch.cat([enc.vae.encode(flat[i:i + 64]).latent_dist.mode().float() for i in range(0, flat.shape[0], 64)])
        z = (z * (enc.scaling_factor / enc.extra_scale)).reshape(*x.shape[:3], *z.shape[1:])
        return z[:, :, :to], z[:, :, to:]

    def _latents(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.augment_latents and self.training:
            return self._encode_augmented(batch["obs"], batch["next_obs"])
        obs_lat = batch.get("obs_latent")
        if obs_lat is None:
            obs_lat = self.latent_encoder.encode(batch["obs"])
        next_lat = batch.get("next_obs_latent")
        if next_lat is None:
            if "next_obs" not in batch:
                raise KeyError("pad: the batch has neither 'next_obs_latent' nor 'next_obs'")
            next_lat = self.latent_encoder.encode(batch["next_obs"])
        return obs_lat.float(), next_lat.float()

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch):
        mask = self.check_action_free(batch).to(batch["action"].device)
        obs_lat, next_lat = self._latents(batch)
        action = self.action_normalizer.normalize(batch["action"].float())
        b = action.shape[0]
        t = torch.randint(0, self.cfg.num_train_timesteps, (b,), device=action.device)  # ONE shared timestep
        noise_a, noise_o = torch.randn_like(action), torch.randn_like(next_lat)
        noisy_a = self.noise_scheduler.add_noise(action, noise_a, t)
        noisy_o = self.noise_scheduler.add_noise(next_lat, noise_o, t)
        eps_a, eps_o = self.net(obs_lat, noisy_a, noisy_o, t, mask)
        per_sample = ((eps_a.float() - noise_a) ** 2).mean(dim=(1, 2))
        m = mask.float()
        action_loss = (per_sample * m).sum() / m.sum().clamp_min(1.0)
        image_loss = ((eps_o.float() - noise_o) ** 2).mean()
        loss = self.cfg.action_loss_weight * action_loss + self.cfg.image_loss_weight * image_loss
        return loss, {"loss": loss.item(), "action_loss": action_loss.item(), "image_loss": image_loss.item(),
                      "action_fraction": m.mean().item()}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def sample_joint(self, obs: dict[str, torch.Tensor], generator: Generators = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint DDIM denoising from noise with one shared timestep.
        Returns (actions in env units (B, Ha, A), next latents (B, V, Tn, C, h, w))."""
        obs_lat = obs.get("obs_latent")
        if obs_lat is None:
            obs_lat = self.latent_encoder.encode(obs["obs"].to(self.device))
        obs_lat = obs_lat.to(self.device).float()
        b = obs_lat.shape[0]
        a = sample_noise((b, self.cfg.action_horizon, self.cfg.action_dim), generator, self.device)
        z = sample_noise((b, *self.net.latent_shape), generator, self.device)
        self.noise_scheduler.set_timesteps(self.cfg.num_inference_steps)
        for t in self.noise_scheduler.timesteps:
            eps_a, eps_o = self.net(obs_lat, a, z, t.expand(b).to(self.device))
            a = self.noise_scheduler.step(eps_a.float(), t, a).prev_sample
            z = self.noise_scheduler.step(eps_o.float(), t, z).prev_sample
        return self.action_normalizer.unnormalize(a), z

    @torch.no_grad()
    def predict_action(self, obs, generator=None):
        return self.sample_joint(obs, generator)[0]

    @torch.no_grad()
    def predict_next_obs(self, obs, action=None):
        """Video prediction p(o'|o): next-frame latents (B, V, Tn, C, h, w), decode with
        ``self.latent_encoder.decode``. PAD has no forward-dynamics mode: ``action`` must be None."""
        if action is not None:
            raise CapabilityError("pad denoises actions and images jointly from one shared timestep; it has no "
                                  "forward-dynamics mode p(o'|o, a). Call predict_next_obs(obs) without an action.")
        return self.sample_joint(obs)[1]
