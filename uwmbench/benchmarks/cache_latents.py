"""``uwmbench cache-latents``: precompute the VAE latent caches that ``build_datasets`` will use
(the cache itself: ``latent_cache.py``)."""
from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from uwmbench.config import build_method_from_config, dump_yaml, load_config, to_container
from .data import LATENT_KEYS, WindowSpec, data_config_from, method_batch_keys, open_sources
from .data_sources import check_source_paths
from .latent_cache import _valid_cache, cache_info, cache_key, cache_path, encoder_crop_offsets, ensure_latent_cache

def cache_latents(data_cfg, method, progress: bool = True) -> list[dict[str, Any]]:
    """Build (or find) the latent caches that ``build_datasets(data_cfg, method)`` will use."""
    data_cfg = data_config_from(data_cfg)
    keys = method_batch_keys(method, True)
    encoder = method.latent_encoder
    if encoder is None or not any(k in keys for k in LATENT_KEYS):
        return []
    rows = []
    for _, files in open_sources(data_cfg, WindowSpec.from_method(method)):
        for src in files:
            t0 = time.time()
            offsets = encoder_crop_offsets(encoder, data_cfg.latent_crops)
            key = cache_key(src, encoder.fingerprint(), offsets)
            existed = _valid_cache(cache_path(data_cfg.cache_dir, src, key), key, src.episodes, src.views, offsets)
            reader = ensure_latent_cache(src, encoder, data_cfg.cache_dir, data_cfg.cache_batch_size, progress,
                                         crops=data_cfg.latent_crops)
            rows.append({**cache_info(reader.path), "reused": existed, "wall_s": round(time.time() - t0, 2)})
    return rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="uwmbench cache-latents",
                                description="Precompute the VAE latent cache of a dataset (config: uwmbench/configs/cache_latents.yaml).")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="hydra overrides, e.g. method=uwm data.sources=[{path:demos.hdf5}]")
    a = p.parse_args(argv)
    cfg = to_container(load_config("cache_latents", a.overrides))
    if a.print_config:
        print(dump_yaml(cfg))
        return 0
    device = cfg.get("device", "auto")
    device = torch.device("cuda" if (device == "auto" and torch.cuda.is_available()) else ("cpu" if device == "auto" else device))
    check_source_paths(data_config_from(cfg.get("data", {})).sources)  # bad paths fail before a model is built
    torch.manual_seed(int(cfg.get("seed", 0)))  # the trainer seeds the same way: random:* encoders match
    method = build_method_from_config(cfg["method"])
    if method.latent_encoder is None:
        print(f"method {method.name!r} has no latent encoder: nothing to cache")
        return 0
    method.latent_encoder.to(device)
    rows = cache_latents(cfg.get("data", {}), method, progress=True)
    if not rows:
        print(f"method {method.name!r} does not read cached latents with this config: nothing to cache")
        return 0
    for r in rows:
        state = "reused" if r["reused"] else "built"
        print(f"{state:6s} {r['path']}  ({r['episodes']} episodes, {r['frames']} frames x {len(r['views'])} views "
              f"x {len(r.get('crop_offsets') or [0])} crops, latent {tuple(r['latent_shape'])}, {r['size_mb']} MB, "
              f"{r['wall_s']} s)")
    return 0
