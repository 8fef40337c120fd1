"""Writes small HDF5 files in the LIBERO / robomimic layout for tests (no simulator)."""
from __future__ import annotations

import json

import h5py
import numpy as np


def write_libero_hdf5(path, n_demos: int = 3, length: int = 30, size: int = 32, with_actions: bool = True,
                      views=("agentview_rgb", "eye_in_hand_rgb"), seed: int = 0):
    """Frames carry a smooth, learnable pattern that moves with the (smooth) actions."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "synthetic", "type": 1, "env_kwargs": {}})
        total = 0
        for d in range(n_demos):
            g = data.create_group(f"demo_{d}")
            t = np.arange(length)
            phase = rng.uniform(0, 2 * np.pi, size=7)
            actions = np.sin(t[:, None] / 5.0 + phase[None]).astype(np.float32) * 0.5
            if with_actions:
                g.create_dataset("actions", data=actions)
            obs = g.create_group("obs")
            yy, xx = np.mgrid[0:size, 0:size]
            for vi, v in enumerate(views):
                frames = np.empty((length, size, size, 3), np.uint8)
                for i in range(length):
                    cx = (size / 2 + size / 4 * np.sin(i / 5.0 + phase[vi])) % size
                    frames[i, ..., 0] = (255 * np.exp(-((xx - cx) ** 2) / 20)).astype(np.uint8)
                    frames[i, ..., 1] = (i * 4 + vi * 50) % 256
                    frames[i, ..., 2] = (yy * 255 // size).astype(np.uint8)
                obs.create_dataset(v, data=frames)
            obs.create_dataset("ee_pos", data=rng.normal(size=(length, 3)).astype(np.float32))
            g.create_dataset("states", data=rng.normal(size=(length, 10)).astype(np.float32))
            g.attrs["num_samples"] = length
            total += length
        data.attrs["total"] = total
    return path
