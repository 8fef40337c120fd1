"""Datasets for every method: windows over episodes from HDF5 demos and action-free videos.

One sample is a window of ``obs_frames + action_horizon + next_frames - 1`` frames starting at
frame ``s`` of an episode (defaults 2 + 16 + 2 - 1 = 19):

- ``obs``      frames ``s .. s+To-1``                       uint8 (V, To, 3, H, W)
- ``action``   actions ``s+To-1+d .. s+To-2+Ha+d``          float32 (Ha, A), raw env units; ``d`` = the
  source's ``action_offset``: 1 for LIBERO's official files (obs[j] is the frame returned by
  ``env.step(actions[j])``, so the first action after frame j is actions[j+1]), 0 for files whose
  frame j precedes actions[j]. Either way the policy learns what the evaluator asks of it: the
  actions that follow the last observed frame.
- ``next_obs`` frames ``s+To-1+Ha .. s+To-2+Ha+Tn``          uint8 (V, Tn, 3, H, W)
- ``action_mask`` True for sources with actions (action-free sources: zeros, False)
- ``obs_latent`` / ``next_obs_latent`` instead of images when the method asks for latents and
  the latent cache is on (float32 (V, T, C, h, w), see ``latent_cache.py``), with
  ``crop_offset`` int64 (2,): the ``(oy, ox)`` crop (in the method's resized image) whose latents
  these are. The cache holds ``data.latent_crops`` crops per frame; the training sampler picks
  one per sample (shared by its views and frames, obs and next obs), validation always the
  centre crop; the method crops its condition frames at ``crop_offset`` so that condition and
  diffused target are the same crop.

Every window starts at an observed frame pair (``s = 0 .. T-To``); actions and next frames past
the end of the episode repeat the last action and the last frame (robomimic's
``pad_seq_length`` convention). The windowing itself is robomimic's
``SequenceDataset.get_sequence_from_demo`` (frame stacking + end padding); what robomimic does
not fit (bounded per-worker episode memory instead of ``hdf5_cache_mode="all"``, which caches
every padded window; latents; video folders; mixtures) is done here. ``docs/data.md`` explains.

Entry points for the trainer: :func:`data_config_from`, :func:`build_datasets`,
:class:`StepBatchSampler`, :func:`make_loader`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from robomimic.utils.dataset import SequenceDataset

from uwmbench.config import ConfigError, to_container, typed
from .latent_cache import ensure_latent_cache
from .data_sources import (SOURCE_KINDS, DataError, EpisodeSource, Hdf5Source, VideoFolderSource, expand_paths,
                           hdf5_frame_shape)

log = logging.getLogger(__name__)

DEFAULT_BATCH_KEYS = frozenset({"obs", "action", "action_mask", "next_obs"})
LATENT_KEYS = {"next_obs_latent": "next_obs", "obs_latent": "obs"}


# ----------------------------------------------------------------------------- config
from uwmbench.schemas import DataConfig, SourceConfig  # noqa: E402  (the data section's schema)


def data_config_from(section: Any) -> DataConfig:
    """``DataConfig`` from an OmegaConf/dict ``data`` section. ``sources`` is a list of dicts
    (``{path, kind, weight, max_episodes, demos}``) or plain path strings. Unknown keys and
    bad values raise :class:`ConfigError` naming ``data.<key>``."""
    if isinstance(section, DataConfig):
        section = dataclasses.asdict(section)
    values = dict(to_container(section) or {})
    raw_sources = values.pop("sources", None)
    cfg = typed(values, DataConfig, "data")
    if raw_sources is None:
        raw_sources = []
    if isinstance(raw_sources, (str, dict)):
        raw_sources = [raw_sources]
    if not isinstance(raw_sources, (list, tuple)):
        raise ConfigError(f"data.sources must be a list of {{path, kind, weight}} entries, got {raw_sources!r}")
    sources = []
    for i, s in enumerate(raw_sources):
        if isinstance(s, SourceConfig):
            sources.append(s)
            continue
        if isinstance(s, str):
            s = {"path": s}
        if not isinstance(s, dict):
            raise ConfigError(f"data.sources[{i}] must be a path or a dict with 'path', got {s!r}")
        if "path" not in s or s["path"] in (None, ""):
            raise ConfigError(f"data.sources[{i}] has no 'path' (got keys {sorted(s)})")
        sources.append(typed(s, SourceConfig, f"data.sources[{i}]"))
    cfg.sources = sources
    _check_config(cfg)
    return cfg


def _check_config(cfg: DataConfig) -> None:
    for i, s in enumerate(cfg.sources):
        if s.kind not in SOURCE_KINDS:
            raise ConfigError(f"data.sources[{i}].kind={s.kind!r} is not one of {SOURCE_KINDS}")
        if not (s.weight > 0):
            raise ConfigError(f"data.sources[{i}].weight={s.weight} must be > 0")
        if s.max_episodes is not None and s.max_episodes < 1:
            raise ConfigError(f"data.sources[{i}].max_episodes={s.max_episodes} must be >= 1")
    # the scalar options are checked by DataConfig.__post_init__ (uwmbench/schemas.py) when it is built


# ----------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class WindowSpec:
    views: tuple[str, ...]
    obs_frames: int = 2
    action_horizon: int = 16
    next_frames: int = 2
    action_dim: int = 7

    def __post_init__(self):
        if self.obs_frames < 1 or self.action_horizon < 1 or self.next_frames < 0:
            raise ConfigError(f"window lengths obs_frames={self.obs_frames}, action_horizon={self.action_horizon}, "
                              f"next_frames={self.next_frames}: need obs_frames >= 1, action_horizon >= 1, next_frames >= 0")
        if not self.views:
            raise ConfigError("method.views is empty")

    @property
    def length(self) -> int:
        return self.obs_frames + self.action_horizon + self.next_frames - 1

    @classmethod
    def from_method(cls, method) -> "WindowSpec":
        c = method.cfg
        return cls(tuple(c.views), int(c.obs_frames), int(c.action_horizon), int(c.next_frames), int(c.action_dim))


class _Sliced:
    """Lazy ``data[a:b]`` over a source (what robomimic's windowing indexes)."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, sl: slice):
        return self.fn(sl.start, sl.stop)


class WindowDataset(SequenceDataset):
    """Windows over the chosen episodes of one source.

    A subclass of robomimic's ``SequenceDataset`` that keeps its windowing
    (``get_sequence_from_demo``: frame stacking, end padding by repetition) and replaces its
    storage: frames come from an :class:`EpisodeSource` (HDF5 or videos, decoded lazily per
    process into a bounded memory) and latents from a latent-cache reader.

    Items: ``ds[i]`` (window ``i``; cached latents of crop 0, the centre) or ``ds[(i, k)]``
    (cached latents of crop ``k``, what :class:`StepBatchSampler` asks for in training)."""

    def __init__(self, source: EpisodeSource, episodes: list[str], spec: WindowSpec, keys: set[str],
                 latents=None):
        torch.utils.data.Dataset.__init__(self)
        self.source = source
        self.spec = spec
        self.keys = frozenset(keys)
        self.latents = latents
        uses_latents = latents is not None and any(k in self.keys for k in LATENT_KEYS)
        self.crop_offsets = [tuple(o) for o in latents.offsets] if uses_latents else None
        # robomimic SequenceDataset attributes used by its windowing methods
        self.hdf5_path = source.path
        self.hdf5_use_swmr = True
        self.hdf5_normalize_obs = False
        self.hdf5_cache_mode = None
        self.hdf5_cache = None
        self._hdf5_file = None
        self.load_next_obs = False
        self.filter_by_attribute = None
        self.obs_keys = tuple(spec.views)
        self.dataset_keys = ("actions",) if source.has_actions else ()
        self.n_frame_stack = spec.obs_frames
        self.seq_length = spec.action_horizon
        self.goal_mode = None
        self.pad_frame_stack = False   # windows start at s = 0: the first obs pair is real
        self.pad_seq_length = True     # actions / next frames past the end repeat the last one
        self.get_pad_mask = False
        self.obs_normalization_stats = None
        # actions[last_obs + offset] is the first action taken after the last observed frame
        self.action_offset = int(getattr(source, "action_offset", 0)) if source.has_actions else 0
        self.load_demo_info(demos=list(episodes))

    def load_demo_info(self, filter_by_attribute=None, demos=None):
        """Index maps in robomimic's layout (episode lengths from the source, not ``num_samples``).
        Windows per episode: ``T - To + 1``; episodes shorter than ``obs_frames`` are skipped."""
        demos = list(self.source.episodes if demos is None else demos)
        too_short = [d for d in demos if self.source.lengths[d] < self.spec.obs_frames]
        if too_short:
            log.warning("%s: %d episode(s) shorter than obs_frames=%d skipped (e.g. %s)", self.source.path,
                        len(too_short), self.spec.obs_frames, too_short[0])
        self.demos = [d for d in demos if d not in set(too_short)]
        self.n_demos = len(self.demos)
        self._demo_id_to_demo_length = {d: int(self.source.lengths[d]) for d in self.demos}
        # an "after_action" file (LIBERO's official layout) has no action after its last frame
        off = self.action_offset
        short = [d for d in self.demos if self._demo_id_to_demo_length[d] - self.spec.obs_frames + 1 - off < 1]
        if short:
            log.warning("%s: %d episode(s) too short for one window skipped (e.g. %s)", self.source.path, len(short),
                        short[0])
            self.demos = [d for d in self.demos if d not in set(short)]
            self.n_demos = len(self.demos)
            self._demo_id_to_demo_length = {d: int(self.source.lengths[d]) for d in self.demos}
        counts = np.array([self._demo_id_to_demo_length[d] - self.spec.obs_frames + 1 - off for d in self.demos],
                          np.int64)
        self._window_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._demo_id_to_start_indices = {d: int(self._window_starts[i]) for i, d in enumerate(self.demos)}
        self.total_num_sequences = int(self._window_starts[-1])

    def __len__(self):
        return self.total_num_sequences

    def __repr__(self):
        return (f"WindowDataset({self.source.kind}:{self.source.path}, episodes={self.n_demos}, "
                f"windows={self.total_num_sequences}, keys={sorted(self.keys)})")

    def __getstate__(self):
        d = self.__dict__.copy()
        d["_hdf5_file"] = None
        return d

    def get_dataset_for_ep(self, ep, key):
        """robomimic hook: ``obs/<view>`` frames, ``latent/<view>`` cached latents, ``actions``."""
        src = self.source
        if key == "actions":
            return src.load_actions(ep)
        prefix, view = key.split("/", 1)
        if prefix == "obs":
            return _Sliced(lambda a, b: src.read_frames(ep, view, a, b))
        if prefix.startswith("latent@"):  # latent@<crop index>/<view>
            crop = int(prefix[len("latent@"):])
            return _Sliced(lambda a, b: self.latents.read(ep, view, a, b, crop))
        raise KeyError(key)

    def locate(self, index: int) -> tuple[str, int]:
        """Window index -> (episode, start frame s)."""
        if not 0 <= index < self.total_num_sequences:
            raise IndexError(f"window {index} out of range 0..{self.total_num_sequences - 1} ({self.source.path})")
        i = int(np.searchsorted(self._window_starts, index, side="right") - 1)
        return self.demos[i], int(index - self._window_starts[i])

    def _frames(self, ep: str, first: int, count: int, prefix: str) -> np.ndarray:
        """``count`` frames from ``first`` (end-padded) of every view: (V, count, ...)."""
        t = self._demo_id_to_demo_length[ep]
        seq = self.get_obs_sequence_from_demo(ep, index_in_demo=min(first, t - 1), keys=self.obs_keys,
                                              num_frames_to_stack=0, seq_length=count, prefix=prefix)
        return np.stack([seq[v] for v in self.obs_keys])

    @property
    def num_crops(self) -> int:
        """Cached crops per frame this dataset serves (1 without cached latents)."""
        return len(self.crop_offsets) if self.crop_offsets else 1

    def __getitem__(self, index):
        if isinstance(index, (tuple, list)):
            return self.get_item(int(index[0]), int(index[1]))
        return self.get_item(index)

    def get_item(self, index, crop: int = 0):
        sp = self.spec
        ep, s = self.locate(int(index))
        last_obs = s + sp.obs_frames - 1        # the frame the action chunk starts from
        first_next = last_obs + sp.action_horizon
        out: dict[str, Any] = {}
        obs = self.get_obs_sequence_from_demo(ep, index_in_demo=last_obs, keys=self.obs_keys,
                                              num_frames_to_stack=sp.obs_frames - 1, seq_length=1, prefix="obs")
        out["obs"] = np.stack([obs[v] for v in self.obs_keys])
        if self.source.has_actions:
            seq = self.get_dataset_sequence_from_demo(ep, index_in_demo=last_obs + self.action_offset, keys=("actions",),
                                                      num_frames_to_stack=0, seq_length=sp.action_horizon)
            out["action"] = np.asarray(seq["actions"], np.float32)
            out["action_mask"] = np.bool_(True)
        else:
            out["action"] = np.zeros((sp.action_horizon, sp.action_dim), np.float32)
            out["action_mask"] = np.bool_(False)
        if sp.next_frames > 0 and "next_obs" in self.keys:
            out["next_obs"] = self._frames(ep, first_next, sp.next_frames, "obs")
        if self.crop_offsets is not None:
            if not 0 <= crop < len(self.crop_offsets):
                raise IndexError(f"crop {crop} out of range 0..{len(self.crop_offsets) - 1} ({self.source.path})")
            out["crop_offset"] = np.asarray(self.crop_offsets[crop], np.int64)
        if sp.next_frames > 0 and "next_obs_latent" in self.keys:
            out["next_obs_latent"] = self._frames(ep, first_next, sp.next_frames, f"latent@{crop}")
        if "obs_latent" in self.keys:
            out["obs_latent"] = self._frames(ep, s, sp.obs_frames, f"latent@{crop}")
        return out


class MixtureDataset(torch.utils.data.Dataset):
    """Concatenation of window datasets grouped by source entry (a glob is one group of files).

    ``weights[g]`` is the probability that a sample comes from group ``g``; inside a group every
    window is equally likely. Used by :class:`StepBatchSampler`, which also draws one cached
    crop per sample when ``random_crops`` (the training split) and the datasets cache more than
    one crop (``num_crops``); items are ``ds[i]`` or ``ds[(i, crop)]``."""

    def __init__(self, groups: list[list[WindowDataset]], weights: list[float], names: list[str] | None = None,
                 random_crops: bool = False):
        if len(groups) != len(weights):
            raise ValueError("one weight per group")
        keep = [i for i, g in enumerate(groups) if sum(len(d) for d in g) > 0]
        self.groups = [groups[i] for i in keep]
        self.names = [(names[i] if names else str(i)) for i in keep]
        w = np.array([weights[i] for i in keep], np.float64)
        if len(w) == 0:
            raise DataError("no windows: every source is empty after the split (episodes shorter than obs_frames?)")
        self.weights = (w / w.sum()).tolist()
        self.datasets = [d for g in self.groups for d in g]
        sizes = [len(d) for d in self.datasets]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.group_sizes = [sum(len(d) for d in g) for g in self.groups]
        self.group_offsets = np.concatenate([[0], np.cumsum(self.group_sizes)]).astype(np.int64)
        crop_sets = {tuple(d.crop_offsets) for d in self.datasets if d.crop_offsets is not None}
        if len(crop_sets) > 1:
            raise DataError(f"latent caches of one run disagree on their crops: {sorted(crop_sets)}")
        self.crop_offsets = list(crop_sets.pop()) if crop_sets else None
        self.random_crops = bool(random_crops)

    @property
    def num_crops(self) -> int:
        return len(self.crop_offsets) if self.crop_offsets else 1

    def __len__(self):
        return int(self.offsets[-1])

    def __getitem__(self, index):
        crop = None
        if isinstance(index, (tuple, list)):
            index, crop = index
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range 0..{len(self) - 1}")
        i = int(np.searchsorted(self.offsets, index, side="right") - 1)
        j = index - int(self.offsets[i])
        return self.datasets[i][j if crop is None else (j, int(crop))]

    @property
    def num_episodes(self) -> int:
        return sum(d.n_demos for d in self.datasets)

    def episode_names(self) -> set[tuple[str, str]]:
        return {(d.source.path, e) for d in self.datasets for e in d.demos}

    def __repr__(self):
        parts = ", ".join(f"{n}: {s} windows, p={w:.3f}" for n, s, w in zip(self.names, self.group_sizes, self.weights))
        return f"MixtureDataset({parts})"


# ----------------------------------------------------------------------------- bundle
@dataclass
class DataBundle:
    train: MixtureDataset
    val: MixtureDataset | None
    action_stats: dict[str, np.ndarray]       # min, max, mean, std over real actions of train episodes
    keys: frozenset[str] = frozenset()        # batch keys the loaders return
    sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # per file: path, kind, episodes, ...
    cache_files: list[str] = dataclasses.field(default_factory=list)        # latent cache files in use
    env_meta: dict[str, Any] | None = None    # robomimic env metadata of the first HDF5 source with one
    frame_shape: tuple[int, int] | None = None


def split_episodes(episodes: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Validation split by episode: ``round(val_fraction * n)`` episodes (at least 1 when
    ``val_fraction > 0`` and n >= 2), chosen by a permutation seeded with ``seed`` over the
    sorted names (the same on every machine)."""
    names = sorted(episodes)
    n = len(names)
    if val_fraction <= 0 or n < 2:
        return list(episodes), []
    n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    perm = np.random.default_rng(seed).permutation(n)
    val = {names[i] for i in perm[:n_val]}
    return [e for e in episodes if e not in val], [e for e in episodes if e in val]


def compute_action_stats(sources_and_episodes: list[tuple[EpisodeSource, list[str]]], action_dim: int) -> dict[str, np.ndarray]:
    """min, max, mean, std (population) over every real action step of the given episodes."""
    n = 0
    s1 = np.zeros(action_dim, np.float64)
    s2 = np.zeros(action_dim, np.float64)
    lo = np.full(action_dim, np.inf)
    hi = np.full(action_dim, -np.inf)
    for src, eps in sources_and_episodes:
        if not src.has_actions:
            continue
        for ep in eps:
            a = src.load_actions(ep).astype(np.float64)
            n += a.shape[0]
            s1 += a.sum(0)
            s2 += (a * a).sum(0)
            lo = np.minimum(lo, a.min(0))
            hi = np.maximum(hi, a.max(0))
    if n == 0:
        log.warning("no action-labelled training episodes: action stats set to min -1, max 1, mean 0, std 1")
        return dict(min=-np.ones(action_dim, np.float32), max=np.ones(action_dim, np.float32),
                    mean=np.zeros(action_dim, np.float32), std=np.ones(action_dim, np.float32))
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    return dict(min=lo.astype(np.float32), max=hi.astype(np.float32), mean=mean.astype(np.float32),
                std=std.astype(np.float32))


def method_batch_keys(method, latent_cache: bool) -> set[str]:
    """The batch keys a method reads (``method.batch_keys(cached_latents=...)``, the contract's
    signature), plus obs/action/action_mask. Without the latent cache, latent keys are replaced
    by the image keys."""
    try:
        keys = set(method.batch_keys(cached_latents=latent_cache))
    except TypeError as e:
        if "cached_latents" not in str(e):
            raise
        raise TypeError(f"{type(method).__name__}.batch_keys() must accept cached_latents (the Method contract: "
                        f"def batch_keys(self, cached_latents=True)): {e}") from None
    keys |= {"obs", "action", "action_mask"}
    if not latent_cache:
        for lk, ik in LATENT_KEYS.items():
            if lk in keys:
                keys.discard(lk)
                keys.add(ik)
    return keys


def open_sources(data_cfg: DataConfig, spec: WindowSpec) -> list[tuple[SourceConfig, list[EpisodeSource]]]:
    """Expand globs and open (validate) every source file. HDF5 frame sizes must agree; video
    frames are resized to ``data.frame_size`` (default: the HDF5 frame size, else 128)."""
    if not data_cfg.sources:
        raise ConfigError("data.sources is empty: give at least one, e.g. data.sources=[{path:demos.hdf5}]")
    mem = int(data_cfg.episode_memory_mb) << 20
    expanded = [(sc, expand_paths(sc.path, sc.kind)) for sc in data_cfg.sources]
    frame_shape = (data_cfg.frame_size, data_cfg.frame_size) if data_cfg.frame_size else None
    if frame_shape is None:
        for sc, paths in expanded:
            if sc.kind != "video_folder":
                frame_shape = hdf5_frame_shape(paths[0], spec.views)
                if frame_shape:
                    break
    video_shape = frame_shape or (128, 128)
    index_dir = os.path.join(os.path.expanduser(data_cfg.cache_dir), "video_index")
    out = []
    ref: tuple[str, tuple[int, int]] | None = None
    for sc, paths in expanded:
        files: list[EpisodeSource] = []
        for p in paths:
            if sc.kind == "video_folder":
                src: EpisodeSource = VideoFolderSource(p, spec.views, video_shape, sc.demos, sc.max_episodes, mem, index_dir)
            else:
                src = Hdf5Source(p, spec.views, spec.action_dim, action_free=sc.kind == "hdf5_action_free",
                                 flip_vertical=data_cfg.flip_vertical, demos=sc.demos, max_episodes=sc.max_episodes,
                                 memory_bytes=mem)
                if data_cfg.frame_size and src.frame_shape != (data_cfg.frame_size, data_cfg.frame_size):
                    raise DataError(f"{p}: frames are {src.frame_shape[0]}x{src.frame_shape[1]} but data.frame_size="
                                    f"{data_cfg.frame_size} (HDF5 frames are not resized; drop data.frame_size)")
                if ref is None:
                    ref = (p, src.frame_shape)
                elif src.frame_shape != ref[1]:
                    raise DataError(f"{p}: frames are {src.frame_shape[0]}x{src.frame_shape[1]} but {ref[0]} has "
                                    f"{ref[1][0]}x{ref[1][1]}; every HDF5 source of a run must share one frame size")
            files.append(src)
        out.append((sc, files))
    return out


def build_datasets(data_cfg: DataConfig, method) -> DataBundle:
    """Train/val datasets for ``method`` (uses ``method.cfg`` views and window lengths,
    ``method.batch_keys()`` and, for latent keys with ``data.latent_cache``, the method's
    ``latent_encoder`` to build or reuse the latent cache)."""
    data_cfg = data_config_from(data_cfg)
    spec = WindowSpec.from_method(method)
    keys = method_batch_keys(method, data_cfg.latent_cache)
    opened = open_sources(data_cfg, spec)

    # split by episode, per file
    splits: list[tuple[SourceConfig, list[tuple[EpisodeSource, list[str], list[str]]]]] = []
    for sc, files in opened:
        per = []
        for src in files:
            tr, va = split_episodes(src.episodes, data_cfg.val_fraction, data_cfg.split_seed)
            per.append((src, tr, va))
        splits.append((sc, per))
    stats = compute_action_stats([(s, tr) for _, per in splits for s, tr, _ in per], spec.action_dim)

    # latent cache (one file per source file, covering all its selected episodes)
    readers: dict[int, Any] = {}
    cache_files: list[str] = []
    if any(k in keys for k in LATENT_KEYS):
        encoder = method.latent_encoder
        if encoder is None:
            raise ConfigError(f"method {getattr(method, 'name', '?')!r} asks for {sorted(k for k in keys if k in LATENT_KEYS)} "
                              "but has no latent_encoder; set data.latent_cache=false")
        for _, files in opened:
            for src in files:
                reader = ensure_latent_cache(src, encoder, data_cfg.cache_dir, batch_size=data_cfg.cache_batch_size,
                                             crops=data_cfg.latent_crops)
                readers[id(src)] = reader
                cache_files.append(reader.path)

    def make(which: int) -> MixtureDataset | None:  # 0: train (random cached crops), 1: val (centre)
        groups, weights, names = [], [], []
        for sc, per in splits:
            dsets = [WindowDataset(src, eps[which], spec, keys, readers.get(id(src))) for src, *eps in per]
            groups.append(dsets)
            weights.append(sc.weight)
            names.append(sc.path)
        if which == 1 and sum(len(d) for g in groups for d in g) == 0:
            return None
        return MixtureDataset(groups, weights, names, random_crops=which == 0)

    train = make(0)
    val = make(1) if data_cfg.val_fraction > 0 else None
    missing = [sc.path for sc, per in splits if sum(len(tr) for _, tr, _ in per) == 0]
    if missing:
        raise DataError(f"data source {missing[0]}: no training episodes")
    if not any(src.has_actions for _, files in opened for src in files):
        log.warning("no source has actions: every sample has action_mask=False")
    info = []
    for sc, per in splits:
        for src, tr, va in per:
            info.append({**src.describe(), "weight": sc.weight, "train_episodes": len(tr), "val_episodes": len(va)})
    env_meta = next((s.env_meta for _, files in opened for s in files if s.env_meta), None)
    hshape = next((s.frame_shape for _, files in opened for s in files), None)
    log.info("data: %s; val: %s", train, val)
    return DataBundle(train=train, val=val, action_stats=stats, keys=frozenset(keys), sources=info,
                      cache_files=cache_files, env_meta=env_meta, frame_shape=hshape)


# ----------------------------------------------------------------------------- sampling
class StepBatchSampler:
    """Deterministic, resumable batches: the indices of step ``k`` are a pure function of
    (seed, k, batch_size, group sizes and weights), so a run resumed at step ``k`` sees exactly
    the batches an uninterrupted run would.

    Each sample picks a source group with probability ``weights[g]`` (the mixture ratio), then
    a window uniformly inside the group (with replacement across steps). On a dataset with
    ``random_crops`` and ``num_crops > 1`` (the training split over a multi-crop latent cache)
    each sample also draws one cached crop uniformly (from the same per-step generator, after
    the window draws, so the windows are those of a single-crop run) and the sampler yields
    ``(index, crop)`` pairs; otherwise plain indices.

    Data-parallel training (``world`` processes, this one ``rank``): every process draws the
    global batch of ``world * batch_size`` samples from the same generator and keeps its slice
    ``[rank * batch_size, (rank + 1) * batch_size)``, so the union of the processes' batches at
    step ``k`` is exactly the batch a single process with ``world * batch_size`` would see."""

    def __init__(self, dataset, batch_size: int, seed: int = 0, start_step: int = 0, rank: int = 0, world: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank={rank} must be in [0, world={world})")
        if len(dataset) == 0:
            raise DataError("cannot sample from an empty dataset")
        sizes = getattr(dataset, "group_sizes", None) or [len(dataset)]
        weights = getattr(dataset, "weights", None) or [1.0]
        self.group_sizes = np.asarray(sizes, np.int64)
        self.group_offsets = np.concatenate([[0], np.cumsum(self.group_sizes)]).astype(np.int64)
        w = np.asarray(weights, np.float64)
        self.cum_weights = np.cumsum(w / w.sum())
        self.cum_weights[-1] = 1.0
        self.batch_size = int(batch_size)
        self.rank, self.world = int(rank), int(world)
        self.seed = int(seed)
        self.start_step = int(start_step)
        self.num_crops = int(getattr(dataset, "num_crops", 1)) if getattr(dataset, "random_crops", False) else 1

    def _draw(self, step: int) -> tuple[list[int], list[int] | None]:
        s = self.seed % 2**64
        rng = np.random.Generator(np.random.PCG64([s & 0xFFFFFFFF, s >> 32, int(step), 0x5EED]))
        n = self.batch_size * self.world  # the global batch; this process keeps its slice
        g = np.searchsorted(self.cum_weights, rng.random(n), side="right")
        g = np.minimum(g, len(self.group_sizes) - 1)
        u = rng.random(n)
        within = np.minimum((u * self.group_sizes[g]).astype(np.int64), self.group_sizes[g] - 1)
        crops = rng.integers(0, self.num_crops, n) if self.num_crops > 1 else None
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        return (self.group_offsets[g] + within)[lo:hi].tolist(), (crops[lo:hi].tolist() if crops is not None else None)

    def indices(self, step: int) -> list[int]:
        return self._draw(step)[0]

    def crops(self, step: int) -> list[int] | None:
        """The cached crop of each sample of step ``step`` (None: every sample reads crop 0)."""
        return self._draw(step)[1]

    def batch(self, step: int) -> list:
        idx, crops = self._draw(step)
        return idx if crops is None else list(zip(idx, crops))

    def __iter__(self) -> Iterator[list]:
        k = self.start_step
        while True:
            yield self.batch(k)
            k += 1


def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """List of window dicts -> batch dict (torch tensors; latents float32, masks bool, crop
    offsets int64)."""
    out = {}
    for k in samples[0]:
        arr = np.stack([s[k] for s in samples])
        if arr.dtype == np.float16 or (k.endswith("_latent") and arr.dtype != np.float32):
            arr = arr.astype(np.float32)
        out[k] = torch.from_numpy(arr)
    return out


def _worker_init(_):
    torch.set_num_threads(1)


def make_loader(dataset, batch_size: int, seed: int, start_step: int = 0, num_workers: int = 0,
                pin_memory: bool = False, rank: int = 0, world: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """Endless iterator of batches (step ``start_step``, ``start_step + 1``, ...), in the batch
    format of ``uwmbench/methods/base.py``. ``num_workers > 0`` uses a torch DataLoader (each worker
    opens its own HDF5 handles and keeps its own episode memory); order is the same either way.
    ``rank``/``world``: this process' slice of the global batch (:class:`StepBatchSampler`)."""
    sampler = StepBatchSampler(dataset, batch_size, seed, start_step, rank=rank, world=world)
    if num_workers <= 0:
        def gen():
            for idx in sampler:
                yield collate([dataset[i] for i in idx])
        return gen()
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
                                         pin_memory=pin_memory, persistent_workers=True, worker_init_fn=_worker_init,
                                         prefetch_factor=4)
    return iter(loader)


__all__ = [
    "SourceConfig", "DataConfig", "data_config_from", "DataBundle", "build_datasets", "StepBatchSampler",
    "make_loader", "collate", "WindowSpec", "WindowDataset", "MixtureDataset", "split_episodes",
    "compute_action_stats", "method_batch_keys", "open_sources", "DataError",
]
