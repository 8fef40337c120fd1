"""Precomputed VAE latent cache (the VAE is frozen: encoding the same frames every step is waste).

One file per (source file, key) under ``data.cache_dir``::

    <cache_dir>/<source name>-<key>.h5
        attrs:  key, format (2), crop_offsets (JSON [[oy, ox], ...]), meta (JSON: source, views,
                encoder, latent shape, ...), complete
        latents/<episode>/<view>   float16 (T, K, C, h, w)   every frame of every selected episode,
                                                             K crops (index 0: the centre crop)

``key`` = sha256 of (format, absolute path, file size, mtime, selected episodes, views, vertical
flip, frame shape, encoder fingerprint, crop offsets). Any change to the data file, the episode
selection, the views/orientation, the encoder (weights, scaling, resize/crop) or the crops gives
a new key and the cache is rebuilt; an unchanged key reuses the file without touching the
encoder. A file whose ``format``/``crop_offsets`` attributes do not match (a format-1 cache of
centre crops only, ``(T, C, h, w)``) is never read: ``ensure_latent_cache`` rebuilds it and
:class:`LatentCacheReader` refuses it with a message. Files are written to a temporary name and
renamed when complete (a crash never leaves a half cache under the final name); concurrent
builders of the same key wait on a lock file and reuse the winner's file.

Augmentation: the cache holds ``data.latent_crops`` = K crops of every frame, at the fixed
offsets :func:`methods.nets.crop_offsets` derives from the encoder's resize/crop size (centre
first; K=5: centre + 4 corners). In training the sampler draws one crop per sample (shared by
its views and frames) and the batch says which (``crop_offset``); UWM crops its condition
frames at that offset, so condition and diffused target are the same crop. Colour jitter cannot
be applied to cached latents: the target is un-jittered while the condition frames are jittered
(``method.color_jitter=0`` removes the difference). ``data.latent_cache=false`` is the exact
on-the-fly path (the method encodes the frames each step with the condition's crop and jitter).
See ``docs/data.md`` and ``docs/conventions.md``.

CLI: ``uwmbench cache-latents method=uwm data.sources=[{path:demos.hdf5}]`` builds the caches
ahead of time (the same ones ``uwmbench train`` with the same data/method config uses).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from tqdm import tqdm

from uwmbench.methods.nets import crop_offsets
from .data_sources import DataError, EpisodeMemory, EpisodeSource

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 1: centre crop only, (T, C, h, w); 2: K crops, (T, K, C, h, w) + crop_offsets


# ----------------------------------------------------------------------------- keys
def encoder_crop_offsets(encoder, crops: int) -> list[tuple[int, int]]:
    """The crop offsets a cache of ``crops`` crops holds for ``encoder`` (its resize/crop size)."""
    pre = getattr(encoder, "pre", None)
    if pre is None:
        if crops != 1:
            raise ValueError("latent cache: the encoder exposes no preprocessor (resize/crop): only latent_crops=1")
        return [(0, 0)]
    return crop_offsets(int(pre.resize), int(pre.image_size), int(crops))


def cache_key(source: EpisodeSource, encoder_fingerprint: str, offsets: list[tuple[int, int]] | None = None) -> str:
    ident = dict(format=CACHE_FORMAT, source=source.identity(), episodes=list(source.episodes),
                 views=list(source.views), frame_shape=list(source.frame_shape), encoder=encoder_fingerprint,
                 crops=[list(o) for o in (offsets or [])])
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def cache_path(cache_dir: str, source: EpisodeSource, key: str) -> str:
    stem = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in Path(source.path).name)[:80]
    return os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), f"{stem}-{key}.h5")


# ----------------------------------------------------------------------------- reading
class LatentCacheReader:
    """Lazy, per-process reader of one cache file (handles never pickled)."""

    def __init__(self, path: str, key: str, episodes: list[str], views: tuple[str, ...], memory_bytes: int = 1 << 30,
                 offsets: list[tuple[int, int]] | None = None):
        self.path = path
        self.key = key
        self.episodes = list(episodes)
        self.views = tuple(views)
        self.offsets = [tuple(o) for o in offsets] if offsets is not None else None  # None: read from the file
        self._memory_bytes = int(memory_bytes)
        self._memory = EpisodeMemory(self._memory_bytes)
        self._h5 = None
        self._pid = os.getpid()

    def __getstate__(self):
        d = self.__dict__.copy()
        d["_h5"] = None
        d["_memory"] = None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._memory = EpisodeMemory(self._memory_bytes)
        self._pid = os.getpid()

    def _file(self):
        if self._pid != os.getpid():  # forked: drop the parent's handle, keep its arrays
            self._h5, self._pid = None, os.getpid()
        if self._h5 is None:
            try:
                f = h5py.File(self.path, "r")
            except OSError as e:
                raise DataError(f"{self.path}: cannot open the latent cache ({e}); delete it to rebuild") from None
            try:
                offsets = _file_offsets(f)
            except DataError:
                f.close()
                raise
            if self.offsets is not None and offsets != self.offsets:
                f.close()
                raise DataError(f"{self.path}: the latent cache holds crops {offsets}, expected {self.offsets}; "
                                "delete it to rebuild")
            self.offsets = offsets
            self._h5 = f
        return self._h5

    def read(self, ep: str, view: str, start: int, stop: int, crop: int = 0) -> np.ndarray:
        """Latents (stop - start, C, h, w) of frames ``start:stop`` at cached crop ``crop``."""
        f = self._file()
        k = f"latents/{ep}/{view}"
        arr = self._memory.get(k)
        if arr is None:
            try:
                ds = f[k]
                if self._memory.room_for(ds.size * ds.dtype.itemsize):
                    arr = ds[()]
                    self._memory.put(k, arr)
                else:
                    return ds[start:stop, crop]
            except KeyError:
                raise DataError(f"{self.path}: missing key {k!r} in the latent cache; delete the file to rebuild") from None
        return arr[start:stop, crop]

    def latent_shape(self) -> tuple[int, ...]:
        """(C, h, w) of one cached latent."""
        f = self._file()
        return tuple(f[f"latents/{self.episodes[0]}/{self.views[0]}"].shape[2:])

    def close(self):
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


def _file_offsets(f) -> list[tuple[int, int]]:
    """The crop offsets an open cache file holds; DataError for another format (never misread)."""
    fmt = f.attrs.get("format")
    fmt = int(fmt) if fmt is not None else 1
    if fmt != CACHE_FORMAT or "crop_offsets" not in f.attrs:
        raise DataError(f"{f.filename}: latent cache format {fmt}, this uwmbench reads format {CACHE_FORMAT} "
                        "(K crops per frame, data.latent_crops); delete the file: it is rebuilt on the next run")
    return [tuple(int(v) for v in o) for o in json.loads(f.attrs["crop_offsets"])]


def _valid_cache(path: str, key: str, episodes: list[str], views: tuple[str, ...],
                 offsets: list[tuple[int, int]] | None = None) -> bool:
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("key") != key or not bool(f.attrs.get("complete", False)):
                return False
            if offsets is not None and _file_offsets(f) != [tuple(o) for o in offsets]:
                return False
            g = f["latents"]
            k = len(offsets) if offsets is not None else None
            for ep in episodes:
                if ep not in g:
                    return False
                for v in views:
                    if v not in g[ep] or g[ep][v].ndim != 5 or (k is not None and g[ep][v].shape[1] != k):
                        return False
            return True
    except Exception:
        return False


# ----------------------------------------------------------------------------- building
def _encoder_device(encoder) -> torch.device:
    try:
        return next(encoder.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@contextlib.contextmanager
def _lock(path: str):
    """Exclusive advisory lock (fcntl) so concurrent runs build a cache once; no-op where
    locking is unsupported."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    fd = os.open(path + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        os.close(fd)


