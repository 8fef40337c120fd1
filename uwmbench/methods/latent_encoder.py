"""Frozen image -> latent encoder (diffusers ``AutoencoderKL``) used by UWM and PAD.

``source`` chooses the weights:

- a model-hub id, e.g. ``stabilityai/sdxl-vae`` (the paper; needs the hub or its cache),
- a local folder written by ``AutoencoderKL.save_pretrained`` (e.g. by ``uwmbench fit-vae``),
- ``config:<file.json>``: the architecture only (used when loading checkpoints offline),
- ``random:<preset>`` (``random:tiny``, ``random:small``): a randomly initialised VAE of that
  preset, for tests and smoke runs only (logged loudly).

Latents are ``vae.encode(x).latent_dist.mode() * scaling_factor / extra_scale`` with x the
resized, cropped (center crop unless ``offsets`` are given) image in [-1, 1]. The posterior
*mode* (not a sample, as the public code draws) is used so that cached latents and on-the-fly
latents are the same computation.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch import nn

from .nets import ImagePreprocessor

log = logging.getLogger(__name__)

# Random-init presets (architecture only; never a substitute for trained weights).
VAE_PRESETS = {
    # 8x downsampling (4 blocks) like SD/SDXL, very thin: CPU tests
    "tiny": dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8, latent_channels=4),
    # 8x downsampling, enough capacity to fit LIBERO frames on a CPU in minutes
    "small": dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1, norm_num_groups=32, latent_channels=4),
    # the SDXL VAE's architecture (stabilityai/sdxl-vae, ~83.7M params) with random weights:
    # builds paper-size models offline for parameter counts and speed tests, never for training
    "sdxl": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, latent_channels=4,
                 sample_size=1024, scaling_factor=0.13025),
}


def build_autoencoder(source: str):
    from diffusers import AutoencoderKL
    if source.startswith("random:"):
        preset = source.split(":", 1)[1]
        if preset not in VAE_PRESETS:
            raise ValueError(f"vae source {source!r}: unknown preset, choose one of {sorted(VAE_PRESETS)}")
        kw = VAE_PRESETS[preset]
        n = len(kw["block_out_channels"])
        log.warning("latent encoder: RANDOMLY INITIALISED VAE (%s) - for tests/smoke runs only", source)
        return AutoencoderKL(
            in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            **kw)
    if source.startswith("config:"):  # architecture only (weights come from a checkpoint)
        cfg_path = Path(source.split(":", 1)[1])
        if not cfg_path.is_file():
            raise FileNotFoundError(f"vae source {source!r}: no such config file")
        cfg = json.loads(cfg_path.read_text())
        return AutoencoderKL.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    p = Path(source).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"vae source {p} has no config.json (expected an AutoencoderKL.save_pretrained folder)")
        return AutoencoderKL.from_pretrained(str(p), low_cpu_mem_usage=False)
    if source.startswith(("/", "~", "./", "../")) or source.count("/") > 1:  # a local path, not a hub id
        raise FileNotFoundError(f"vae source {source!r}: no such folder ({p.absolute()})")
    try:
        return AutoencoderKL.from_pretrained(source)
    except Exception as e:  # offline, no cache, wrong id
        msg = (f"could not load VAE {source!r}: not a local folder, and the model hub does not have it "
               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Offline, fit one on your data "
               f"with `uwmbench fit-vae` and point method.vae at the saved folder.")
        if isinstance(e, OSError):  # not found on the hub or in its cache (what offline gives too)
            raise FileNotFoundError(msg) from e
        raise RuntimeError(msg) from e


class LatentEncoder(nn.Module):
    """Frozen VAE plus the exact image preprocessing that feeds it."""

    def __init__(self, source: str, resize: int, image_size: int, scaling_factor: float | None = None,
                 extra_scale: float = 3.0):
        super().__init__()
        self.source = source
        self.vae = build_autoencoder(source)
        self.vae.requires_grad_(False)
        self.vae.eval()
        sf = scaling_factor if scaling_factor is not None else getattr(self.vae.config, "scaling_factor", 1.0)
        self.scaling_factor = float(sf)
        self.extra_scale = float(extra_scale)
        self.pre = ImagePreprocessor(resize, image_size, jitter=0.0, normalize="sym")
        self.latent_channels = int(self.vae.config.latent_channels)
        self.downsample = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_size = image_size // self.downsample

    def train(self, mode: bool = True):  # the VAE stays in eval mode
        super().train(mode)
        self.vae.eval()
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor, chunk: int = 64, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (B, ..., 3, H, W) -> latents (B, ..., C, h, w), posterior mode; center crop, or
        the crop at ``offsets`` ((B, 2) or one (2,) pair of ``(oy, ox)`` in the resized image,
        shared by every frame of a sample; see :func:`nets.crop_offsets`)."""
        lead = images.shape[:-3]
        b = lead[0] if lead else 1
        x = self.pre(images.reshape(b, -1, *images.shape[-3:]), train=False, offsets=offsets)
        z = self.encode_pixels(x.reshape(-1, *x.shape[-3:]), chunk)
        return z.reshape(*lead, *z.shape[1:])

    @torch.no_grad()
    def encode_pixels(self, x: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """Preprocessed images in [-1, 1] (..., 3, S, S) -> latents (..., C, h, w) (posterior
        mode, scaled): the VAE half of :meth:`encode`, for callers that crop and jitter
        themselves (UWM's on-the-fly target, which shares the condition frames' augmentation)."""
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        outs = []
        dtype = next(self.vae.parameters()).dtype
        for i in range(0, x.shape[0], chunk):
            z = self.vae.encode(x[i:i + chunk].to(dtype)).latent_dist.mode()
            outs.append(z.float())
        z = torch.cat(outs) * (self.scaling_factor / self.extra_scale)
        # contiguous: CPU convolutions may return channels-last strides, and randn_like(z) follows them
        return z.reshape(*lead, *z.shape[1:]).contiguous()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """latents (..., C, h, w) -> uint8 images (..., 3, S, S)."""
        lead = latents.shape[:-3]
        z = latents.reshape(-1, *latents.shape[-3:]) * (self.extra_scale / self.scaling_factor)
        dtype = next(self.vae.parameters()).dtype
        outs = [self.vae.decode(z[i:i + chunk].to(dtype)).sample.float() for i in range(0, z.shape[0], chunk)]
        x = ((torch.cat(outs).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.reshape(*lead, *x.shape[1:])

    def fingerprint(self) -> str:
        """Identifies encoder weights + preprocessing; part of every latent-cache key. It hashes
        the weights themselves, not where they were loaded from: the VAE a checkpoint carries (a
        copy in its folder) keys the same caches as the folder it was trained with."""
        h = hashlib.sha256()
        h.update(json.dumps(dict(resize=self.pre.resize, size=self.pre.image_size,
                                 sf=self.scaling_factor, extra=self.extra_scale), sort_keys=True).encode())
        for k, t in sorted(self.vae.state_dict().items()):
            h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]
