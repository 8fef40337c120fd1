"""Behaviour cloning: the worked example of adding a method (see docs, "add your own method").

A complete method is this file plus ``uwmbench/configs/method/bc.yaml``. It reuses the shared
ResNet-18-GN encoder, so its image features match UWM/DP, and regresses the whole action
chunk (horizon x action_dim) with an MLP and a plain MSE loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import POLICY, Method, MethodConfig, register_method
from .nets import ImagePreprocessor, MultiViewEncoder


@dataclass
class BCConfig(MethodConfig):          # shared fields (views, frames, horizon, image sizes...) come from MethodConfig
    feature_dim: int = 768             # per-image feature size (ResNet fc: 512 -> feature_dim)
    hidden: int = 1024                 # MLP hidden width
    encoder_width: int = 64            # 64 = the real ResNet-18; smaller for tests

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": dict(pretrained_encoder="imagenet"),   # the same ImageNet ResNet-18 start as UWM/DP
        "tiny": dict(pretrained_encoder="none", feature_dim=64, hidden=128, encoder_width=8, resize=36, image_size=32),
        # learns on a 2-core CPU: 64 px crops of 72 px frames, a quarter-width ResNet-18
        "small": dict(pretrained_encoder="none", feature_dim=128, hidden=512, encoder_width=16, resize=72, image_size=64,
                      color_jitter=0.1),
    }


@register_method                       # makes `method=bc` work in every command
class BehaviourCloning(Method):
    name = "bc"
    config_class = BCConfig
    capabilities = frozenset({POLICY})  # declare only what is implemented

    def __init__(self, cfg: BCConfig):
        super().__init__(cfg)
        self.preprocess = ImagePreprocessor(cfg.resize, cfg.image_size, cfg.color_jitter, normalize="imagenet")
        self.encoder = MultiViewEncoder(cfg.feature_dim, cfg.encoder_width, cfg.pretrained_encoder)
        n_features = len(cfg.views) * cfg.obs_frames * cfg.feature_dim
        self.head = nn.Sequential(
            nn.Linear(n_features, cfg.hidden), nn.Mish(),
            nn.Linear(cfg.hidden, cfg.hidden), nn.Mish(),
            nn.Linear(cfg.hidden, cfg.action_horizon * cfg.action_dim))

    def batch_keys(self, cached_latents: bool = True) -> tuple[str, ...]:
        return ("obs", "action", "action_mask")   # no next frames, no latents

    def forward(self, images: torch.Tensor, train: bool | None = None) -> torch.Tensor:
        """uint8 (B, V, To, 3, H, W) -> normalised actions (B, horizon, action_dim)."""
        features = self.encoder(self.preprocess(images, train=train))
        return self.head(features).view(-1, self.cfg.action_horizon, self.cfg.action_dim)

    def compute_loss(self, batch):
        self.check_action_free(batch)     # raises CapabilityError on action-free samples
        target = self.action_normalizer.normalize(batch["action"].float())
        loss = F.mse_loss(self(batch["obs"]).float(), target)
        return loss, {"loss": loss.item(), "action_loss": loss.item()}

    @torch.no_grad()
    def predict_action(self, obs, generator=None):  # deterministic: no noise to draw
        actions = self(obs["obs"].to(self.device), train=False)   # center crop, no jitter
        return self.action_normalizer.unnormalize(actions.float())
