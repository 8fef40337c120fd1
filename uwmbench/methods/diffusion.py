"""The diffusion settings UWM, DP and PAD share (the paper and its public code: DDIM, 100 train / 10 inference steps, squaredcos_cap_v2, clip_sample): one config mixin and
one scheduler factory, so the three methods cannot drift apart."""
from __future__ import annotations

from dataclasses import dataclass

from diffusers import DDIMScheduler

from .base import MethodConfig


@dataclass
class DiffusionConfig(MethodConfig):
    """Method config with the paper's DDIM settings (epsilon prediction)."""

    num_train_timesteps: int = 100
    num_inference_steps: int = 10
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True


def make_ddim(cfg: DiffusionConfig) -> DDIMScheduler:
    """The paper's scheduler: DDIM, epsilon prediction, eta 0 at inference."""
    return DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         clip_sample=cfg.clip_sample, prediction_type="epsilon")
