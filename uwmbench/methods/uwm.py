"""Unified World Model (UWM): one diffusion transformer over an action chunk and the next
observation's VAE latents, with independent diffusion timesteps ``t_a`` and ``t_o``.

Spec: the UWM paper (arXiv 2504.02792) and its public code (WEIRDLabUW/unified-world-model @ 677560e).

Network (``size=paper``)
------------------------
- current observation ``o`` (V views x To frames) -> shared ResNet-18-GN -> V*To features of
  ``obs_feature_dim`` (768);
- tokens ``[Ha action tokens, V*49 next-obs latent tokens, R registers]`` + learned positions;
  action tokens: per-step MLP ``A -> action_hidden -> width`` (Mish); latent tokens: Conv3d
  patchify ``patch=(2, 4, 4)`` of the frozen SDXL VAE latents (scaled by ``vae_scaling`` and
  divided by ``latent_extra_scale``);
- ``depth`` AdaLN-Zero DiT blocks; condition = concat(obs features, timestep embedding) with
  timestep embedding = MLP(sinusoidal(t_a) ++ sinusoidal(t_o));
  ``conditioning="cross_attention"``: the V*To features enter as tokens (plus a learned
  position per view-frame) through a cross-attention sub-layer in every block, and AdaLN is
  conditioned on the timestep embedding only;
- final AdaLN layer (width -> width, zero-init), then the action MLP decoder
  ``width -> action_hidden -> A`` and the latent unpatchify ``Linear(width, C*2*4*4)``;
  registers are dropped at the output.

Diffusion: diffusers ``DDIMScheduler`` (100 train steps, ``squaredcos_cap_v2``, clipped
samples, epsilon prediction, 10 inference steps). Training samples ``t_a, t_o ~ U{0..T-1}``
independently; action-free samples (``action_mask`` False) get ``t_a = T-1`` with zero actions
(their action loss is masked only with ``mask_action_loss_for_videos``). ``policy_t_prob`` = p
(default 0, the paper) trains a fraction p of the labelled samples in the policy setting instead
(t_o' = the sampling hold timestep, see ``marginal_t``): with uniform t_o' only ~1 in 10 samples
sees a future as noisy as policy sampling gives it. Loss =
``w_action * mse(eps_a) + w_obs * mse(eps_o)``.

Inference modes (:meth:`UWM.sample`), ``T`` = held ("marginal") timestep, see ``marginal_t``:

==========  ==============================  =============
mode        setting                          denoised
==========  ==============================  =============
policy      o' pure noise held at t_o = T    a
video       a pure noise held at t_a = T     o'
forward     clean a, t_a = 0                 o'
inverse     clean o', t_o = 0                a
joint       one shared t                     a and o'
==========  ==============================  =============

``marginal_t`` picks ``T``: ``"first_inference_step"`` (default, the public code that produced
the published numbers) holds the marginalised variable at the DDIM schedule's first step,
``timesteps[0]`` = 90 for 100 train / 10 inference steps; ``"T"`` (the paper text) holds it at
the last train step ``T-1`` = 99. The weights do not depend on it: it is a sampling switch.

Ablations (config switches): ``num_registers`` (24 in the public LIBERO configs; the paper's
ablation uses 8/4/0), ``conditioning`` (adaln | cross_attention), ``objective`` (future: the
method; current: diffuse the current frames' latents instead; none: actions only, no latent
tokens), ``mask_action_loss_for_videos``, ``marginal_t``.

Encoder init: ``pretrained_encoder`` = ``imagenet`` (``paper`` preset: torchvision
``ResNet18_Weights.IMAGENET1K_V1``, GroupNorm affine fresh (1, 0)), ``none`` (``tiny``), or a
local weights file. Conventions vs the paper text and the public code: ``docs/conventions.md``.

Building the paper size offline: the SDXL VAE comes from the model hub and the ImageNet
encoder from torchvision's download. Without them, use
``build_method("uwm", "paper", **UWM.offline_overrides("paper"))`` (= ``vae="random:sdxl"``,
the SDXL architecture with random weights, and ``pretrained_encoder="none"``): right parameter
counts and speed, useless latents.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    ACTION_FREE, FORWARD_DYNAMICS, INVERSE_DYNAMICS, POLICY, VIDEO_PREDICTION, CapabilityError, Generators, Method,
    register_method, sample_noise,
)
from .diffusion import DiffusionConfig, make_ddim
from .latent_encoder import LatentEncoder
from .nets import (
    ActionMLP, DiTBlock, FinalLayer, ImagePreprocessor, LatentPatchify, LatentUnpatchify, MultiViewEncoder,
    TimestepEmbedder, init_transformer_weights,
)

MODES = ("policy", "video", "forward", "inverse", "joint")
CONDITIONINGS = ("adaln", "cross_attention")
OBJECTIVES = ("future", "current", "none")
MARGINAL_TS = ("T", "first_inference_step")


# ----------------------------------------------------------------------------- config
@dataclass
class UWMConfig(DiffusionConfig):
    name: str = "uwm"
    # transformer
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    num_registers: int = 24
    action_hidden: int = 3072        # action MLP encoder/decoder hidden width
    obs_feature_dim: int = 768       # ResNet feature per view-frame
    time_freq_dim: int = 512         # sinusoidal dim per timestep (two timesteps)
    time_hidden: int = 2048
    time_out: int = 512
    encoder_width: int = 64          # ResNet-18 base width (64 = the real ResNet-18)
    # switches (ablations)
    conditioning: str = "adaln"      # adaln | cross_attention
    objective: str = "future"        # future | current | none
    marginal_t: str = "first_inference_step"  # first_inference_step (public code, t=90) | T (paper text, t=99)
    mask_action_loss_for_videos: bool = False  # public code: False; PAD/GR1 mask
    # timestep sampling: the fraction of action-labelled samples trained in the policy setting
    # (t_o' held at the sampling hold timestep, see marginal_t) instead of t_o' ~ U{0..T-1};
    # 0 = the paper and the public code (independent uniform timesteps)
    policy_t_prob: float = 0.0
    # diffusion
    # latents
    vae: str = "stabilityai/sdxl-vae"  # hub id | local save_pretrained folder | random:<preset>
    vae_scaling: float = 0.13025     # <= 0: take the VAE config's scaling_factor
    latent_extra_scale: float = 3.0
    patch: tuple[int, int, int] = (2, 4, 4)
    # loss weights
    w_action: float = 1.0
    w_obs: float = 1.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": dict(width=768, depth=12, heads=12, num_registers=24, action_hidden=3072, obs_feature_dim=768,
                      time_freq_dim=512, time_hidden=2048, time_out=512, encoder_width=64,
                      resize=240, image_size=224, vae="stabilityai/sdxl-vae", vae_scaling=0.13025,
                      patch=(2, 4, 4), pretrained_encoder="imagenet"),
        # trains on a CPU in seconds: 32x32 images, 4x4x4 latents, 8 latent tokens
        "tiny": dict(pretrained_encoder="none", width=64, depth=2, heads=4, num_registers=4, action_hidden=64, obs_feature_dim=32,
                     time_freq_dim=32, time_hidden=64, time_out=32, encoder_width=8,
                     resize=36, image_size=32, vae="random:tiny", vae_scaling=0.0, patch=(2, 2, 2)),
        # learns on a 2-core CPU: 64 px crops of 72 px frames -> 8x8x4 latents of the "small"
        # AutoencoderKL (pass a fitted one: `uwmbench fit-vae preset=small`, then method.vae=<folder>),
        # 16 latent tokens per view, a 4-block AdaLN transformer of width 256
        "small": dict(pretrained_encoder="none", width=256, depth=4, heads=4, num_registers=8, action_hidden=1024,
                      obs_feature_dim=256, time_freq_dim=128, time_hidden=512, time_out=128, encoder_width=16,
                      resize=72, image_size=64, color_jitter=0.1, vae="random:small", vae_scaling=0.0, patch=(2, 2, 2)),
    }

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for key, allowed in (("conditioning", CONDITIONINGS), ("objective", OBJECTIVES), ("marginal_t", MARGINAL_TS)):
            value = getattr(self, key)
            if value not in allowed:
                raise ValueError(f"uwm config: {key}={value!r} is not one of {allowed}")
        if self.width % self.heads:
            raise ValueError(f"uwm config: width={self.width} is not divisible by heads={self.heads}")
        if len(self.patch) != 3:
            raise ValueError(f"uwm config: patch={self.patch!r} must be (frames, h, w)")
        for key in ("num_registers", "depth"):
            if getattr(self, key) < 0:
                raise ValueError(f"uwm config: {key}={getattr(self, key)} must be >= 0")
        if not 0.0 <= self.policy_t_prob <= 1.0:
            raise ValueError(f"uwm config: policy_t_prob={self.policy_t_prob} must be in [0, 1]")
        if not 0 < self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"uwm config: num_inference_steps={self.num_inference_steps} must be in "
                             f"1..num_train_timesteps={self.num_train_timesteps}")


# ----------------------------------------------------------------------------- denoiser
class UWMDenoiser(nn.Module):
    """The noise-prediction transformer. ``forward(cond, noisy_action, t_action, noisy_obs,
    t_obs) -> (eps_action, eps_obs)``; ``cond`` is (B, V*To*D) features (adaln) or (B, V*To, D)
    tokens (cross_attention); timesteps are (B,) integer tensors; ``noisy_obs`` is
    (B, V, Tn, C, h, w) latents, or None for ``objective="none"`` (then ``eps_obs`` is None)."""

    def __init__(self, cfg: UWMConfig, num_cond_tokens: int, latent_shape: tuple[int, int, int, int, int] | None):
        super().__init__()
        self.cfg = cfg
        self.latent_shape = latent_shape  # (V, T, C, h, w) or None
        w = cfg.width
        self.cross = cfg.conditioning == "cross_attention"
        t_emb = cfg.time_out
        cond_dim = t_emb if self.cross else num_cond_tokens * cfg.obs_feature_dim + t_emb
        self.time_embed = TimestepEmbedder(2, cfg.time_freq_dim, cfg.time_hidden, t_emb)
        self.action_in = ActionMLP(cfg.action_dim, cfg.action_hidden, w)
        self.action_out = ActionMLP(w, cfg.action_hidden, cfg.action_dim)
        n_obs = 0
        if latent_shape is not None:
            v, t, c, h, hw = latent_shape
            pt, ph, pw = cfg.patch
            if t % pt or h % ph or hw % pw:
                raise ValueError(f"uwm config: latent shape (frames={t}, h={h}, w={hw}) is not divisible by "
                                 f"patch={tuple(cfg.patch)}")
            n_obs = v * (t // pt) * (h // ph) * (hw // pw)
            self.obs_in = LatentPatchify(c, w, cfg.patch)
            self.obs_out = LatentUnpatchify(w, c, cfg.patch)
        self.num_action_tokens = cfg.action_horizon
        self.num_obs_tokens = n_obs
        self.registers = nn.Parameter(torch.zeros(1, cfg.num_registers, w))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.action_horizon + n_obs + cfg.num_registers, w))
        if self.cross:
            self.context_pos = nn.Parameter(torch.zeros(1, num_cond_tokens, cfg.obs_feature_dim))
        self.blocks = nn.ModuleList([
            DiTBlock(w, cfg.heads, cond_dim, cfg.mlp_ratio, qkv_bias=True,
                     context_dim=cfg.obs_feature_dim if self.cross else None)
            for _ in range(cfg.depth)])
        self.final = FinalLayer(w, w, cond_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        init_transformer_weights(self)
        nn.init.normal_(self.registers, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        if self.cross:
            nn.init.normal_(self.context_pos, std=0.02)
        if self.num_obs_tokens:
            wt = self.obs_in.proj.weight
            nn.init.normal_(wt.view(wt.shape[0], -1), std=0.02)
            nn.init.zeros_(self.obs_in.proj.bias)
        for block in self.blocks:  # AdaLN-Zero
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for m in (self.final.adaLN_modulation[-1], self.final.linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, cond: torch.Tensor, noisy_action: torch.Tensor, t_action: torch.Tensor,
                noisy_obs: torch.Tensor | None, t_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = noisy_action.shape[0]
        temb = self.time_embed(t_action, t_obs)
        parts = [self.action_in(noisy_action)]
        if self.num_obs_tokens:
            if noisy_obs is None:
                raise ValueError("UWMDenoiser: noisy_obs is required unless objective='none'")
            parts.append(self.obs_in(noisy_obs))
        if self.registers.shape[1]:
            parts.append(self.registers.expand(b, -1, -1))
        x = torch.cat(parts, dim=1) + self.pos_embed
        if self.cross:
            c, context = temb, cond + self.context_pos
        else:
            c, context = torch.cat([cond, temb], dim=-1), None
        for block in self.blocks:
            x = block(x, c, context=context)
        x = self.final(x, c)
        ha = self.num_action_tokens
        eps_a = self.action_out(x[:, :ha])
        eps_o = None
        if self.num_obs_tokens:
            eps_o = self.obs_out(x[:, ha:ha + self.num_obs_tokens], self.latent_shape)
        return eps_a, eps_o


# ----------------------------------------------------------------------------- method
@register_method
class UWM(Method):
    """Unified World Model; see the module docstring."""

    name = "uwm"
    config_class = UWMConfig
    capabilities = frozenset({POLICY, FORWARD_DYNAMICS, VIDEO_PREDICTION, INVERSE_DYNAMICS, ACTION_FREE})

    def __init__(self, cfg: UWMConfig):
        super().__init__(cfg)
        cfg.validate()
        self.cfg: UWMConfig = cfg
        nv = len(cfg.views)
        self.pre = ImagePreprocessor(cfg.resize, cfg.image_size, jitter=cfg.color_jitter, normalize="imagenet")
        self.obs_encoder = MultiViewEncoder(cfg.obs_feature_dim, cfg.encoder_width, cfg.pretrained_encoder)
        self.latent_encoder: LatentEncoder | None = None
        latent_shape = None
        if cfg.objective != "none":
            self.latent_encoder = LatentEncoder(cfg.vae, cfg.resize, cfg.image_size,
                                                scaling_factor=cfg.vae_scaling if cfg.vae_scaling > 0 else None,
                                                extra_scale=cfg.latent_extra_scale)
            le = self.latent_encoder
            frames = cfg.next_frames if cfg.objective == "future" else cfg.obs_frames
            latent_shape = (nv, frames, le.latent_channels, le.latent_size, le.latent_size)
        self.latent_shape = latent_shape
        self.denoiser = UWMDenoiser(cfg, nv * cfg.obs_frames, latent_shape)
        self.scheduler = make_ddim(cfg)
        # what this instance can do (the class declares the full set for objective="future")
        self.capabilities = self.capabilities_for(cfg)

    @classmethod
    def capabilities_for(cls, cfg: UWMConfig) -> frozenset[str]:
        """Dynamics and video prediction need the future-frame objective; without it (current
        or none) UWM is a policy that still trains on action-free samples."""
        return frozenset(cls.capabilities) if cfg.objective == "future" else frozenset({POLICY, ACTION_FREE})

    # ------------------------------------------------------------------ helpers
    @property
    def latent_key(self) -> str | None:
        return {"future": "next_obs_latent", "current": "obs_latent", "none": None}[self.cfg.objective]

    def batch_keys(self, cached_latents: bool = True) -> tuple[str, ...]:
        """Batch keys ``compute_loss`` reads: ``obs``, ``action``, ``action_mask`` and, for the
        latent target, ``next_obs_latent`` (objective future) or ``obs_latent`` (objective
        current); nothing more for objective none. With ``cached_latents=False`` the image key
        (``next_obs`` for future; ``obs`` is already there for current) is listed instead and the
        latents are encoded on the fly with ``self.latent_encoder``, from the frames cropped and
        jittered exactly like the condition frames. Cached latents come with ``crop_offset``
        (the data pipeline adds it): the condition frames are cropped there (see
        :meth:`_condition_and_target`)."""
        keys = ("obs", "action", "action_mask")
        if self.cfg.objective == "future":
            return keys + (("next_obs_latent",) if cached_latents else ("next_obs",))
        if self.cfg.objective == "current" and cached_latents:
            return keys + ("obs_latent",)
        return keys

    def _obs_images(self, obs: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        x = obs["obs"] if isinstance(obs, dict) else obs
        if x.dim() != 6:
            raise ValueError(f"uwm: obs must be (B, V, To, 3, H, W), got shape {tuple(x.shape)}")
        return x.to(self.device)

    def _condition(self, images: torch.Tensor, train: bool, offsets: torch.Tensor | None = None,
                   pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder features of the current frames: ``images`` preprocessed here (crop at
        ``offsets`` if given, else random in training / center at eval), or ``pixels`` already
        preprocessed (normalised) by the caller."""
        cfg = self.cfg
        if images.shape[1] != len(cfg.views) or images.shape[2] != cfg.obs_frames:
            raise ValueError(f"uwm: obs has {images.shape[1]} views x {images.shape[2]} frames, the config expects "
                             f"{len(cfg.views)} x {cfg.obs_frames}")
        x = self.pre(images, train=train, offsets=offsets) if pixels is None else pixels
        return self.obs_encoder(x, as_tokens=cfg.conditioning == "cross_attention")

    def _condition_and_target(self, batch: dict[str, torch.Tensor], images: torch.Tensor,
                              train: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Condition features and the diffused latents, with ONE crop for both:

        - cached latents (``next_obs_latent``/``obs_latent`` in the batch): the condition frames
          are cropped at the batch's ``crop_offset`` (the crop the cached latents were encoded
          from; the center crop when absent, as at eval). Colour jitter (training) applies to
          the condition frames only: cached latents are un-jittered;
        - on the fly (``next_obs``/``obs`` images): current and target frames go through one
          augmentation call (one crop and one jitter draw per sample, shared by all its views
          and frames, or the batch's ``crop_offset``), then the condition frames are normalised
          for the encoder and the target frames for the VAE (posterior mode) - the public code's
          augmentation, exact;
        - objective none: the condition only."""
        offsets = batch.get("crop_offset")
        key = self.latent_key
        if key is None:
            return self._condition(images, train, offsets), None
        if batch.get(key) is not None:
            if offsets is None and train and self.pre.image_size < self.pre.resize:
                offsets = torch.full((images.shape[0], 2), (self.pre.resize - self.pre.image_size) // 2)
            return self._condition(images, train, offsets), self._check_latents(batch[key], key)
        img_key = "next_obs" if key == "next_obs_latent" else "obs"
        if img_key not in batch:
            raise KeyError(f"uwm (objective={self.cfg.objective}): batch needs {key!r} or {img_key!r}")
        assert self.latent_encoder is not None
        to = images.shape[2]
        frames = images if img_key == "obs" else torch.cat([images, batch["next_obs"].to(self.device)], dim=2)
        x = self.pre.augment(frames, train=train, offsets=offsets)  # [0, 1], one draw for all frames
        cond = self._condition(images, train, pixels=self.pre.normalize_images(x[:, :, :to]))
        target = x if img_key == "obs" else x[:, :, to:]
        z = self.latent_encoder.encode_pixels(self.latent_encoder.pre.normalize_images(target))
        return cond, self._check_latents(z, img_key)

    def _check_latents(self, z: torch.Tensor, key: str) -> torch.Tensor:
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"uwm: batch[{key!r}] has shape {tuple(z.shape)}, expected (B, *{self.latent_shape})")
        return z.to(self.device, torch.float32).contiguous()  # randn_like(z) follows z's strides

    def _target_latents(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The un-augmented diffused latents (eval): cached ``next_obs_latent``/``obs_latent``, or
        encoded from the frames at the batch's ``crop_offset`` (center crop when absent)."""
        key = self.latent_key
        if key is None:
            return None
        if key in batch and batch[key] is not None:
            return self._check_latents(batch[key], key)
        img_key = "next_obs" if key == "next_obs_latent" else "obs"
        if img_key not in batch:
            raise KeyError(f"uwm (objective={self.cfg.objective}): batch needs {key!r} or {img_key!r}")
        assert self.latent_encoder is not None
        z = self.latent_encoder.encode(batch[img_key].to(self.device), offsets=batch.get("crop_offset"))
        return self._check_latents(z, img_key)

    def _full(self, t: int | torch.Tensor, b: int) -> torch.Tensor:
        return torch.full((b,), int(t), dtype=torch.long, device=self.device)

    def marginal_timestep(self) -> int:
        """Timestep at which a marginalised (pure-noise) variable is held during sampling:
        ``timesteps[0]`` of the DDIM schedule (90; ``marginal_t="first_inference_step"``, the
        public code) or ``T-1`` (99; ``marginal_t="T"``, the paper text)."""
        if self.cfg.marginal_t == "T":
            return self.cfg.num_train_timesteps - 1
        self.scheduler.set_timesteps(self.cfg.num_inference_steps)
        return int(self.scheduler.timesteps[0])

    def _randn(self, shape: tuple[int, ...], generator: Generators) -> torch.Tensor:
        return sample_noise(shape, generator, self.device)

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        T = cfg.num_train_timesteps
        images = self._obs_images(batch)
        b = images.shape[0]
        mask = self.check_action_free(batch).to(self.device)
        cond, z = self._condition_and_target(batch, images, train=self.training)
        action = self.action_normalizer.normalize(batch["action"].to(self.device, torch.float32))
        action = torch.where(mask[:, None, None], action, torch.zeros_like(action))
        t_a = torch.randint(0, T, (b,), device=self.device)
        t_a = torch.where(mask, t_a, torch.full_like(t_a, T - 1))
        noise_a = torch.randn_like(action)
        noisy_a = self.scheduler.add_noise(action, noise_a, t_a)

        if z is not None:
            t_o = torch.randint(0, T, (b,), device=self.device)
            if cfg.policy_t_prob > 0:  # some samples in the policy setting: the future held at the hold timestep
                held = mask & (torch.rand(b, device=self.device) < cfg.policy_t_prob)
                t_o = torch.where(held, torch.full_like(t_o, self.marginal_timestep()), t_o)
            noise_o = torch.randn_like(z)
            noisy_o = self.scheduler.add_noise(z, noise_o, t_o)
        else:
            t_o, noisy_o = self._full(T - 1, b), None

        eps_a, eps_o = self.denoiser(cond, noisy_a, t_a, noisy_o, t_o)
        per_sample = F.mse_loss(eps_a.float(), noise_a, reduction="none").mean(dim=(1, 2))
        if cfg.mask_action_loss_for_videos:
            w = mask.float()
            action_loss = (per_sample * w).sum() / w.sum().clamp_min(1.0)
        else:
            action_loss = per_sample.mean()
        obs_loss = F.mse_loss(eps_o.float(), noise_o) if eps_o is not None else action_loss.new_zeros(())
        loss = cfg.w_action * action_loss + cfg.w_obs * obs_loss
        return loss, {"loss": float(loss.detach()), "action_loss": float(action_loss.detach()),
                      "obs_loss": float(obs_loss.detach())}

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, obs: dict[str, torch.Tensor] | torch.Tensor, mode: str = "policy",
               action: torch.Tensor | None = None, next_obs_latent: torch.Tensor | None = None,
               generator: Generators = None) -> dict[str, torch.Tensor | None]:
        """Sample with one of the five modes (see the module docstring).

        ``obs``: dict with ``obs`` uint8 (B, V, To, 3, H, W) (or that tensor). ``action``: env-unit
        actions (B, Ha, A), required for ``forward``. ``next_obs_latent``: latents (B, V, Tn, C, h, w)
        of the diffused frames, required for ``inverse``. ``generator`` draws the initial noise.
        Returns ``{"action": env-unit actions or None, "next_obs_latent": latents or None}``
        (None for the variable a mode does not denoise)."""
        out = self._sample(obs, mode, action, next_obs_latent, generator)
        a = out["action"]
        return {"action": None if a is None else self.action_normalizer.unnormalize(a),
                "next_obs_latent": out["next_obs_latent"]}

    def _sample(self, obs, mode: str, action=None, next_obs_latent=None, generator=None) -> dict[str, torch.Tensor | None]:
        """As :meth:`sample`, actions in normalised (network) units."""
        cfg = self.cfg
        if mode not in MODES:
            raise ValueError(f"uwm.sample: mode={mode!r} is not one of {MODES}")
        if mode != "policy" and self.latent_shape is None:
            raise CapabilityError(f"uwm with objective='none' only samples mode='policy' (asked for {mode!r})")
        images = self._obs_images(obs)
        b = images.shape[0]
        cond = self._condition(images, train=False)
        sched = self.scheduler
        # objective none: t_o is not a noise level but a constant input, the one used in training
        t_hold = self._full(self.marginal_timestep() if self.latent_shape is not None else cfg.num_train_timesteps - 1, b)
        sched.set_timesteps(cfg.num_inference_steps)
        zero = self._full(0, b)

        a = self._randn((b, cfg.action_horizon, cfg.action_dim), generator)
        o = self._randn((b, *self.latent_shape), generator) if self.latent_shape is not None else None
        if mode == "forward":
            if action is None:
                raise ValueError("uwm.sample(mode='forward') needs action")
            a = self.action_normalizer.normalize(action.to(self.device, torch.float32))
        if mode == "inverse":
            if next_obs_latent is None:
                raise ValueError("uwm.sample(mode='inverse') needs next_obs_latent")
            o = self._check_latents(next_obs_latent, "next_obs_latent")

        for t in sched.timesteps:
            tt = self._full(t, b)
            if mode == "policy":
                eps_a, _ = self.denoiser(cond, a, tt, o, t_hold)
                a = sched.step(eps_a, t, a).prev_sample
            elif mode == "inverse":
                eps_a, _ = self.denoiser(cond, a, tt, o, zero)
                a = sched.step(eps_a, t, a).prev_sample
            elif mode == "video":
                _, eps_o = self.denoiser(cond, a, t_hold, o, tt)
                o = sched.step(eps_o, t, o).prev_sample
            elif mode == "forward":
                _, eps_o = self.denoiser(cond, a, zero, o, tt)
                o = sched.step(eps_o, t, o).prev_sample
            else:  # joint
                eps_a, eps_o = self.denoiser(cond, a, tt, o, tt)
                a = sched.step(eps_a, t, a).prev_sample
                o = sched.step(eps_o, t, o).prev_sample
        return {"action": a if mode in ("policy", "inverse", "joint") else None,
                "next_obs_latent": o if mode in ("video", "forward", "joint") else None}

    # ------------------------------------------------------------------ contract
    @torch.no_grad()
    def predict_action(self, obs: dict[str, torch.Tensor], generator: Generators = None) -> torch.Tensor:
        return self.sample(obs, "policy", generator=generator)["action"]

    def _require_dynamics(self, what: str) -> None:
        if self.cfg.objective != "future":
            raise CapabilityError(f"uwm with objective={self.cfg.objective!r} does not model the next observation "
                                  f"({what} needs objective='future')")

    @torch.no_grad()
    def predict_next_obs(self, obs: dict[str, torch.Tensor], action: torch.Tensor | None = None,
                         generator: Generators = None) -> torch.Tensor:
        """Forward dynamics (``action`` given) or video prediction; next-obs latents."""
        self._require_dynamics("predict_next_obs")
        mode = "video" if action is None else "forward"
        return self.sample(obs, mode, action=action, generator=generator)["next_obs_latent"]

    @torch.no_grad()
    def infer_action(self, obs: dict[str, torch.Tensor], next_obs: torch.Tensor,
                     generator: Generators = None) -> torch.Tensor:
        """Inverse dynamics; ``next_obs`` uint8 frames (B, V, Tn, 3, H, W) or latents."""
        self._require_dynamics("infer_action")
        if next_obs.dtype == torch.uint8:
            assert self.latent_encoder is not None
            next_obs = self.latent_encoder.encode(next_obs.to(self.device))
        return self.sample(obs, "inverse", next_obs_latent=next_obs, generator=generator)["action"]

    @torch.no_grad()
    def validation_metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Validation numbers (lower is better), deterministic (fixed noise seed) and without
        touching the global RNG stream:

        - ``val/loss``, ``val/action_loss``, ``val/obs_loss``: the training loss terms;
        - ``val/marginal_action_mse``: policy sampling vs the true actions;
        - ``val/inverse_action_mse``: inverse dynamics given the true next-obs latents vs the
          true actions;
        - ``val/next_obs_latent_mse``: forward dynamics given the true actions vs the true
          next-obs latents;
        - ``val/inverse_rel_err_pos``: the inverse-dynamics action error in env units, relative
          to the action magnitude (as the trainer's ``val/open_loop_rel_err_pos`` of the policy);
        - ``val/copy_last_latent_mse``, ``val/forward_psnr``, ``val/copy_last_psnr``: forward
          dynamics against the copy-last-frame baseline (:meth:`_copy_last_baseline`; PSNR: higher
          is better).

        Action MSEs are in normalised action units; all use only samples with real actions
        (``action_mask``); all but the first two exist only for ``objective="future"``."""
        was_training = self.training
        self.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(0)
                _, metrics = self.compute_loss(batch)
            out = {f"val/{k}": v for k, v in metrics.items()}
            mask = self.check_action_free(batch).to(self.device)
            if not bool(mask.any()):
                return out
            idx = mask.nonzero().squeeze(1)
            obs = self._obs_images(batch)[idx]
            true_a = self.action_normalizer.normalize(batch["action"].to(self.device, torch.float32)[idx])
            gen = torch.Generator(device="cpu").manual_seed(0)
            a = self._sample(obs, "policy", generator=gen)["action"]
            out["val/marginal_action_mse"] = float(F.mse_loss(a, true_a))
            if self.cfg.objective == "future":
                z = self._target_latents({k: (v[idx] if torch.is_tensor(v) else v) for k, v in batch.items()})
                a = self._sample(obs, "inverse", next_obs_latent=z, generator=gen)["action"]
                out["val/inverse_action_mse"] = float(F.mse_loss(a, true_a))
                inv_rel = _rel_err_pos(self.action_normalizer.unnormalize(a), self.action_normalizer.unnormalize(true_a))
                out["val/inverse_rel_err_pos"] = inv_rel
                zf = self._sample(obs, "forward", action=self.action_normalizer.unnormalize(true_a),
                                  generator=gen)["next_obs_latent"]
                out["val/next_obs_latent_mse"] = float(F.mse_loss(zf, z))
                off = batch.get("crop_offset")
                out.update(self._copy_last_baseline(obs, z, zf, None if off is None else off[idx.to(off.device)]))
            return out
        finally:
            self.train(was_training)

    @torch.no_grad()
    def _copy_last_baseline(self, obs: torch.Tensor, z: torch.Tensor, zf: torch.Tensor,
                            offsets: torch.Tensor | None) -> dict[str, float]:
        """Forward dynamics against the copy-last-frame baseline (predict that every next frame
        equals the last current one): ``val/copy_last_latent_mse`` (that baseline's latent MSE,
        beside ``val/next_obs_latent_mse``), ``val/forward_psnr`` and ``val/copy_last_psnr`` (dB,
        frames decoded by the same VAE, against the decoded true next latents, so the VAE's own
        reconstruction error is not counted against either). A model that has learned dynamics
        beats the baseline; one that only copies its input matches it."""
        enc = self.latent_encoder
        assert enc is not None
        last = obs[:, :, -1:]                                            # (B, V, 1, 3, H, W)
        zl = enc.encode(last.to(self.device), offsets=offsets).to(torch.float32)
        zc = zl.expand_as(z)
        true = enc.decode(z).float()
        out = {"val/copy_last_latent_mse": float(F.mse_loss(zc, z)),
               "val/forward_psnr": _psnr(enc.decode(zf).float(), true),
               "val/copy_last_psnr": _psnr(enc.decode(zc).float(), true)}
        return out


def _rel_err_pos(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Mean |error| of the position dims (0:3) / mean |true action| of those dims (env units)."""
    return float((pred[..., :3] - true[..., :3]).abs().mean() / true[..., :3].abs().mean().clamp_min(1e-9))


def _psnr(pred: torch.Tensor, true: torch.Tensor) -> float:
    """PSNR in dB of uint8-range images (mean over the whole batch's pixels)."""
    mse = F.mse_loss(pred, true).clamp_min(1e-10)
    return float(10 * torch.log10(255.0 ** 2 / mse))


__all__ = ["UWM", "UWMConfig", "UWMDenoiser", "MODES"]
