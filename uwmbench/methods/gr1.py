"""GR-1 baseline, built as in the UWM paper (a deterministic, single-pass video-action model).

- Each image (2 views x 2 frames) goes through a trainable torchvision ViT-B/32; its CLS token
  and a perceiver resampler (depth 3, 4 heads, head dim 128, 9 latents over all ViT tokens)
  give 10 tokens per view-frame (40 in all), with a learned per-view-frame scale and shift.
- A non-causal transformer (12 x 768 x 12 heads) runs over
  [40 obs tokens, 16 action queries, 40 obs queries].
- Action head: MLP 768-384-384-7 on the action queries, plain MSE on (normalised) actions.
- Image decoder: for each future view-frame, its 10 obs-query outputs plus 49 queries
  (learned token + fixed 2-D sin-cos position) go through 3 blocks (16 heads); the 49 outputs
  become 32x32x3 pixel patches of the 224x224 frame; MSE on ImageNet-normalised pixels. The
  next frames get the same random crop and colour jitter as the current ones.
- Action-free samples: every query's attention to the action queries is masked; only the image
  loss counts for them.

``predict_next_obs`` returns PIXELS, not VAE latents: float RGB in [0, 1],
(B, V, Tn, 3, image_size, image_size), of the center-cropped next frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import ACTION_FREE, POLICY, VIDEO_PREDICTION, CapabilityError, Method, MethodConfig, register_method
from .nets import (IMAGENET_MEAN, IMAGENET_STD, Attention, ImagePreprocessor, Mlp, init_transformer_weights,
                   load_pretrained_encoder, pretrained_source, sinusoidal_embedding)


@dataclass
class GR1Config(MethodConfig):
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    # image encoder: torchvision VisionTransformer (these defaults are exactly vit_b_32)
    vit_patch: int = 32
    vit_layers: int = 12
    vit_heads: int = 12
    vit_dim: int = 768
    vit_mlp_dim: int = 3072
    resampler_depth: int = 3
    resampler_heads: int = 4
    resampler_dim_head: int = 128
    resampler_latents: int = 9
    # image decoder
    decoder_depth: int = 3
    decoder_heads: int = 16
    decoder_patch: int = 32
    action_loss_weight: float = 1.0
    image_loss_weight: float = 1.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": dict(pretrained_encoder="imagenet"),   # torchvision ViT_B_32_Weights.IMAGENET1K_V1
        "tiny": dict(pretrained_encoder="none", width=64, depth=2, heads=4, vit_patch=8, vit_layers=2, vit_heads=2,
                     vit_dim=64, vit_mlp_dim=128,
                     resampler_depth=1, resampler_heads=2, resampler_dim_head=16, resampler_latents=3,
                     decoder_depth=1, decoder_heads=4, decoder_patch=8, resize=36, image_size=32),
        # learns on a 2-core CPU: a 4-layer ViT (patch 8, width 128) on 64 px crops, a 4-block
        # transformer of width 256
        "small": dict(pretrained_encoder="none", width=256, depth=4, heads=4, vit_patch=8, vit_layers=4, vit_heads=4,
                      vit_dim=128, vit_mlp_dim=256, resampler_depth=2, resampler_heads=4, resampler_dim_head=32,
                      resampler_latents=9, decoder_depth=2, decoder_heads=4, decoder_patch=8, resize=72, image_size=64,
                      color_jitter=0.1),
    }


class Block(nn.Module):
    """Pre-LN transformer block (self-attention + MLP), optional key mask."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, mask=None):
        x = x + self.attn(self.norm1(x), mask=mask)
        return x + self.mlp(self.norm2(x))