def ensure_latent_cache(source: EpisodeSource, encoder, cache_dir: str, batch_size: int = 64,
                        progress: bool = True, crops: int = 1) -> LatentCacheReader:
    """Reader of the cache of ``source`` for ``encoder`` with ``crops`` crops per frame
    (:func:`encoder_crop_offsets`); builds it if missing, stale or of another format."""
    offsets = encoder_crop_offsets(encoder, crops)
    key = cache_key(source, encoder.fingerprint(), offsets)
    path = cache_path(cache_dir, source, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not _valid_cache(path, key, source.episodes, source.views, offsets):
        with _lock(path):
            if not _valid_cache(path, key, source.episodes, source.views, offsets):
                build_latent_cache(source, encoder, path, key, batch_size, progress, offsets)
            else:
                log.info("latent cache %s was built by another process", path)
    else:
        log.info("latent cache: reusing %s", path)
    return LatentCacheReader(path, key, source.episodes, source.views, memory_bytes=source._memory_bytes,
                             offsets=offsets)


@torch.no_grad()
def build_latent_cache(source: EpisodeSource, encoder, path: str, key: str, batch_size: int = 64,
                       progress: bool = True, offsets: list[tuple[int, int]] | None = None) -> str:
    """Encode every frame of every selected episode (all views) at every crop of ``offsets``
    (default: the centre crop only) and write ``path`` atomically."""
    if offsets is None:
        offsets = encoder_crop_offsets(encoder, 1)
    offsets = [tuple(int(v) for v in o) for o in offsets]
    centre = encoder_crop_offsets(encoder, 1)[0]

    home = _encoder_device(encoder)
    dev = home
    if home.type == "cpu" and torch.cuda.is_available() and hasattr(encoder, "to"):
        # the trainer builds datasets before moving the method to the GPU: encode there anyway
        dev = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        encoder.to(dev)
    was_training = getattr(encoder, "training", False)
    if hasattr(encoder, "eval"):
        encoder.eval()
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    total = source.num_frames() * len(source.views) * len(offsets)
    t0 = time.time()
    latent_shape = None
    try:
        with h5py.File(tmp, "w") as f:
            g = f.create_group("latents")
            bar = tqdm(total=total, desc=f"latent cache {source.name}", unit="frame", disable=not progress,
                       dynamic_ncols=True)
            for ep in source.episodes:
                frames = torch.from_numpy(source.load_episode_frames(ep))  # (T, V, 3, H, W) uint8
                t, v = frames.shape[:2]
                flat = frames.reshape(t * v, *frames.shape[2:])
                per_crop = []
                for off in offsets:
                    outs = []
                    for i in range(0, flat.shape[0], batch_size):
                        x = flat[i:i + batch_size].to(dev)
                        # the centre crop is exactly LatentEncoder.encode(x), what inference encodes
                        z = encoder.encode(x) if off == centre else encoder.encode(x, offsets=torch.tensor(off))
                        outs.append(z.float().cpu())
                        bar.update(min(batch_size, flat.shape[0] - i))
                    per_crop.append(torch.cat(outs).reshape(t, v, *outs[0].shape[1:]))
                z = torch.stack(per_crop, 2).numpy()  # (T, V, K, C, h, w)
                if not np.all(np.isfinite(z)):
                    raise RuntimeError(f"latent cache: the encoder returned non-finite latents for {source.path}:{ep}")
                latent_shape = z.shape[3:]
                eg = g.create_group(ep)
                for vi, view in enumerate(source.views):
                    eg.create_dataset(view, data=z[:, vi].astype(np.float16))
            bar.close()
            meta = dict(source=source.identity(), episodes=len(source.episodes), frames=source.num_frames(),
                        views=list(source.views), frame_shape=list(source.frame_shape),
                        encoder=encoder.fingerprint(), encoder_source=str(getattr(encoder, "source", "?")),
                        latent_shape=list(latent_shape or ()), crop_offsets=[list(o) for o in offsets],
                        built=time.strftime("%Y-%m-%d %H:%M:%S"), seconds=round(time.time() - t0, 2))
            f.attrs["key"] = key
            f.attrs["format"] = CACHE_FORMAT
            f.attrs["crop_offsets"] = json.dumps([list(o) for o in offsets])
            f.attrs["meta"] = json.dumps(meta)
            f.attrs["complete"] = True
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    finally:
        source._memory.clear()  # frames decoded for encoding are not kept in this process
        if was_training and hasattr(encoder, "train"):
            encoder.train(True)
        if dev != home:
            encoder.to(home)
    log.info("latent cache: wrote %s (%d frames x %d views x %d crops, %.1f s)", path, source.num_frames(),
             len(source.views), len(offsets), time.time() - t0)
    return path


def cache_info(path: str) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        meta = json.loads(f.attrs.get("meta", "{}"))
    meta["path"] = path
    meta["size_mb"] = round(os.path.getsize(path) / 2**20, 2)
    return meta
