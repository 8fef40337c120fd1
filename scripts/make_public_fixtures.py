#!/usr/bin/env python
"""Build the ``tests/fixtures/public_ckpt/<method>/`` fixtures of ``uwmbench import-checkpoint``
by running the PUBLIC UWM code (github.com/WEIRDLabUW/unified-world-model), not ours.

For each of uwm, dp, pad, gr1 this script

1. composes the public hydra config (``configs/train_<method>_robomimic.yaml``, the LIBERO
   configs) with size overrides (a reduced model, 32x32 frames) and instantiates the public
   model class from it (``hydra.utils.instantiate(config.model)``);
2. re-draws every trainable weight at random under a fixed seed (the public init zeroes the
   AdaLN-Zero layers, which would hide a wrong mapping of most weights);
3. feeds a few fixed inputs through the public model in eval mode and stores inputs and
   outputs in ``io.pt``: noise predictions for UWM/DP/PAD, actions and pixels for GR1, plus
   whole DDIM sampling loops from fixed noise (UWM policy and video modes, DP);
4. saves ``models.pt`` with the public ``maybe_save_checkpoint`` of ``experiments/<m>/train.py``
   (same top-level keys: model, optimizer, scheduler, scaler, action_normalizer,
   lowdim_normalizer, step);
5. writes ``fixture.json``: public commit, overrides, offline substitutions, command.

It never imports uwmbench: the fixtures are an independent reference for our networks.

Offline substitutions (recorded in fixture.json), needed because the public code downloads
weights when it builds a model and because a few MB must hold the fixtures:

- ``diffusers.AutoencoderKL.from_pretrained("stabilityai/sdxl-vae")`` returns a randomly
  initialised small AutoencoderKL (the ``random:tiny`` architecture of uwmbench: blocks
  (8, 8, 16, 16), 1 layer per block, 8 norm groups, 4 latent channels) instead of the SDXL VAE;
- ``torchvision.models.resnet18(weights=...)`` returns a ResNet-18 of base width 16 (the
  topology and parameter names of torchvision's, thinner channels, BatchNorm) without
  ImageNet weights; the public ``get_resnet`` then swaps its BatchNorm for GroupNorm as usual;
- ``torchvision.models.vit_b_32(weights=...)`` returns a torchvision ``VisionTransformer``
  (image 32, patch 8, 2 layers, 2 heads, width 64, MLP 128) without ImageNet weights; the
  public ``get_vit`` then replaces its classifier by ``Linear(768, embed_dim)`` as usual;
- modules the models import but these configs never use are stubbed when absent:
  ``wandb``, ``timm`` (CLIP image encoder), ``transformers`` (CLIP text encoder).

Usage (outside the repo; einops is the only extra package the public models need)::

    git clone https://github.com/WEIRDLabUW/unified-world-model /work/public_uwm
    git -C /work/public_uwm checkout 677560ea55f3a4616a59f6d6601e69208627d218
    pip install --target /work/public_deps einops==0.7.0
    cd /tmp && PYTHONPATH=/work/public_deps python /work/main/scripts/make_public_fixtures.py \\
        /work/public_uwm --out /work/main/tests/fixtures/public_ckpt
    # + paper_shapes.json: the public state-dict shapes at the LIBERO config (paper) size
    cd /tmp && PYTHONPATH=/work/public_deps python /work/main/scripts/make_public_fixtures.py \\
        /work/public_uwm --out /work/main/tests/fixtures/public_ckpt --paper-shapes

``python``: an environment with torch, torchvision, diffusers and hydra-core (e.g. uwmbench's
.venv). Set ``PUBLIC_UWM_COMMIT`` when the checkout is not a git repository.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path

VIEWS = ("agentview_rgb", "eye_in_hand_rgb")
RAW = 32          # stored frame size (LIBERO: 128)
RESIZE, CROP = 36, 32   # public resize_shape / crop_shape (LIBERO configs: 240 / 224)
BATCH = 3
SEED = 1234

VAE_ARCH = dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8, latent_channels=4)
RESNET_WIDTH = 16
VIT_ARCH = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128)

COMMON = [f"dataset.shape_meta.obs.{v}.shape=[{RAW},{RAW},3]" for v in VIEWS] + [
    f"model.obs_encoder.resize_shape=[{RESIZE},{RESIZE}]", f"model.obs_encoder.crop_shape=[{CROP},{CROP}]"]

# public config overrides per method (the sizes our presets + overrides can express)
OVERRIDES = {
    "uwm": COMMON + ["model.embed_dim=64", "model.timestep_embed_dim=32", "model.depth=2", "model.num_heads=4",
                     "model.num_registers=4", "model.latent_patch_shape=[2,2,2]", "model.obs_encoder.embed_dim=32"],
    "dp": COMMON + ["model.obs_encoder.embed_dim=64", "model.noise_pred_net.embed_dim=64",
                    "model.noise_pred_net.timestep_embed_dim=32", "+model.noise_pred_net.depth=2",
                    "model.noise_pred_net.num_heads=4"],
    "pad": COMMON + ["model.embed_dim=64", "model.timestep_embed_dim=32", "model.depth=2", "model.num_heads=4",
                     "model.latent_patch_shape=[2,2,2]"],
    "gr1": COMMON + ["model.embed_dim=64", "model.depth=2", "model.num_heads=4", f"model.image_size={CROP}",
                     "model.patch_size=8", "model.decoder_depth=1", "model.decoder_num_heads=4",
                     "model.obs_encoder.embed_dim=64", "model.obs_encoder.resampler_params.dim=64",
                     "model.obs_encoder.resampler_params.depth=1", "model.obs_encoder.resampler_params.dim_head=16",
                     "model.obs_encoder.resampler_params.heads=2", "model.obs_encoder.resampler_params.num_latents=3"],
}
# how `uwmbench import-checkpoint` is expected to read each fixture (recorded, used by the tests)
IMPORT_ARGS = {
    "uwm": ["--size", "tiny", "--set", "time_hidden=128", "--set", "action_hidden=256", "--set", "encoder_width=16"],
    "dp": ["--size", "tiny", "--set", "encoder_width=16"],
    "pad": ["--size", "tiny"],
    "gr1": ["--size", "tiny"],
}
# which public train script's checkpoint layout each fixture reproduces
SAVE_AS = {
    "uwm": "experiments/uwm/train_robomimic.py (LIBERO: no normalizers, as the released LIBERO-90 checkpoint)",
    "dp": "experiments/dp/train.py (DROID: with the dataset's action LinearNormalizer)",
    "pad": "experiments/pad/train_robomimic.py (LIBERO: no normalizers)",
    "gr1": "experiments/gr1/train_robomimic.py (LIBERO: no normalizers)",
}


# ----------------------------------------------------------------------------- offline patches
def _stub_missing_modules() -> list[str]:
    import importlib.machinery

    import diffusers  # noqa: F401  (probes for transformers at import: before the stubs exist)
    stubbed = []
    for name in ("wandb", "timm", "transformers"):
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)
            mod.__spec__ = importlib.machinery.ModuleSpec(name, None)

            def _unavailable(*a, _n=name, **k):
                raise RuntimeError(f"{_n} is stubbed by make_public_fixtures.py")
            mod.CLIPModel = types.SimpleNamespace(from_pretrained=_unavailable)
            mod.create_model = _unavailable
            mod.Image = mod.Video = _unavailable
            sys.modules[name] = mod
            stubbed.append(name)
    return stubbed


# the architecture of stabilityai/sdxl-vae (its config.json), for --paper-shapes
SDXL_VAE_ARCH = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                     latent_channels=4, sample_size=1024, scaling_factor=0.13025)


def _patch_downloads(paper: bool = False) -> None:
    """Offline stand-ins for the downloads (see the module docstring). ``paper``: full-size
    architectures (SDXL VAE, ResNet-18, ViT-B/32) without weights, for shape listings."""
    import torch
    import torchvision
    from diffusers import AutoencoderKL
    from torch import nn

    def small_vae(cls, name, *a, **k):
        assert name == "stabilityai/sdxl-vae", name
        arch = SDXL_VAE_ARCH if paper else VAE_ARCH
        n = len(arch["block_out_channels"])
        torch.manual_seed(SEED + 7)
        return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                             up_block_types=("UpDecoderBlock2D",) * n, **arch)
    AutoencoderKL.from_pretrained = classmethod(small_vae)
    if paper:
        resnet18, vit_b_32 = torchvision.models.resnet18, torchvision.models.vit_b_32
        torchvision.models.resnet18 = lambda weights=None, **kw: resnet18(weights=None, **kw)
        torchvision.models.vit_b_32 = lambda weights=None, **kw: vit_b_32(weights=None, **kw)
        return

    def slim_resnet18(weights=None, **kw):
        from torchvision.models.resnet import BasicBlock, ResNet
        net = ResNet(BasicBlock, [2, 2, 2, 2], **kw)
        w = RESNET_WIDTH
        net.inplanes = w
        net.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        net.bn1 = nn.BatchNorm2d(w)
        net.layer1 = net._make_layer(BasicBlock, w, 2)
        net.layer2 = net._make_layer(BasicBlock, 2 * w, 2, stride=2)
        net.layer3 = net._make_layer(BasicBlock, 4 * w, 2, stride=2)
        net.layer4 = net._make_layer(BasicBlock, 8 * w, 2, stride=2)
        net.fc = nn.Linear(8 * w, 1000)
        return net
    torchvision.models.resnet18 = slim_resnet18

    def small_vit_b_32(weights=None, **kw):
        return torchvision.models.VisionTransformer(**VIT_ARCH, **kw)
    torchvision.models.vit_b_32 = small_vit_b_32


# ----------------------------------------------------------------------------- helpers
def _randomize(model, seed: int) -> None:
    """Every trainable tensor re-drawn (fan-in scaled matrices, norm weights near 1, small
    biases and tokens); frozen ones (the VAE, GR1's fixed position table) keep their values."""
    import torch
    from torch import nn
    g = torch.Generator().manual_seed(seed)
    norms = {f"{n}.weight" for n, m in model.named_modules()
             if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d))}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            r = torch.randn(p.shape, generator=g)
            if name in norms:
                p.copy_(1 + 0.1 * r)
            elif name.endswith("weight") and p.dim() >= 2:
                p.copy_(r / math.sqrt(p[0].numel()))
            elif name.endswith("bias"):
                p.copy_(0.05 * r)
            else:  # tokens, position tables, registers, latents, scale/shift
                p.copy_(0.2 * r)