class PerceiverAttention(nn.Module):
    """Latents attend to [media tokens, latents] (Flamingo-style resampler layer)."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm_media, self.norm_latents = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media, latents):
        lat = self.norm_latents(latents)
        q = self.to_q(lat)
        k, v = self.to_kv(torch.cat([self.norm_media(media), lat], dim=1)).chunk(2, dim=-1)
        b, h = q.shape[0], self.heads
        q, k, v = (z.view(b, z.shape[1], h, -1).transpose(1, 2) for z in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, lat.shape[1], -1))


class PerceiverResampler(nn.Module):
    """(N, L, dim) tokens -> (N, num_latents, dim)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, num_latents: int, ff_mult: int = 4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.media_pos = nn.Parameter(torch.randn(1, 1, dim))
        self.layers = nn.ModuleList(nn.ModuleList([
            PerceiverAttention(dim, heads, dim_head),
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ff_mult * dim, bias=False), nn.GELU(),
                          nn.Linear(ff_mult * dim, dim, bias=False)),
        ]) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = x + self.media_pos
        lat = self.latents.expand(x.shape[0], -1, -1)
        for attn, ff in self.layers:
            lat = attn(x, lat) + lat
            lat = ff(lat) + lat
        return self.norm(lat)


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid*grid, dim) fixed 2-D sin-cos position embedding, as the public code: per axis
    (rows, then columns) ``[sin | cos]`` of ``axis_dim = 2 * ceil(dim / 4)`` with frequencies
    ``10000 ** (-i / (axis_dim / 2))``; concatenated and cut to ``dim``."""
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    axis_dim = 2 * math.ceil(dim / 4)
    table = torch.cat([sinusoidal_embedding(a.reshape(-1), axis_dim, freq_offset=0) for a in (ys, xs)], -1)
    return table[:, :dim]


@register_method
class GR1(Method):
    name = "gr1"
    config_class = GR1Config
    capabilities = frozenset({POLICY, VIDEO_PREDICTION, ACTION_FREE})

    def __init__(self, cfg: GR1Config):
        super().__init__(cfg)
        import torchvision
        if cfg.next_frames != cfg.obs_frames:
            raise ValueError(f"gr1: obs_frames={cfg.obs_frames} and next_frames={cfg.next_frames} must match "
                             "(each obs query group decodes one future view-frame)")
        if cfg.image_size % cfg.decoder_patch:
            raise ValueError(f"gr1: image_size={cfg.image_size} is not divisible by decoder_patch={cfg.decoder_patch}")
        w, n_vt = cfg.width, len(cfg.views) * cfg.obs_frames
        self.tokens_per_image = 1 + cfg.resampler_latents
        self.n_obs = n_vt * self.tokens_per_image
        self.preprocess = ImagePreprocessor(cfg.resize, cfg.image_size, cfg.color_jitter, normalize="imagenet")
        self.vit = torchvision.models.VisionTransformer(cfg.image_size, cfg.vit_patch, cfg.vit_layers, cfg.vit_heads,
                                                        cfg.vit_dim, cfg.vit_mlp_dim)
        self.vit.heads = nn.Identity()  # the classifier is never used
        if pretrained_source(cfg.pretrained_encoder) == "imagenet":
            vit_b_32 = dict(image_size=224, vit_patch=32, vit_layers=12, vit_heads=12, vit_dim=768, vit_mlp_dim=3072)
            bad = {k: getattr(cfg, k) for k, v in vit_b_32.items() if getattr(cfg, k) != v}
            if bad:
                raise ValueError(f"gr1: pretrained_encoder=imagenet loads ViT-B/32 at 224x224, which needs {vit_b_32} "
                                 f"(got {bad}); use pretrained_encoder=none")
        # the classifier is never used (the public model keeps an unused Linear(768, 768) there)
        load_pretrained_encoder(self.vit, cfg.pretrained_encoder, "vit_b_32", skip_prefixes=("heads.",))
        self.resampler = PerceiverResampler(cfg.vit_dim, cfg.resampler_depth, cfg.resampler_heads,
                                            cfg.resampler_dim_head, cfg.resampler_latents)
        self.feat_head = nn.Linear(cfg.vit_dim, w)
        self.latent_head = nn.Linear(cfg.vit_dim, w)
        self.pos_scale = nn.Parameter(torch.zeros(1, n_vt, 1, w))
        self.pos_shift = nn.Parameter(torch.zeros(1, n_vt, 1, w))
        self.action_queries = nn.Parameter(torch.randn(1, cfg.action_horizon, w) * 0.02)
        self.obs_queries = nn.Parameter(torch.randn(1, self.n_obs, w) * 0.02)
        self.blocks = nn.ModuleList(Block(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.action_head = nn.Sequential(nn.Linear(w, w // 2), nn.SiLU(), nn.Linear(w // 2, w // 2), nn.SiLU(),
                                         nn.Linear(w // 2, cfg.action_dim))
        grid = cfg.image_size // cfg.decoder_patch
        self.decoder_proj = nn.Linear(w, w)
        self.decoder_query = nn.Parameter(torch.zeros(1, 1, w))
        self.register_buffer("decoder_pos", sincos_2d(grid, w)[None], persistent=False)
        self.decoder_blocks = nn.ModuleList(Block(w, cfg.decoder_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth))
        self.decoder_head = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 3 * cfg.decoder_patch ** 2))
        for m in (self.blocks, self.action_head, self.decoder_proj, self.decoder_blocks, self.decoder_head):
            init_transformer_weights(m)

    def batch_keys(self, cached_latents: bool = True) -> tuple[str, ...]:
        return ("obs", "action", "action_mask", "next_obs")

    # ------------------------------------------------------------------ network
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed (B, V, T, 3, S, S) -> obs tokens (B, V*T*10, width)."""
        b = images.shape[0]
        x = self.vit._process_input(images.flatten(0, 2))
        x = self.vit.encoder(torch.cat([self.vit.class_token.expand(x.shape[0], -1, -1), x], dim=1))
        tok = torch.cat([self.feat_head(x[:, :1]), self.latent_head(self.resampler(x))], dim=1)
        tok = tok.view(b, -1, *tok.shape[1:]) * (1 + self.pos_scale) + self.pos_shift
        return tok.flatten(1, 2)

    def forward(self, images: torch.Tensor, action_mask: torch.Tensor | None = None):
        """Preprocessed current frames -> (normalised actions (B, Ha, A),
        ImageNet-normalised next frames (B, V, Tn, 3, S, S))."""
        cfg, b = self.cfg, images.shape[0]
        ha, n = cfg.action_horizon, self.n_obs
        x = torch.cat([self.encode_images(images), self.action_queries.expand(b, -1, -1),
                       self.obs_queries.expand(b, -1, -1)], dim=1)
        mask = None
        if action_mask is not None and not bool(action_mask.all()):
            mask = torch.ones(b, x.shape[1], dtype=torch.bool, device=x.device)
            mask[~action_mask, n:n + ha] = False   # nobody attends to an action-free sample's action queries
        for block in self.blocks:
            x = block(x, mask)
        action = self.action_head(x[:, n:n + ha])
        # image decoder: per future view-frame, its obs-query outputs + the patch queries
        q = self.decoder_proj(x[:, n + ha:]).reshape(-1, self.tokens_per_image, cfg.width)
        y = torch.cat([q, (self.decoder_query + self.decoder_pos).expand(q.shape[0], -1, -1)], dim=1)
        for block in self.decoder_blocks:
            y = block(y)
        p, g, s = cfg.decoder_patch, cfg.image_size // cfg.decoder_patch, cfg.image_size
        pix = self.decoder_head(y[:, self.tokens_per_image:]).view(-1, g, g, 3, p, p)
        pix = pix.permute(0, 3, 1, 4, 2, 5).reshape(b, len(cfg.views), cfg.next_frames, 3, s, s)
        return action, pix

    # ------------------------------------------------------------------ contract
    def compute_loss(self, batch):
        mask = self.check_action_free(batch).to(batch["action"].device)
        if "next_obs" not in batch:
            raise KeyError("gr1: the batch has no 'next_obs' frames (GR1 regresses future pixels; see batch_keys())")
        to = batch["obs"].shape[2]
        frames = self.preprocess(torch.cat([batch["obs"], batch["next_obs"]], dim=2))  # same crop + jitter
        action_pred, pix_pred = self(frames[:, :, :to], mask)
        target = self.action_normalizer.normalize(batch["action"].float())
        m = mask.float()
        per_sample = ((action_pred.float() - target) ** 2).mean(dim=(1, 2))
        action_loss = (per_sample * m).sum() / m.sum().clamp_min(1.0)
        image_loss = F.mse_loss(pix_pred.float(), frames[:, :, to:])
        loss = self.cfg.action_loss_weight * action_loss + self.cfg.image_loss_weight * image_loss
        return loss, {"loss": loss.item(), "action_loss": action_loss.item(), "image_loss": image_loss.item(),
                      "action_fraction": m.mean().item()}

    @torch.no_grad()
    def predict_action(self, obs, generator=None):  # deterministic: no noise to draw
        action, _ = self(self.preprocess(obs["obs"].to(self.device), train=False))
        return self.action_normalizer.unnormalize(action.float())

    @torch.no_grad()
    def predict_next_obs(self, obs, action=None):
        """Video prediction: float RGB in [0, 1], (B, V, Tn, 3, S, S) pixels (not latents)."""
        if action is not None:
            raise CapabilityError("gr1 predicts future frames from the current ones only; it has no "
                                  "forward-dynamics mode p(o'|o, a). Call predict_next_obs(obs) without an action.")
        _, pix = self(self.preprocess(obs["obs"].to(self.device), train=False))
        mean = torch.tensor(IMAGENET_MEAN, device=pix.device).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=pix.device).view(3, 1, 1)
        return (pix.float() * std + mean).clamp(0, 1)
