"""Shared pytest helpers.

``random_tiny_batch`` (also the ``tiny_batch`` fixture) builds a random batch in the format
documented in ``uwmbench/methods/base.py`` for a method (or its config): uint8 frames, actions in
[-1, 1], an action mask, and optionally the VAE latents of both frame stacks.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import torch

# LIBERO envs built by the tests (and by their worker processes and SLURM jobs, which inherit the
# environment) keep their compiled models in a cache of this session, not in the user's
# ~/.cache/uwmbench/models; it is removed when the session ends.
if "UWMBENCH_MODEL_CACHE" not in os.environ:
    _models = tempfile.mkdtemp(prefix="uwmbench-test-models-")
    os.environ["UWMBENCH_MODEL_CACHE"] = _models
    atexit.register(shutil.rmtree, _models, ignore_errors=True)


def random_tiny_batch(method_or_cfg, b: int = 4, seed: int = 0, action_free: int = 0, raw: int = 32,
                      latent_encoder=None) -> dict[str, torch.Tensor]:
    """Random batch of ``b`` samples; the first ``action_free`` have ``action_mask`` False and
    zero actions. With ``latent_encoder`` given, ``obs_latent``/``next_obs_latent`` are added."""
    cfg = getattr(method_or_cfg, "cfg", method_or_cfg)
    g = torch.Generator().manual_seed(seed)
    v = len(cfg.views)
    obs = torch.randint(0, 256, (b, v, cfg.obs_frames, 3, raw, raw), generator=g, dtype=torch.uint8)
    nxt = torch.randint(0, 256, (b, v, cfg.next_frames, 3, raw, raw), generator=g, dtype=torch.uint8)
    action = torch.rand(b, cfg.action_horizon, cfg.action_dim, generator=g) * 2 - 1
    mask = torch.ones(b, dtype=torch.bool)
    mask[:action_free] = False
    action[:action_free] = 0
    batch = {"obs": obs, "next_obs": nxt, "action": action, "action_mask": mask}
    if latent_encoder is not None:
        batch["obs_latent"] = latent_encoder.encode(obs)
        batch["next_obs_latent"] = latent_encoder.encode(nxt)
    return batch


@pytest.fixture
def tiny_batch():
    """The :func:`random_tiny_batch` factory."""
    return random_tiny_batch


# Tiny models run fastest single-threaded, and the LIBERO tests start env worker processes
# beside the test process: one torch thread avoids oversubscribing a 2-core machine.
torch.set_num_threads(1)


def product_methods() -> list[str]:
    """Registered methods, minus helper methods that test modules register for themselves."""
    from uwmbench.methods import registered_methods
    return sorted(n for n, cls in registered_methods().items()
                  if not cls.__module__.split(".")[0].startswith(("test_", "conftest")))
