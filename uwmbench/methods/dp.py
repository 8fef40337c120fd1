"""Diffusion Policy (DP) baseline, built as in the UWM paper: matched capacity, same inputs.

ResNet-18-GN encoder shared over 2 views x 2 frames -> 4 x 768 = 3072 features; an AdaLN-Zero
DiT (12 blocks, width 768, 12 heads) over 16 action tokens (per-step action MLP + learned
positions), conditioned on concat(features, 256-d timestep embedding). Epsilon prediction,
DDIM (100 train / 10 inference steps, squaredcos_cap_v2, clip_sample). Action-only diffusion:
DP cannot use action-free data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import POLICY, Method, register_method, sample_noise
from .diffusion import DiffusionConfig, make_ddim
from .nets import (ActionMLP, DiTBlock, FinalLayer, ImagePreprocessor, MultiViewEncoder, TimestepEmbedder,
                   init_transformer_weights)


def zero_adaln(blocks: nn.ModuleList, final: FinalLayer) -> None:
    """AdaLN-Zero: modulation and output layers start at zero (after a generic re-init)."""
    for m in [b.adaLN_modulation[-1] for b in blocks] + [final.adaLN_modulation[-1], final.linear]:
        nn.init.zeros_(m.weight)
        nn.init.zeros_(m.bias)


@dataclass
class DPConfig(DiffusionConfig):
    width: int = 768             # DiT width, also the per-image feature size (fc: 512 -> width)
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    timestep_dim: int = 256      # sinusoidal -> MLP(4x) -> timestep_dim
    encoder_width: int = 64      # ResNet-18 base width (64 = the real ResNet-18)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": dict(pretrained_encoder="imagenet"),   # torchvision ResNet18_Weights.IMAGENET1K_V1
        "tiny": dict(pretrained_encoder="none", width=64, depth=2, heads=4, timestep_dim=32, encoder_width=8,
                     resize=36, image_size=32),
        # learns on a 2-core CPU (like bc/uwm/pad/gr1 "small"): 64 px crops of 72 px frames,
        # a quarter-width ResNet-18, a 4-block DiT of width 256
        "small": dict(pretrained_encoder="none", width=256, depth=4, heads=4, timestep_dim=64, encoder_width=16,
                      resize=72, image_size=64, color_jitter=0.1),
    }


@register_method
class DiffusionPolicy(Method):
    name = "dp"
    config_class = DPConfig
    capabilities = frozenset({POLICY})

    def __init__(self, cfg: DPConfig):
        super().__init__(cfg)
        w, n_img = cfg.width, len(cfg.views) * cfg.obs_frames
        self.preprocess = ImagePreprocessor(cfg.resize, cfg.image_size, cfg.color_jitter, normalize="imagenet")
        self.obs_encoder = MultiViewEncoder(w, cfg.encoder_width, cfg.pretrained_encoder)
        cond_dim = n_img * w + cfg.timestep_dim
        hidden = int(max(cfg.action_dim, w) * cfg.mlp_ratio)
        self.action_in = ActionMLP(cfg.action_dim, hidden, w)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.action_horizon, w))
        self.t_embed = TimestepEmbedder(1, cfg.timestep_dim, 4 * cfg.timestep_dim, cfg.timestep_dim)
        self.blocks = nn.ModuleList([DiTBlock(w, cfg.heads, cond_dim, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.final = FinalLayer(w, w, cond_dim)
        self.action_out = ActionMLP(w, hidden, cfg.action_dim)
        for m in (self.action_in, self.t_embed, self.blocks, self.final, self.action_out):
            init_transformer_weights(m)
        nn.init.normal_(self.pos_embed, std=0.02)
        zero_adaln(self.blocks, self.final)
        self.noise_scheduler = make_ddim(cfg)

    def batch_keys(self, cached_latents: bool = True) -> tuple[str, ...]:
        return ("obs", "action", "action_mask")

    def encode_obs(self, obs: torch.Tensor, train: bool | None = None) -> torch.Tensor:
        """uint8 (B, V, To, 3, H, W) -> (B, V*To*width) features."""
        return self.obs_encoder(self.preprocess(obs, train=train))

    def denoise(self, noisy_action: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([features, self.t_embed(t)], dim=-1)
        x = self.action_in(noisy_action) + self.pos_embed
        for block in self.blocks:
            x = block(x, cond)
        return self.action_out(self.final(x, cond))

    def compute_loss(self, batch):
        self.check_action_free(batch)
        action = self.action_normalizer.normalize(batch["action"].float())
        b = action.shape[0]
        features = self.encode_obs(batch["obs"])
        t = torch.randint(0, self.cfg.num_train_timesteps, (b,), device=action.device)
        noise = torch.randn_like(action)
        noisy = self.noise_scheduler.add_noise(action, noise, t)
        loss = F.mse_loss(self.denoise(noisy, t, features).float(), noise)
        return loss, {"loss": loss.item(), "action_loss": loss.item()}

    @torch.no_grad()
    def predict_action(self, obs, generator=None):
        images = obs["obs"]
        features = self.encode_obs(images.to(self.device), train=False)
        a = sample_noise((images.shape[0], self.cfg.action_horizon, self.cfg.action_dim), generator, self.device)
        self.noise_scheduler.set_timesteps(self.cfg.num_inference_steps)
        for t in self.noise_scheduler.timesteps:
            eps = self.denoise(a, t.expand(a.shape[0]).to(self.device), features)
            a = self.noise_scheduler.step(eps.float(), t, a).prev_sample
        return self.action_normalizer.unnormalize(a)