def _obs_dict(images):
    """(B, V, T, H, W, 3) uint8 -> the public per-view dict of (B, T, H, W, 3)."""
    return {k: images[:, i].contiguous() for i, k in enumerate(VIEWS)}


def _git_commit(repo: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return os.environ.get("PUBLIC_UWM_COMMIT", "unknown (set PUBLIC_UWM_COMMIT)")


# ----------------------------------------------------------------------------- per method
def paper_shapes(public: Path, method: str) -> dict:
    """Parameter names and shapes of the public model at its LIBERO config size (128x128
    frames, resize 240, crop 224; SDXL VAE, ResNet-18 and ViT-B/32 architectures), built on
    the CPU with random weights (the public constructors run the VAE once, which the meta
    device refuses) and discarded: up to ~2 GB of memory for a moment."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(public / "configs"), version_base=None):
        cfg = compose(config_name=f"train_{method}_robomimic.yaml")
    with torch.no_grad():
        model = instantiate(cfg.model)
    state = model.state_dict()
    return {"method": method, "config": f"configs/train_{method}_robomimic.yaml (no overrides)",
            "parameters": sum(p.numel() for p in model.parameters()),
            "state_dict": {k: list(v.shape) for k, v in state.items()}}


def build(public: Path, method: str):
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(public / "configs"), version_base=None):
        cfg = compose(config_name=f"train_{method}_robomimic.yaml", overrides=OVERRIDES[method])
    torch.manual_seed(SEED)
    model = instantiate(cfg.model)
    _randomize(model, SEED + 1)
    return cfg, model.eval()


def make_io(method: str, model) -> dict:
    import torch
    g = torch.Generator().manual_seed(SEED + 2)
    to = 2
    images = torch.randint(0, 256, (BATCH, len(VIEWS), to, RAW, RAW, 3), generator=g, dtype=torch.uint8)
    io = {"images": images, "layout": "images (B, V, T, H, W, 3) uint8, views " + ", ".join(VIEWS)}
    ha, a_dim = 16, 7
    noisy_action = torch.randn(BATCH, ha, a_dim, generator=g)
    with torch.no_grad():
        if method == "uwm":
            lat_shape = model.latent_img_shape  # (V, C, T, h, w)
            noisy_next = torch.randn(BATCH, *lat_shape, generator=g)
            t_a, t_o = torch.tensor([90, 37, 3]), torch.tensor([90, 0, 61])
            feats = model.obs_encoder.encode_curr_obs(_obs_dict(images))
            eps_a, eps_o = model.noise_pred_net(feats, noisy_action, t_a, noisy_next, t_o)
            z = torch.randn(1, *lat_shape, generator=g)
            decoded = model.obs_encoder.apply_vae(z.clone(), inverse=True)
            # whole DDIM loops from fixed initial noise (drawn as the public samplers draw it)
            torch.manual_seed(SEED + 3)
            a0, o0 = torch.randn(BATCH, ha, a_dim), torch.randn(BATCH, *lat_shape)
            torch.manual_seed(SEED + 3)
            policy = model.sample_marginal_action(_obs_dict(images))
            torch.manual_seed(SEED + 3)
            video = model.sample_marginal_next_obs(_obs_dict(images))
            io.update(features=feats, noisy_action=noisy_action, action_t=t_a, noisy_next_obs=noisy_next,
                      next_obs_t=t_o, action_noise=eps_a, next_obs_noise=eps_o, vae_latents=z, vae_decoded=decoded,
                      init_action=a0, init_next_obs=o0, sample_marginal_action=policy,
                      sample_marginal_next_obs=video, latent_layout="(B, V, C, T, h, w) public layout")
        elif method == "dp":
            t = torch.tensor([90, 37, 3])
            feats = model.obs_encoder(_obs_dict(images))
            eps = model.noise_pred_net(noisy_action, t, global_cond=feats)
            torch.manual_seed(SEED + 3)
            sample = model.sample(_obs_dict(images))  # DDIM loop; normalised actions
            io.update(features=feats, noisy_action=noisy_action, t=t, action_noise=eps, sample_seed=SEED + 3,
                      sample=sample, feature_layout="(B, T*V*D): frame-major, view, feature (public DP)")
        elif method == "pad":
            lat_shape = model.latent_img_shape
            obs_lat = torch.randn(BATCH, *lat_shape, generator=g)
            noisy_next = torch.randn(BATCH, *lat_shape, generator=g)
            t = torch.tensor([90, 37, 3])
            eps_a, eps_o = model.noise_pred_net(obs_lat, noisy_action, noisy_next, t)
            z = torch.randn(1, *lat_shape, generator=g)
            decoded = model.obs_encoder.apply_vae(z.clone(), inverse=True)
            io.update(obs_latent=obs_lat, noisy_action=noisy_action, noisy_next_obs=noisy_next, t=t,
                      action_noise=eps_a, next_obs_noise=eps_o, vae_latents=z, vae_decoded=decoded,
                      latent_layout="(B, V, C, T, h, w) public layout")
        elif method == "gr1":
            pixels, actions = model.sample_joint(_obs_dict(images))
            io.update(actions=actions, pixels=pixels,
                      pixel_layout="(B, V, C, T, H, W) public layout, ImageNet-normalised")
    return io


def save_models_pt(public: Path, method: str, cfg, model, out: Path) -> dict:
    """``models.pt`` written by the public ``maybe_save_checkpoint``, as its train script calls it."""
    import importlib

    import numpy as np
    import torch
    from diffusers.optimization import get_scheduler
    train_mod = importlib.import_module(f"experiments.{method}.train")
    optimizer = torch.optim.AdamW(model.parameters(), **cfg.optimizer)
    scheduler = get_scheduler(optimizer=optimizer, **cfg.scheduler)
    scaler = torch.cuda.amp.GradScaler(enabled=cfg.use_amp)
    save_cfg = types.SimpleNamespace(save_every=1, num_steps=1, logdir=str(out))
    ddp_like = types.SimpleNamespace(module=model)   # the scripts save model.module.state_dict()
    kwargs = {}
    if method == "dp":
        from datasets.utils.normalizer import LinearNormalizer
        lo = np.linspace(-1.0, -0.2, 7).astype(np.float32)
        hi = np.linspace(0.3, 1.5, 7).astype(np.float32)
        kwargs = dict(action_normalizer=LinearNormalizer((hi - lo) / 2.0, (hi + lo) / 2.0), lowdim_normalizer=None)
    train_mod.maybe_save_checkpoint(save_cfg, 0, ddp_like, optimizer, scheduler, scaler, **kwargs)
    return {"action_normalizer": None if not kwargs else
            {"scale": kwargs["action_normalizer"].scale.tolist(), "offset": kwargs["action_normalizer"].offset.tolist()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("public", type=Path, help="checkout of github.com/WEIRDLabUW/unified-world-model")
    p.add_argument("--out", type=Path, required=True, help="fixtures folder (one sub-folder per method)")
    p.add_argument("--methods", nargs="+", default=["uwm", "dp", "pad", "gr1"])
    p.add_argument("--paper-shapes", action="store_true",
                   help="instead: write <out>/paper_shapes.json, the public models' state-dict shapes at paper size")
    a = p.parse_args(argv)
    public = a.public.resolve()
    sys.path.insert(0, str(public))
    stubbed = _stub_missing_modules()
    _patch_downloads(paper=a.paper_shapes)
    import torch
    torch.set_num_threads(1)
    commit = _git_commit(public)
    if a.paper_shapes:
        out = {"public_repo": "https://github.com/WEIRDLabUW/unified-world-model", "public_commit": commit,
               "command": " ".join(shlex.quote(x) for x in [Path(sys.executable).name, *sys.argv]),
               "methods": {m: paper_shapes(public, m) for m in a.methods}}
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "paper_shapes.json").write_text(json.dumps(out, indent=1) + "\n")
        for m, v in out["methods"].items():
            print(f"{m}: {v['parameters']} public parameters at paper size, {len(v['state_dict'])} tensors")
        return 0
    for method in a.methods:
        out = a.out / method
        out.mkdir(parents=True, exist_ok=True)
        cfg, model = build(public, method)
        io = make_io(method, model)
        torch.save(io, out / "io.pt")
        extra = save_models_pt(public, method, cfg, model, out)
        n_params = sum(p.numel() for p in model.parameters())
        info = {
            "public_repo": "https://github.com/WEIRDLabUW/unified-world-model", "public_commit": commit,
            "method": method, "config": f"configs/train_{method}_robomimic.yaml", "overrides": OVERRIDES[method],
            "saved_as": SAVE_AS[method], "models_pt_keys": sorted(torch.load(out / "models.pt", weights_only=False)),
            "public_parameters": n_params, "seed": SEED, "batch": BATCH, "raw_frame": RAW,
            "offline_substitutions": {
                "AutoencoderKL.from_pretrained('stabilityai/sdxl-vae')": {"random AutoencoderKL": VAE_ARCH}
                if method in ("uwm", "pad") else None,
                "torchvision.models.resnet18": {"base_width": RESNET_WIDTH, "weights": "none (random)"}
                if method in ("uwm", "dp") else None,
                "torchvision.models.vit_b_32": {**VIT_ARCH, "weights": "none (random)"} if method == "gr1" else None,
                "stubbed_modules": stubbed,
            },
            "weights": "every trainable tensor re-drawn at random (seed above); frozen VAE: diffusers init",
            "uwmbench_import_args": IMPORT_ARGS[method], **extra,
            "command": " ".join(shlex.quote(x) for x in [Path(sys.executable).name, *sys.argv]),
            "torch": torch.__version__,
        }
        (out / "fixture.json").write_text(json.dumps(info, indent=2) + "\n")
        size = sum(f.stat().st_size for f in out.iterdir())
        print(f"{method}: {n_params} public parameters, {size / 1e6:.2f} MB in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
