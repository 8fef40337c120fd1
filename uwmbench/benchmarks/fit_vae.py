"""``uwmbench fit-vae``: fit a small AutoencoderKL on a dataset's own frames, offline.

The paper's latent space is the SDXL VAE from a model hub. Without the hub (or to match a
dataset closely), this command trains a ``VAE_PRESETS`` architecture (``uwmbench/methods/latent_encoder.py``)
on the dataset's frames (every view), holds out whole episodes, prints the reconstruction PSNR
on held-out frames, and saves the model with ``save_pretrained`` into ``out`` atomically (a
temporary folder renamed at the end) plus ``fit_vae.json`` (PSNR, settings). The config's
``scaling_factor`` is set to 1/std of the training latents (posterior mode, center crop), so
``LatentEncoder(source=out, ...)`` latents have ~unit variance before its ``extra_scale``
(set the method's extra scale to 1.0 to keep them at unit variance).

Loss: L1 + MSE on [-1, 1] pixels + ``kl_weight`` x KL (summed over latent elements, divided by
pixels per image: ``kl_weight=1e-6`` is the Stable Diffusion autoencoder's ratio). Training
frames get the method's preprocessing (resize, random crop); evaluation uses the center crop,
exactly like ``LatentEncoder.encode``.

Resumable: every ``ckpt_every`` steps the model, optimiser and RNG states are written atomically
to ``.<out>.partial.pt`` beside ``out``; rerunning the same command continues from there (a state
written with other settings is ignored) and the file is removed when ``out`` is saved.

    uwmbench fit-vae data.sources=[{path:demos.hdf5}] out=vae/mine preset=small steps=3000 image_size=128
    uwmbench train method=uwm method.vae=vae/mine ...
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from uwmbench.config import ConfigError, dump_yaml, load_config, to_container
from uwmbench.methods.latent_encoder import VAE_PRESETS, LatentEncoder, build_autoencoder
from uwmbench.methods.nets import ImagePreprocessor
from .data import WindowSpec, data_config_from, open_sources, split_episodes
from .data_sources import DataError

log = logging.getLogger(__name__)


class FitInterrupted(RuntimeError):
    """``stop_after`` reached before ``steps``: the state is saved and a rerun resumes."""


def _psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def collect_frames(data_cfg, views: tuple[str, ...], holdout_fraction: float, seed: int, max_frames: int,
                   max_holdout_frames: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """uint8 (N, 3, H, W) training frames and held-out frames (whole episodes held out; with a
    single episode in total, its last ``holdout_fraction`` of frames instead)."""
    # actions are not needed: read every HDF5 source as action-free
    dc = dataclasses.replace(data_cfg, sources=[dataclasses.replace(s, kind="hdf5_action_free" if s.kind == "hdf5" else s.kind)
                                                for s in data_cfg.sources])
    opened = [src for _, files in open_sources(dc, WindowSpec(views, 1, 1, 0, 1)) for src in files]
    rng = np.random.default_rng(seed)
    all_eps = {f"{i:04d}/{e}": (src, e) for i, src in enumerate(opened) for e in src.episodes}
    train_items: list[tuple[Any, str, int, int]] = []  # (source, episode, first frame, end frame)
    hold_items: list[tuple[Any, str, int, int]] = []
    if len(all_eps) >= 2:
        tr, va = split_episodes(list(all_eps), holdout_fraction, seed)
        train_items = [(all_eps[k][0], all_eps[k][1], 0, all_eps[k][0].lengths[all_eps[k][1]]) for k in tr]
        hold_items = [(all_eps[k][0], all_eps[k][1], 0, all_eps[k][0].lengths[all_eps[k][1]]) for k in va]
    else:  # a single episode: hold out its last frames
        src, e = next(iter(all_eps.values()))
        t = src.lengths[e]
        cut = max(1, min(t - 1, int(round(t * (1 - holdout_fraction)))))
        train_items = [(src, e, 0, cut)]
        hold_items = [(src, e, cut, t)] if t > 1 and holdout_fraction > 0 else []
    if not hold_items:
        raise DataError("fit-vae: nothing to hold out (need holdout_fraction > 0 and >= 2 episodes or frames)")

    def gather(items, budget):
        sizes = np.array([(t1 - t0) * len(views) for _, _, t0, t1 in items], np.int64)
        total = int(sizes.sum())
        take = min(budget, total)
        pick = np.sort(rng.choice(total, size=take, replace=False)) if take < total else np.arange(total)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        out = []
        for i, (src, ep, t0, t1) in enumerate(items):
            sel = pick[(pick >= offsets[i]) & (pick < offsets[i + 1])] - offsets[i]
            if sel.size == 0:
                continue
            frames = np.stack([src.read_frames(ep, v, t0, t1) for v in views], axis=1)  # (T, V, 3, H, W)
            frames = frames.reshape(-1, *frames.shape[2:])
            out.append(frames[sel])
            src._memory.clear()
        return torch.from_numpy(np.concatenate(out)), total

    train, n_train_total = gather(train_items, max_frames)
    hold, n_hold_total = gather(hold_items, max_holdout_frames)
    info = dict(train_frames=int(train.shape[0]), train_frames_available=n_train_total,
                holdout_frames=int(hold.shape[0]), holdout_episodes=len(hold_items),
                train_episodes=len(train_items), sources=[s.path for s in opened])
    return train, hold, info


def _atomic_replace_dir(tmp: Path, out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"fit-vae: out={out} exists and is not a folder")
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def _checked(cfg: dict[str, Any]) -> tuple[str, str, int, int, int, int]:
    """(out, preset, image_size, resize, steps, batch_size), each checked, naming the bad key."""
    out = cfg.get("out")
    if out in (None, "", "???"):
        raise ConfigError("fit-vae: give out=FOLDER")
    preset = str(cfg.get("preset", "small"))
    if preset not in VAE_PRESETS:
        raise ConfigError(f"fit-vae: preset={preset!r} is not one of {sorted(VAE_PRESETS)}")
    size = int(cfg.get("image_size", 128))
    resize = int(cfg.get("resize") or size)
    down = 2 ** (len(VAE_PRESETS[preset]["block_out_channels"]) - 1)
    if size % down:
        raise ConfigError(f"fit-vae: image_size={size} must be divisible by {down} (preset {preset} downsamples {down}x)")
    if resize < size:
        raise ConfigError(f"fit-vae: resize={resize} must be >= image_size={size}")
    steps, bs = int(cfg.get("steps", 2000)), int(cfg.get("batch_size", 32))
    if steps < 0 or bs < 1:
        raise ConfigError(f"fit-vae: steps={steps} must be >= 0 and batch_size={bs} >= 1")
    return str(out), preset, size, resize, steps, bs


def _resume(partial: Path, ident: dict[str, Any], vae, opt, gen: torch.Generator) -> int:
    """The step an interrupted fit with the same settings (``ident``) reached, its state loaded; else 0."""
    if not partial.exists():
        return 0
    try:
        st = torch.load(partial, map_location="cpu", weights_only=False)
    except Exception as e:  # a torn file cannot happen (atomic replace), but an old format can
        log.warning("fit-vae: ignoring unreadable partial state %s (%s)", partial, e)
        return 0
    if st.get("ident") != ident:
        log.warning("fit-vae: %s was written with other settings; starting again", partial)
        return 0
    vae.load_state_dict(st["vae"])
    opt.load_state_dict(st["opt"])
    gen.set_state(st["gen"])
    torch.set_rng_state(st["torch_rng"])
    log.info("fit-vae: resuming from step %d/%d (%s)", int(st["step"]), ident["steps"], partial)
    return int(st["step"])


def _vae_loss(vae, x: torch.Tensor, kl_w: float) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """L1 + MSE reconstruction of a posterior sample + ``kl_w`` x KL per pixel; -> (loss, (l1, mse, kl))."""
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample(generator=None)).sample
    l1 = (rec - x).abs().mean()
    mse = ((rec - x) ** 2).mean()
    kl = post.kl().mean() / (x.shape[-1] * x.shape[-2])
    return l1 + mse + kl_w * kl, (float(l1.detach()), float(mse.detach()), float(kl.detach()))


@torch.no_grad()
def _latents_std(vae, pre: ImagePreprocessor, frames: torch.Tensor, device) -> float:
    """Standard deviation of the latents (posterior modes) of ``frames``: sets the scaling factor."""
    zs = []
    for i in range(0, frames.shape[0], 64):
        x = pre(frames[i:i + 64].to(device).unsqueeze(1), train=False)[:, 0]
        zs.append(vae.encode(x).latent_dist.mode().float().cpu())
    return float(torch.cat(zs).std())


@torch.no_grad()
def _psnr_of(enc: LatentEncoder, pre: ImagePreprocessor, frames: torch.Tensor, device) -> tuple[float, float]:
    """Reconstruction PSNR through the saved encoder: over all pixels, and the mean per image."""
    se, n, per = 0.0, 0, []
    for i in range(0, frames.shape[0], 64):
        fr = frames[i:i + 64].to(device)
        target = pre(fr.unsqueeze(1), train=False)[:, 0]
        recon = enc.decode(enc.encode(fr)).float() / 127.5 - 1.0
        err = ((recon - target) / 2) ** 2  # on the [0, 1] scale
        se += float(err.sum())
        n += err.numel()
        per += [_psnr(float(e)) for e in err.flatten(1).mean(1)]
    return _psnr(se / n), float(np.mean(per))


def fit_vae(cfg: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    from diffusers import AutoencoderKL  # noqa: F401  (fail early if missing)

    out, preset, size, resize, steps, bs = _checked(cfg)
    views = tuple(cfg.get("views") or ("agentview_rgb", "eye_in_hand_rgb"))
    seed = int(cfg.get("seed", 0))
    dev_name = cfg.get("device", "auto")
    device = torch.device("cuda" if (dev_name == "auto" and torch.cuda.is_available()) else
                          ("cpu" if dev_name == "auto" else dev_name))
    data_cfg = data_config_from(cfg.get("data", {}))
    torch.manual_seed(seed)

    t0 = time.time()
    train, hold, info = collect_frames(data_cfg, views, float(cfg.get("holdout_fraction", 0.1)), seed,
                                       int(cfg.get("max_frames", 20000)), int(cfg.get("max_holdout_frames", 1000)))
    log.info("fit-vae: %d training frames, %d held-out frames (%d held-out episodes)", train.shape[0], hold.shape[0],
             info["holdout_episodes"])

    le_log = logging.getLogger(build_autoencoder.__module__)
    level = le_log.level
    le_log.setLevel(logging.ERROR)  # "randomly initialised" is the point here: it is about to be trained
    try:
        vae = build_autoencoder(f"random:{preset}").to(device)
    finally:
        le_log.setLevel(level)
    vae.train()
    pre = ImagePreprocessor(resize, size, jitter=0.0, normalize="sym").to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=float(cfg.get("lr", 1e-3)), weight_decay=float(cfg.get("weight_decay", 0.0)))
    kl_w = float(cfg.get("kl_weight", 1e-6))
    gen = torch.Generator().manual_seed(seed)
    log_every = max(1, int(cfg.get("log_every", 100)))
    ckpt_every = int(cfg.get("ckpt_every", 250))
    out_p = Path(os.path.expanduser(str(out))).resolve()
    out_p.parent.mkdir(parents=True, exist_ok=True)
    partial = out_p.parent / f".{out_p.name}.partial.pt"
    # what a resumed fit must share with the interrupted one (else it starts again)
    ident = dict(preset=preset, image_size=size, resize=resize, steps=steps, batch_size=bs, seed=seed,
                 lr=float(cfg.get("lr", 1e-3)), kl_weight=kl_w, views=list(views), sources=info["sources"],
                 train_frames=info["train_frames"])
    start = _resume(partial, ident, vae, opt, gen)

    def save_partial(step_done: int) -> None:
        tmp_state = partial.with_name(partial.name + f".tmp-{os.getpid()}")
        torch.save(dict(ident=ident, step=step_done, vae=vae.state_dict(), opt=opt.state_dict(),
                        gen=gen.get_state(), torch_rng=torch.get_rng_state()), tmp_state)
        os.replace(tmp_state, partial)

    bar = tqdm(range(start, steps), desc=f"fit-vae {preset}", disable=not progress, dynamic_ncols=True,
               initial=start, total=steps)
    loss_v = float("nan")
    for step in bar:
        idx = torch.randint(0, train.shape[0], (bs,), generator=gen)
        x = pre(train[idx].to(device).unsqueeze(1), train=True, generator=gen)[:, 0]
        loss, (l1_v, mse_v, kl_v) = _vae_loss(vae, x, kl_w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_v = float(loss.detach())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            bar.set_postfix(loss=f"{loss_v:.4f}", psnr=f"{_psnr(mse_v / 4):.1f}")
            log.info("fit-vae step %d: loss %.4f (l1 %.4f, mse %.4f, kl %.2f)", step + 1, loss_v, l1_v, mse_v, kl_v)
        if ckpt_every > 0 and (step + 1) % ckpt_every == 0 and step + 1 < steps:
            save_partial(step + 1)
        stop_after = cfg.get("stop_after")
        if stop_after is not None and step + 1 >= int(stop_after) and step + 1 < steps:
            save_partial(step + 1)
            raise FitInterrupted(f"fit-vae: stopped after step {step + 1} (stop_after); rerun to resume from {partial}")
    bar.close()
    vae.eval()

    sub = train[torch.randperm(train.shape[0], generator=gen)[:512]]
    std = _latents_std(vae, pre, sub, device)
    scaling = 1.0 / max(std, 1e-6)
    vae.register_to_config(scaling_factor=scaling)

    tmp = out_p.parent / f".{out_p.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        vae.to("cpu").save_pretrained(str(tmp))
        # evaluate through the saved folder, exactly as a method will load it
        enc = LatentEncoder(str(tmp), resize, size, extra_scale=1.0).to(device)
        psnr, psnr_img = _psnr_of(enc, pre, hold, device)
        psnr_train, _ = _psnr_of(enc, pre, train[: hold.shape[0]], device)
        result = dict(psnr_holdout_db=round(psnr, 3), psnr_holdout_per_image_db=round(psnr_img, 3),
                      psnr_train_db=round(psnr_train, 3), latent_std_before_scaling=std, scaling_factor=scaling,
                      preset=preset, image_size=size, resize=resize, steps=steps, batch_size=bs,
                      kl_weight=kl_w, final_loss=loss_v, views=list(views), seed=seed,
                      latent_shape=[enc.latent_channels, enc.latent_size, enc.latent_size],
                      wall_time_s=round(time.time() - t0, 1), **info)
        with open(tmp / "fit_vae.json", "w") as f:
            json.dump(result, f, indent=2)
        del enc
        _atomic_replace_dir(tmp, out_p)
        partial.unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result["out"] = str(out_p)
    return result


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uwmbench fit-vae", description=__doc__.split("\n\n")[0])
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="hydra overrides (uwmbench/configs/fit_vae.yaml), e.g. out=DIR steps=2000")
    a = p.parse_args(argv)
    cfg = to_container(load_config("fit_vae", a.overrides))
    if a.print_config:
        print(dump_yaml(cfg))
        return 0
    try:
        r = fit_vae(cfg)
    except FitInterrupted as e:
        print(str(e))
        return 0
    print(f"held-out reconstruction PSNR: {r['psnr_holdout_db']:.2f} dB "
          f"({r['holdout_frames']} frames from {r['holdout_episodes']} held-out episode(s); "
          f"train frames {r['psnr_train_db']:.2f} dB)")
    print(f"saved {r['out']} (preset {r['preset']}, latent {tuple(r['latent_shape'])}, scaling_factor "
          f"{r['scaling_factor']:.4f}); use it with method.vae={r['out']}")
    return 0
